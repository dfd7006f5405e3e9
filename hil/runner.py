"""Fly a scenario: compile the tick (or a loop of ticks), fly it, evaluate the expectations."""

import dataclasses
import platform
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

import hil
from hil import flightlog, schema, targets, wire
from hil import scenario as scenario_module
from hil.bridges import compiled_exchange as exchange_module
from hil.bridges.link import Link, LinkError
from hil.expectations import Judge, Outcome
from hil.faults import LinkFaultPlan
from hil.scenario import QUANTITIES, SENSOR_FIELDS, Scenario
from hil.record import TickRecord
from hil.session import LinkStats, Session, SessionError
from hil.sim import CompiledBatch, Simulation
from hil.targets import RunRefused, Target
from hil.trace import Reader, Trace

SENSORS_FRAME_OVERHEAD = 16  # bytes: array header, type, seq, tick, fresh, values header, CRC, COBS, delimiter
FLOAT32_BYTES = 5
EXCHANGE_BATCH = 256  # lockstep ticks per call of the exchange loop: progress and records come between calls
IN_PROCESS_BATCH = 256  # ticks per call of an in-process run

_compilations = 0


def _count_compilation(event: str, *args, **kwargs):
    global _compilations
    if "compile" in event or "compilation_cache" in event:
        _compilations += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilation)
jax.monitoring.register_event_listener(_count_compilation)


def compilations() -> int:
    """How many compilation events (XLA compiles and cache loads) this process has seen."""
    return _compilations


class RunTrace(Trace):
    """A run's trace, read by field name: ``trace["position"]`` is a column of the layout (a row per
    tick held, as :meth:`Trace.column`), ``trace["altitude"]`` a quantity the scenario's
    expectations use (:data:`hil.scenario.QUANTITIES`)."""

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.layout:
            return self.column(name)
        if name in QUANTITIES:
            return self.quantity(name)
        raise KeyError(f"{name!r} is neither a column of the trace ({', '.join(self.layout)}) nor a quantity "
                       f"({', '.join(QUANTITIES)})")


@dataclass
class RunResult:
    scenario: Scenario
    trace: RunTrace
    outcomes: list[Outcome]
    compile_seconds: float
    wall_seconds: float  # the tick loop alone
    compilations_during_run: int  # after tick 0; always 0 unless something is broken
    final_state: object  # hil.sim.SimState after the last tick flown; None if the run broke off before tick 0
    runtime: str = "in-process"  # what flew: in-process, c, python, or the board's link
    link_stats: LinkStats | None = None
    failure: str | None = None  # why the run ended early (firmware died, aborted, no HELLO)
    startup_seconds: float = 0.0  # from the compiled tick to tick 0: starting the firmware and HELLO (or set-up)
    not_reproducible: str | None = None  # why the flight does not follow from the scenario and seed alone
    firmware_output: str = ""  # the last lines a firmware hil started printed
    interrupted: str | None = None  # the signal that ended the run early (SIGINT, SIGTERM)
    target: str = ""  # the URL of what flew (hil.targets)
    log_path: Path | None = None  # the flight log, when the run recorded one
    # For each outcome, the tick at which its expectation first failed (a reach: its closest
    # approach); None when it held or no tick tells (the run ended before its window).
    failed_ticks: tuple[int | None, ...] = ()

    @property
    def passed(self) -> bool:
        return self.failure is None and all(o.passed for o in self.outcomes)

    def failures(self) -> list[tuple[Outcome, int | None]]:
        """The expectations that failed, each with the tick it first failed at."""
        return [(o, tick) for o, tick in zip(self.outcomes, self.failed_ticks) if not o.passed]

    def __repr__(self) -> str:  # short: pytest prints it under a failed ``assert result.passed``
        held = sum(o.passed for o in self.outcomes)
        return (f"RunResult({self.scenario.name} on {self.target or self.runtime}: "
                f"{'passed' if self.passed else 'FAILED'}, {held}/{len(self.outcomes)} expectations held, "
                f"{self.trace.ticks_done} ticks" + (f", failure {self.failure!r}" if self.failure else "")
                + (f", log {str(self.log_path)!r}" if self.log_path is not None else "") + ")")

    @property
    def real_time_factor(self) -> float:
        return (self.trace.ticks_done - 1) / self.scenario.physics.rate_hz / max(self.wall_seconds, 1e-9)


Progress = Callable[[int, int, float], None]  # (tick, last tick, seconds since tick 0)
FIRMWARE_LINES = 20  # lines of a started firmware's output a run reports
FIRMWARE_LINES_VERBOSE = 2000  # with -v: enough to follow a start-up, bounded whatever the firmware prints


class Interrupted(KeyboardInterrupt):
    """hil was asked to stop by a signal: the run ends early, its firmware stopped and its log
    closed with a footer that says so. ``exit_code`` is the shell's 128 + the signal's number."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_name = signal.Signals(signal_number).name
        self.exit_code = 128 + signal_number


def _interruption(error: KeyboardInterrupt) -> str:
    return getattr(error, "signal_name", "SIGINT")


class Ending:
    """Whether a run is ending (saying GOODBYE, stopping its firmware, writing its log's footer),
    and the interruption that came meanwhile. hil.cli's signal handler notes an interruption here
    instead of raising it: however long the firmware takes to stop, it is stopped and the log
    closes whole, with a footer that says the run was interrupted; :func:`run` raises it then."""

    def __init__(self):
        self.active = False
        self.interruption: Interrupted | None = None

    def begin(self) -> None:
        self.active, self.interruption = True, None

    def note(self, interruption: Interrupted) -> bool:
        """Keep ``interruption`` for the run to raise if the run is ending; False if it is not."""
        if self.active and self.interruption is None:
            self.interruption = interruption
        return self.active

    def end(self) -> Interrupted | None:
        """The run has ended: the interruption noted since it began ending, if any."""
        self.active = False
        return self.interruption


ENDING = Ending()


@dataclass(frozen=True)
class Board:
    """A flight controller hil does not start: one on a serial port or on the network. The form
    ``run(board=...)`` took before targets: :meth:`target` is the target it names."""

    udp: str | None = None  # HOST:PORT of the board
    port: str | None = None  # serial device or pyserial URL
    baud: int = 921600
    bind: str = "127.0.0.1:0"  # local UDP address; loopback unless told otherwise

    def target(self) -> Target:
        """``udp://UDP?bind=BIND`` or ``serial://PORT?baud=BAUD``, as ``--udp``/``--port`` name them."""
        return targets.from_options(port=self.port, baud=self.baud, udp=self.udp, bind=self.bind)


def with_overrides(scenario: Scenario, seed: int | None = None, duration: float | None = None) -> Scenario:
    """The scenario with ``seed`` and ``duration`` replaced, re-validated as if written in the file."""
    given = {k: v for k, v in (("seed", seed), ("duration", duration)) if v is not None}
    if not given:
        return scenario
    check = scenario_module.Check()
    parsed = {name: schema.parse_field(Scenario, name, value, check, (name,)) for name, value in given.items()}
    changed = None if check.problems else replace(scenario, **parsed)
    if changed is not None:
        changed.__check__(check, ())
    if check.problems:
        options = {(name,): f"--{name}" for name in given}
        raise scenario_module.ScenarioError([scenario_module.Located(
            "(command line)", 0, options.get(p.path) or schema.format_path(p.path), p.message) for p in check.problems])
    return changed


# ---- the drivers: which loop flies which mode ----------------------------------------------------

def _fly(program: CompiledBatch, record: TickRecord, progress, interval) -> float:
    """The in-process loop: the firmware answers inside the compiled tick, up to a batch of ticks
    per call. Returns the loop's wall-clock seconds."""
    total = record.trace.last + 1
    started = time.perf_counter()
    state = program.initial
    next_report = started + interval
    k = 0
    while k < total:
        n = record.room(k, min(program.batch, total - k))
        state, flown = program.advance_many(state, np.int32(n))
        record.batch(k, np.asarray(flown)[:n], state)  # an interrupted run is judged and recorded up to here
        k += n
        if progress is not None and (now := time.perf_counter()) >= next_report:
            progress(k - 1, total - 1, now - started)
            next_report = now + interval
    wall = time.perf_counter() - started
    if progress is not None:
        progress(total - 1, total - 1, wall)
    return wall


@dataclass(frozen=True)
class Driver:
    """One way of flying a run: what it compiles and the loop that flies the compiled program into
    the run's record (:class:`hil.record.TickRecord`). The target opens the link a driver flies over."""

    compile: Callable[[Simulation], object]
    # In-process (program, record, progress, interval); over a link (session, program, record,
    # progress, interval), between HELLO and GOODBYE.
    loop: Callable
    words: str = ""  # the mode in the link's statistics; empty: the firmware flies in the tick, no link


DRIVERS = {
    "in-process": Driver(lambda simulation: simulation.compile_batch(IN_PROCESS_BATCH), _fly),
    "lockstep": Driver(Simulation.compile, Session.fly_lockstep, "lockstep"),
    "lockstep exchange": Driver(lambda simulation: simulation.compile_exchange_loop(EXCHANGE_BATCH),
                                Session.fly_lockstep, "lockstep"),
    "real time": Driver(Simulation.compile, Session.fly_realtime, "real time"),
    # Replay (hil.replay.replay) flies simulation.compile_batch(REPLAY_BATCH) with a log's commands.
}


@dataclass(frozen=True)
class Flight:
    """How a run flies, resolved from its arguments before anything is compiled."""

    target: Target  # what flies (hil.targets), as it flies this scenario
    mode: str  # its driver, a key of DRIVERS
    faults: LinkFaultPlan  # the scenario's link faults, injected between hil and the firmware
    no_loop_because: str | None = None  # lockstep: why the compiled exchange was wanted and does not fly

    @property
    def runtime(self) -> str:
        """What flies, as a run's result and log name it: in-process, c, python, sitl, board (one hil
        does not start), custom (your own firmware command)."""
        return self.target.runtime

    @property
    def driver(self) -> Driver:
        return DRIVERS[self.mode]

    @property
    def link_mode(self) -> str:
        """The mode in the link's statistics."""
        if self.no_loop_because is None:
            return self.driver.words
        return f"{self.driver.words}, one tick per call (no compiled exchange: {self.no_loop_because})"


@dataclass(frozen=True)
class _Flown:
    """How a run's loop ended."""

    wall_seconds: float  # the loop alone
    failure: str | None = None  # why it ended early
    interrupted: KeyboardInterrupt | None = None  # the interruption that ended it
    startup_seconds: float = 0.0  # from the compiled program to tick 0: starting the firmware and HELLO
    firmware_output: str = ""  # the last lines a firmware hil started printed


# ---- a run: resolve, build, open the link, handshake, drive, evaluate ----------------------------

def run(scenario: Scenario, target: Target | str | None = None, *, realtime: bool | None = None,
        progress: Progress | None = None, progress_interval: float = 0.25, warn: Callable[[str], None] = print,
        log_path: Path | None = None, compiled_exchange: bool = True, firmware_lines: int = FIRMWARE_LINES,
        readers: Sequence[Reader] = (), runtime: str | None = None, board: Board | None = None,
        firmware_command: str | None = None) -> RunResult:
    """Fly ``scenario`` and evaluate its expectations.

    ``target`` is what flies (:mod:`hil.targets`): a :class:`hil.targets.Target` or its URL
    (``"c://quad_pid"``, ``"serial:///dev/ttyACM0?baud=921600"``, ...); by default the scenario's
    own firmware, as its ``firmware.runs`` says. The arguments that named it before targets stay,
    as aliases of the same targets: ``runtime`` (``c``, ``python``, ``in-process``), ``board``
    (a :class:`Board`) and ``firmware_command`` (your own firmware: a command line in which
    ``{udp}`` stands for the HOST:PORT it must bind). ``realtime`` paces the run on the wall clock
    (True) or waits for each reply (False); by default the target's pacing: lockstep for a
    firmware hil starts, real time for a board and Betaflight's SITL. ``log_path``: where to
    record the flight log. ``compiled_exchange``: in lockstep, exchange frames inside the compiled tick loop where the
    system compilers can build it (:mod:`hil.bridges.compiled_exchange`); False calls the tick
    once per tick and exchanges in Python (the results are the same, only slower).
    ``firmware_lines``: how many of a started firmware's last lines of output the result keeps
    (:meth:`hil.firmware_process.FirmwareProcess.last_output`). A KeyboardInterrupt (or
    :class:`Interrupted`) stops the firmware, closes the log with a footer that says the run was
    interrupted, and goes on up; so does one noted while the run ends (:data:`ENDING`). ``readers`` are given
    the run's rows as they are finished, in tick order (:attr:`hil.trace.Trace.readers`): the
    trace itself keeps only a window of a long run. :class:`RunRefused` (nothing started) when
    the target cannot fly the scenario, or a URL names no target.
    """
    started = time.perf_counter()
    target = _target(scenario, target, runtime, board, firmware_command)
    flight = _resolve(scenario, target, realtime, compiled_exchange)
    simulation = Simulation(scenario, in_process_firmware=not target.LINK)
    program = flight.driver.compile(simulation)
    compile_seconds = time.perf_counter() - started
    record, judge = _record(scenario, simulation, target, log_path, readers)
    before = compilations()
    try:
        if not target.LINK:
            flown = _fly_in_process(flight, program, record, progress, progress_interval)
        else:
            flown = _fly_over_link(scenario, simulation, program, record, flight, progress, progress_interval, warn,
                                   firmware_lines)
        interrupted = flown.interrupted or ENDING.interruption
        result = _evaluate(scenario, flight, program, record, judge, flown, interrupted, compile_seconds,
                           compilations() - before, log_path)
        if record.recorder is not None:
            record.recorder.close(_footer(result))
    finally:
        late = ENDING.end()  # came after the footer was written: the run is whole, and hil still stops
    if interrupted is not None or late is not None:
        raise interrupted or late
    return result


def _target(scenario: Scenario, target: Target | str | None, runtime: str | None, board: Board | None,
            firmware_command: str | None) -> Target:
    """What flies ``scenario``: ``target`` (parsed if a URL), or the one its aliases name, or the
    scenario's own firmware; as it flies this scenario (:meth:`hil.targets.Target.for_scenario`)."""
    aliased = board.target() if board is not None else None
    if aliased is None:
        aliased = targets.from_options(runtime=runtime, firmware_command=firmware_command)
    elif runtime or firmware_command:
        raise RunRefused("a board is flown as it is: give board= or runtime= / firmware_command=, not both")
    if target is not None and aliased is not None:
        raise RunRefused("give a target or the arguments it replaces (runtime=, board=, firmware_command=), not both")
    if isinstance(target, str):
        target = targets.parse(target)
    return (target or aliased or targets.default(scenario)).for_scenario(scenario)


def _resolve(scenario: Scenario, target: Target, realtime: bool | None, compiled_exchange: bool) -> Flight:
    """Which driver flies ``target``: in-process without a link, else as the target paces it (real
    time or lockstep); lockstep flies the compiled exchange where it is built and no link faults
    are injected."""
    faults = LinkFaultPlan(scenario)
    if not target.LINK:
        return Flight(target, "in-process", faults)
    if target.realtime_for(realtime):
        return Flight(target, "real time", faults)
    if faults or not compiled_exchange:
        return Flight(target, "lockstep", faults)
    why_not = exchange_module.unavailable()
    if why_not is None:
        return Flight(target, "lockstep exchange", faults)
    return Flight(target, "lockstep", faults, why_not.splitlines()[0])


def _record(scenario: Scenario, simulation: Simulation, target: Target, log_path: Path | None,
            readers: Sequence[Reader]) -> tuple[TickRecord, Judge]:
    """The run's record (its trace, and its log if ``log_path`` is given), and the judge of its
    expectations, which reads the trace's rows as they are finished, as ``readers`` do."""
    trace = RunTrace.for_run(scenario.ticks + 1, simulation.layout, simulation.rate)
    judge = Judge(scenario, trace)
    trace.readers += readers
    recorder = None if log_path is None else flightlog.Recorder(log_path, _header(scenario, simulation, target),
                                                                  trace)
    return TickRecord(trace, recorder), judge


def _fly_in_process(flight: Flight, program: CompiledBatch, record: TickRecord, progress, interval) -> _Flown:
    """Fly with the firmware inside the tick, and then the run is ending (:data:`ENDING`); the
    in-process firmware cannot fail the run, an interruption can end it early."""
    started = time.perf_counter()
    try:
        return _Flown(flight.driver.loop(program, record, progress, interval))
    except KeyboardInterrupt as error:
        return _Flown(time.perf_counter() - started, interrupted=error)
    finally:
        ENDING.begin()


def _fly_over_link(scenario: Scenario, simulation: Simulation, program, record: TickRecord, flight: Flight,
                   progress, interval, warn, firmware_lines: int) -> _Flown:
    """Open the link (the target starts its firmware, or reaches the board), say HELLO, fly, and
    end the run: GOODBYE, the firmware stopped and its last output read, the link closed; all
    that after the flight runs while the run is ending (:data:`ENDING`)."""
    peer = targets.Peer()
    failure = interrupted = goodbye = None
    firmware_output = ""
    setup_started = loop_started = time.perf_counter()
    try:
        flight.target.open(peer, scenario, simulation, flight.faults, record.recorder)
        for line in line_budget_warnings(simulation, peer.link):
            warn(line)
        peer.session.handshake()
        loop_started = time.perf_counter()
        record.stats = peer.session.new_stats(flight.link_mode)
        flight.driver.loop(peer.session, program, record, progress, interval)
        goodbye = (wire.GOODBYE_NORMAL, "run complete")
    except (SessionError, LinkError, RuntimeError) as error:
        failure = str(error)
        goodbye = (error.goodbye_code if isinstance(error, SessionError) else wire.GOODBYE_ERROR, failure)
    except KeyboardInterrupt as error:
        interrupted = error
        goodbye = (wire.GOODBYE_ERROR, f"hil interrupted by {_interruption(error)}")
    finally:
        ENDING.begin()
        wall = time.perf_counter() - loop_started
        if peer.session is not None and goodbye is not None:
            peer.session.goodbye(max(record.ticks_done - 1, 0), *goodbye)
        if peer.firmware is not None:
            peer.firmware.stop()
            firmware_output = peer.firmware.last_output(firmware_lines)
            peer.firmware.close()
        if peer.link is not None:
            peer.link.close()
    return _Flown(wall, failure, interrupted, loop_started - setup_started, firmware_output)


def _evaluate(scenario: Scenario, flight: Flight, program, record: TickRecord, judge: Judge, flown: _Flown,
              interrupted: KeyboardInterrupt | None, compile_seconds: float, compilations_during_run: int,
              log_path: Path | None) -> RunResult:
    """The run's result: its expectations judged on the ticks done, and how it ended."""
    failure, final = flown.failure, record.state
    if interrupted is not None:
        failure = f"interrupted by {_interruption(interrupted)}"
        final = None  # an interrupted call may have taken the flight's state with it (its buffers are donated)
    outcomes = judge.outcomes() if record.ticks_done else []
    result = RunResult(scenario, record.trace, outcomes, compile_seconds,
                       flown.wall_seconds, compilations_during_run, None if final is None else program.unravel(final),
                       flight.runtime, record.stats, failure, flown.startup_seconds,
                       firmware_output=flown.firmware_output,
                       interrupted=None if interrupted is None else _interruption(interrupted),
                       target=flight.target.url, log_path=log_path,
                       failed_ticks=_failed_ticks(judge, outcomes, record.trace.rate_hz))
    if result.link_stats is not None:
        result.not_reproducible = result.link_stats.not_reproducible
    return result


def _failed_ticks(judge: Judge, outcomes: list[Outcome], rate_hz: float) -> tuple[int | None, ...]:
    """For each outcome, the tick its expectation first failed at, from its monitor: the first tick
    out of bounds, or a reach's closest approach (their times are tick / rate exactly)."""
    ticks = []
    for monitor, outcome in zip(judge.monitors, outcomes):
        when = None
        if not outcome.passed and monitor.first_bad is not None:
            when = monitor.first_bad[0]
        elif not outcome.passed and monitor.closest is not None:
            when = monitor.closest[1]
        ticks.append(None if when is None else round(when * rate_hz))
    return tuple(ticks)


def _header(scenario: Scenario, simulation: Simulation, target: Target) -> dict:
    import jaxlib

    return {
        "format": 1, "hil": hil.__version__, "scenario": scenario.name, "scenario_text": scenario.source,
        "seed": scenario.seed, "duration": scenario.duration, "rate_hz": simulation.rate, "runtime": target.runtime,
        "target": target.url,
        "layout": {name: list(span) for name, span in simulation.layout.items()},
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "platform": platform.platform(),
                     "device": str(jax.devices()[0])},
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _footer(result: RunResult) -> dict:
    return {
        "passed": result.passed, "failure": result.failure, "ticks": result.trace.ticks_done,
        "wall_seconds": result.wall_seconds, "runtime": result.runtime,
        "outcomes": [dataclasses.asdict(o) for o in result.outcomes],
        "link": result.link_stats.summary() if result.link_stats is not None else [],
        "reproducible": result.not_reproducible is None, "not_reproducible": result.not_reproducible,
        "interrupted": result.interrupted, "firmware_output": result.firmware_output[-4096:],
    }


def line_budget_warnings(simulation: Simulation, link: Link) -> list[str]:
    """Warnings, before tick 0, when the sensor traffic cannot fit the line's capacity."""
    capacity = link.capacity_bytes_per_second()
    if capacity is None:
        return []
    # Per tick: a SENSORS frame with its header, CRC, COBS overhead and delimiter, plus 5 bytes a
    # float for each sensor due; the ACTUATORS reply goes the other way on a full-duplex line.
    per_second = simulation.rate * SENSORS_FRAME_OVERHEAD + sum(
        simulation.rate / s.decimation * SENSOR_FIELDS[s.name] * FLOAT32_BYTES for s in simulation.sensors)
    if per_second <= capacity:
        return []
    return [f"warning: the sensors need about {per_second:.0f} B/s but {link.describe()} carries {capacity:.0f} B/s; "
            f"in lockstep the run slows down, in real time replies will be late. Raise the baud rate or lower "
            f"physics.rate_hz or the sensor rates."]
