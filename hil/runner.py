"""Fly a scenario: compile the tick (or a loop of ticks), fly it, evaluate the expectations."""

import dataclasses
import platform
import shlex
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

import hil
from hil import firmware_process, flightlog, schema, wire
from hil import scenario as scenario_module
from hil.bridges import compiled_exchange as exchange_module
from hil.bridges.impairment import ImpairedLink
from hil.bridges.link import Link, LinkError
from hil.bridges.serial_port import SerialLink
from hil.bridges.udp import UdpLink
from hil.expectations import Judge, Outcome
from hil.faults import LinkFaultPlan
from hil.scenario import Scenario
from hil.record import TickRecord
from hil.session import LinkStats, Session, SessionError
from hil.sim import READING_SIZE, CompiledBatch, Simulation
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


@dataclass
class RunResult:
    scenario: Scenario
    trace: Trace
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

    @property
    def passed(self) -> bool:
        return self.failure is None and all(o.passed for o in self.outcomes)

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
    """A flight controller hil does not start: one on a serial port or on the network."""

    udp: str | None = None  # HOST:PORT of the board
    port: str | None = None  # serial device or pyserial URL
    baud: int = 921600
    bind: str = "127.0.0.1:0"  # local UDP address; loopback unless told otherwise

    def open(self) -> Link:
        if self.udp:
            return UdpLink(self.udp, self.bind)
        return SerialLink(self.port, self.baud)


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


@dataclass
class _Peer:
    """The far end of a run's link, filled in as it is opened, so that whatever was opened is closed."""

    firmware: object = None  # the FirmwareProcess or Betaflight SITL hil started, stopped at the end
    link: Link | None = None
    session: Session | None = None


def _open_firmware(peer: _Peer, scenario: Scenario, simulation: Simulation, flight: "Flight",
                   board: Board | None, firmware_command: str | None, recorder) -> None:
    """The board's link, or a firmware started on a free UDP port (the emulated firmware of the
    flight's runtime, or the user's ``firmware_command``) and its link, with the scenario's link
    faults injected, and the session on it."""
    runtime = flight.runtime
    if board:
        peer.link = board.open()
    else:
        address = f"127.0.0.1:{firmware_process.free_udp_port()}"
        if firmware_command:
            argv = shlex.split(firmware_command.replace("{udp}", address))
            name = repr(shlex.join(argv))
        else:
            argv = firmware_process.command(scenario, runtime, address)
            name = f"{scenario.firmware.name} ({runtime})"
        peer.firmware = firmware_process.FirmwareProcess(argv, name)
        peer.link = UdpLink(address)
    if flight.faults:
        peer.link = ImpairedLink(peer.link, flight.faults)
    peer.session = Session(simulation, peer.link, scenario.link, peer.firmware, recorder)


def _open_betaflight(peer: _Peer, scenario: Scenario, simulation: Simulation, flight: "Flight", board,
                     firmware_command, recorder) -> None:
    """Betaflight's SITL started and configured, its link, and the session that flies it with the
    pilot (a scenario flown by Betaflight injects no link faults)."""
    from hil.bridges import betaflight

    settings = scenario.firmware.betaflight
    peer.firmware = betaflight.BetaflightSitl(settings)
    peer.link = betaflight.BetaflightLink(settings.motor_order)
    peer.session = betaflight.BetaflightSession(simulation, peer.link, peer.firmware, recorder)


@dataclass(frozen=True)
class Driver:
    """One way of flying a run: what it compiles, how it reaches the firmware, and the loop that
    flies the compiled program into the run's record (:class:`hil.record.TickRecord`)."""

    compile: Callable[[Simulation], object]
    # In-process (program, record, progress, interval); over a link (session, program, record,
    # progress, interval), between HELLO and GOODBYE.
    loop: Callable
    opens: Callable | None = None  # fills a _Peer: its link and session; None: the firmware flies in the tick
    words: str = ""  # the mode in the link's statistics


DRIVERS = {
    "in-process": Driver(lambda simulation: simulation.compile_batch(IN_PROCESS_BATCH), _fly),
    "lockstep": Driver(Simulation.compile, Session.fly_lockstep, _open_firmware, "lockstep"),
    "lockstep exchange": Driver(lambda simulation: simulation.compile_exchange_loop(EXCHANGE_BATCH),
                                Session.fly_lockstep, _open_firmware, "lockstep"),
    "real time": Driver(Simulation.compile, Session.fly_realtime, _open_firmware, "real time"),
    "Betaflight real time": Driver(Simulation.compile, Session.fly_realtime, _open_betaflight, "real time"),
    # Replay (hil.replay.replay) flies simulation.compile_batch(REPLAY_BATCH) with a log's commands.
}


@dataclass(frozen=True)
class Flight:
    """How a run flies, resolved from its arguments before anything is compiled."""

    runtime: str  # what flies: in-process, c, python, sitl, board (a board hil does not start), custom
    mode: str  # its driver, a key of DRIVERS
    faults: LinkFaultPlan  # the scenario's link faults, injected between hil and the firmware
    no_loop_because: str | None = None  # lockstep: why the compiled exchange was wanted and does not fly

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

def run(scenario: Scenario, runtime: str | None = None, board: Board | None = None, realtime: bool | None = None,
        progress: Progress | None = None, progress_interval: float = 0.25, warn: Callable[[str], None] = print,
        firmware_command: str | None = None, log_path: Path | None = None,
        compiled_exchange: bool = True, firmware_lines: int = FIRMWARE_LINES,
        readers: Sequence[Reader] = ()) -> RunResult:
    """Fly ``scenario`` and evaluate its expectations.

    ``runtime`` overrides the scenario's ``firmware.runs`` (``c``, ``python``, ``in-process``);
    ``board`` flies a real flight controller instead, in real time unless ``realtime`` is False.
    ``firmware_command`` starts your own firmware (a SITL build speaking the native protocol):
    a command line in which ``{udp}`` stands for the HOST:PORT it must bind. Emulated firmware
    flies in lockstep unless ``realtime`` is True. ``log_path``: where to record the flight log.
    ``compiled_exchange``: in lockstep, exchange frames inside the compiled tick loop where the
    system compilers can build it (:mod:`hil.bridges.compiled_exchange`); False calls the tick
    once per tick and exchanges in Python (the results are the same, only slower).
    ``firmware_lines``: how many of a started firmware's last lines of output the result keeps
    (:meth:`hil.firmware_process.FirmwareProcess.last_output`). A KeyboardInterrupt (or
    :class:`Interrupted`) stops the firmware, closes the log with a footer that says the run was
    interrupted, and goes on up; so does one noted while the run ends (:data:`ENDING`). ``readers`` are given
    the run's rows as they are finished, in tick order (:attr:`hil.trace.Trace.readers`): the
    trace itself keeps only a window of a long run.
    """
    started = time.perf_counter()
    flight = _resolve(scenario, runtime, board, realtime, firmware_command, compiled_exchange)
    simulation = Simulation(scenario, in_process_firmware=flight.driver.opens is None)
    program = flight.driver.compile(simulation)
    compile_seconds = time.perf_counter() - started
    record, judge = _record(scenario, simulation, flight.runtime, log_path, readers)
    before = compilations()
    try:
        if flight.driver.opens is None:
            flown = _fly_in_process(flight, program, record, progress, progress_interval)
        else:
            flown = _fly_over_link(scenario, simulation, program, record, flight, board, firmware_command, progress,
                                   progress_interval, warn, firmware_lines)
        interrupted = flown.interrupted or ENDING.interruption
        result = _evaluate(scenario, flight, program, record, judge, flown, interrupted, compile_seconds,
                           compilations() - before)
        if record.recorder is not None:
            record.recorder.close(_footer(result))
    finally:
        late = ENDING.end()  # came after the footer was written: the run is whole, and hil still stops
    if interrupted is not None or late is not None:
        raise interrupted or late
    return result


def _resolve(scenario: Scenario, runtime: str | None, board: Board | None, realtime: bool | None,
             firmware_command: str | None, compiled_exchange: bool) -> Flight:
    """What flies the run and which driver flies it; :class:`RunRefused` when it cannot be flown.
    Emulated firmware flies in lockstep unless told otherwise, a board and Betaflight's SITL in
    real time; lockstep flies the compiled exchange where it is built and no link faults are injected."""
    runtime = "board" if board else "custom" if firmware_command else (runtime or scenario.firmware.runtime)
    _check_runtime(scenario, runtime, realtime)
    faults = LinkFaultPlan(scenario)
    if runtime == "in-process":
        return Flight(runtime, "in-process", faults)
    if runtime == "sitl":
        return Flight(runtime, "Betaflight real time", faults)
    if realtime if realtime is not None else board is not None:
        return Flight(runtime, "real time", faults)
    if faults or not compiled_exchange:
        return Flight(runtime, "lockstep", faults)
    why_not = exchange_module.unavailable()
    if why_not is None:
        return Flight(runtime, "lockstep exchange", faults)
    return Flight(runtime, "lockstep", faults, why_not.splitlines()[0])


def _record(scenario: Scenario, simulation: Simulation, runtime: str, log_path: Path | None,
            readers: Sequence[Reader]) -> tuple[TickRecord, Judge]:
    """The run's record (its trace, and its log if ``log_path`` is given), and the judge of its
    expectations, which reads the trace's rows as they are finished, as ``readers`` do."""
    trace = Trace.for_run(scenario.ticks + 1, simulation.layout, simulation.rate)
    judge = Judge(scenario, trace)
    trace.readers += readers
    recorder = None if log_path is None else flightlog.Recorder(log_path, _header(scenario, simulation, runtime),
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
                   board: Board | None, firmware_command: str | None, progress, interval, warn,
                   firmware_lines: int) -> _Flown:
    """Open the link (starting the firmware, or reaching the board), say HELLO, fly, and end the
    run: GOODBYE, the firmware stopped and its last output read, the link closed; all that after
    the flight runs while the run is ending (:data:`ENDING`)."""
    peer = _Peer()
    failure = interrupted = goodbye = None
    firmware_output = ""
    setup_started = loop_started = time.perf_counter()
    try:
        flight.driver.opens(peer, scenario, simulation, flight, board, firmware_command, record.recorder)
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
              interrupted: KeyboardInterrupt | None, compile_seconds: float, compilations_during_run: int) -> RunResult:
    """The run's result: its expectations judged on the ticks done, and how it ended."""
    failure, final = flown.failure, record.state
    if interrupted is not None:
        failure = f"interrupted by {_interruption(interrupted)}"
        final = None  # an interrupted call may have taken the flight's state with it (its buffers are donated)
    result = RunResult(scenario, record.trace, judge.outcomes() if record.ticks_done else [], compile_seconds,
                       flown.wall_seconds, compilations_during_run, None if final is None else program.unravel(final),
                       flight.runtime, record.stats, failure, flown.startup_seconds,
                       firmware_output=flown.firmware_output,
                       interrupted=None if interrupted is None else _interruption(interrupted))
    if result.link_stats is not None:
        result.not_reproducible = result.link_stats.not_reproducible
    return result


class RunRefused(ValueError):
    """The run asked for cannot be flown (bad usage): nothing was started."""


def _check_runtime(scenario: Scenario, runtime: str, realtime: bool | None) -> None:
    """The firmware runs only as ``scenario.FIRMWARE_RUNTIMES`` says; a board or your own firmware
    (``--firmware-cmd``) speaks hil's protocol, which Betaflight's SITL does not; the SITL flies in
    real time only."""
    allowed = scenario_module.FIRMWARE_RUNTIMES[scenario.firmware.name]
    speaks_hil = runtime in ("board", "custom")
    if not (runtime in allowed or speaks_hil and "sitl" not in allowed):
        if "sitl" in allowed:
            raise RunRefused(f"scenario {scenario.name} flies Betaflight's SITL with a pilot on its sticks; "
                             f"{runtime} firmware speaks hil's own protocol and flies a mission")
        raise RunRefused(f"scenario {scenario.name} flies firmware {scenario.firmware.name}, which runs as "
                         f"{' or '.join(allowed)}, not {runtime}")
    if runtime == "sitl" and realtime is False:
        raise RunRefused("Betaflight's SITL keeps its own clock and flies in real time only; drop --lockstep")


def _header(scenario: Scenario, simulation: Simulation, runtime: str) -> dict:
    import jaxlib

    return {
        "format": 1, "hil": hil.__version__, "scenario": scenario.name, "scenario_text": scenario.source,
        "seed": scenario.seed, "duration": scenario.duration, "rate_hz": simulation.rate, "runtime": runtime,
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
        simulation.rate / s.decimation * READING_SIZE[s.name] * FLOAT32_BYTES for s in simulation.sensors)
    if per_second <= capacity:
        return []
    return [f"warning: the sensors need about {per_second:.0f} B/s but {link.describe()} carries {capacity:.0f} B/s; "
            f"in lockstep the run slows down, in real time replies will be late. Raise the baud rate or lower "
            f"physics.rate_hz or the sensor rates."]
