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
    runtime = "board" if board else "custom" if firmware_command else (runtime or scenario.firmware.runtime)
    _check_runtime(scenario, runtime, realtime)
    in_process = runtime == "in-process"
    simulation = Simulation(scenario, in_process_firmware=in_process)
    paced = realtime if realtime is not None else board is not None or runtime == "sitl"
    plan = LinkFaultPlan(scenario)
    started = time.perf_counter()
    looping, why_not = False, None
    if not in_process and not paced and not plan and compiled_exchange:
        why_not = exchange_module.unavailable()
        looping = why_not is None
    if in_process:
        tick = simulation.compile_batch(IN_PROCESS_BATCH)
    else:
        tick = simulation.compile_exchange_loop(EXCHANGE_BATCH) if looping else simulation.compile()
    compile_seconds = time.perf_counter() - started
    trace = Trace.for_run(scenario.ticks + 1, simulation.layout, simulation.rate)
    judge = Judge(scenario, trace)
    trace.readers += readers
    recorder = None if log_path is None else flightlog.Recorder(log_path, _header(scenario, simulation, runtime),
                                                                  trace)
    before = compilations()
    firmware_output, stats, session, startup = "", None, None, 0.0
    try:
        if in_process:
            final, wall, failure, interrupted = _fly_in_process(tick, trace, progress, progress_interval, recorder)
        else:
            (final, wall, failure, interrupted, stats, session, startup,
             firmware_output) = _fly_firmware(scenario, simulation, tick, trace, runtime, board, firmware_command,
                                              plan, paced, why_not, recorder, progress, progress_interval, warn,
                                              firmware_lines)
        interrupted = interrupted or ENDING.interruption
        if interrupted is not None:
            failure = f"interrupted by {_interruption(interrupted)}"
            # An interrupted call may have taken the flight's state with it (its buffers are donated).
            final = None
        result = RunResult(scenario, trace, judge.outcomes() if trace.ticks_done else [], compile_seconds,
                           wall, compilations() - before, None if final is None else tick.unravel(final), runtime,
                           stats or (session.stats if session is not None else None), failure, startup,
                           firmware_output=firmware_output,
                           interrupted=None if interrupted is None else _interruption(interrupted))
        if result.link_stats is not None:
            result.not_reproducible = result.link_stats.not_reproducible
        if recorder is not None:
            recorder.close(_footer(result))
    finally:
        late = ENDING.end()  # came after the footer was written: the run is whole, and hil still stops
    if interrupted is not None or late is not None:
        raise interrupted or late
    return result


def _fly_in_process(program: CompiledBatch, trace: Trace, progress, interval, recorder):
    """:func:`_fly`, and then the run is ending (:data:`ENDING`). Returns the final state, the
    loop's wall-clock seconds, None (the in-process firmware cannot fail the run) and the
    interruption that ended it early, if one did."""
    started = time.perf_counter()
    try:
        final, wall = _fly(program, trace, progress, interval, recorder)
        return final, wall, None, None
    except KeyboardInterrupt as error:
        return None, time.perf_counter() - started, None, error
    finally:
        ENDING.begin()


def _fly_firmware(scenario, simulation, tick, trace, runtime, board, firmware_command, plan, paced, why_not,
                  recorder, progress, interval, warn, firmware_lines):
    """Start the firmware (or open the board's link), say HELLO, fly, and end the run: GOODBYE,
    the firmware stopped and its last output read, the link closed; all that after the flight
    runs while the run is ending (:data:`ENDING`). Returns the final state, the loop's wall-clock
    seconds, why the run failed, the interruption that ended it, the link's statistics, the
    session, the seconds from the compiled tick to tick 0, and the firmware's last output."""
    firmware = link = session = None
    failure = stats = interrupted = goodbye = None
    final, firmware_output = tick.initial, ""
    setup_started = loop_started = time.perf_counter()
    try:
        if board:
            link = board.open()
        elif runtime == "sitl":
            firmware, link, session = _betaflight(scenario, simulation, recorder)
        else:
            address = f"127.0.0.1:{firmware_process.free_udp_port()}"
            if firmware_command:
                argv = shlex.split(firmware_command.replace("{udp}", address))
                name = repr(shlex.join(argv))
            else:
                argv = firmware_process.command(scenario, runtime, address)
                name = f"{scenario.firmware.name} ({runtime})"
            firmware = firmware_process.FirmwareProcess(argv, name)
            link = UdpLink(address)
        if plan:
            link = ImpairedLink(link, plan)
        for line in line_budget_warnings(simulation, link):
            warn(line)
        if session is None:
            session = Session(simulation, link, scenario.link, firmware, recorder)
        session.handshake()
        loop_started = time.perf_counter()
        if paced:
            final, stats = session.fly_realtime(tick, trace, progress, interval)
        else:
            final, stats = session.fly_lockstep(tick, trace, progress, interval,
                                                why_not.splitlines()[0] if why_not else None)
        goodbye = (wire.GOODBYE_NORMAL, "run complete")
    except (SessionError, LinkError, RuntimeError) as error:
        failure = str(error)
        goodbye = (error.goodbye_code if isinstance(error, SessionError) else wire.GOODBYE_ERROR, failure)
        final = session.state if session is not None else None
    except KeyboardInterrupt as error:
        interrupted = error
        goodbye = (wire.GOODBYE_ERROR, f"hil interrupted by {_interruption(error)}")
    finally:
        ENDING.begin()
        wall = time.perf_counter() - loop_started
        if session is not None and goodbye is not None:
            session.goodbye(max(trace.ticks_done - 1, 0), *goodbye)
        if firmware is not None:
            firmware.stop()
            firmware_output = firmware.last_output(firmware_lines)
            firmware.close()
        if link is not None:
            link.close()
    return final, wall, failure, interrupted, stats, session, loop_started - setup_started, firmware_output


def _betaflight(scenario: Scenario, simulation: Simulation, recorder):
    """Betaflight's SITL started and configured, its link, and the session that flies it with the pilot."""
    from hil.bridges import betaflight

    settings = scenario.firmware.betaflight
    sitl = betaflight.BetaflightSitl(settings)
    try:
        link = betaflight.BetaflightLink(settings.motor_order)
    except BaseException:
        sitl.stop()
        sitl.close()
        raise
    return sitl, link, betaflight.BetaflightSession(simulation, link, sitl, recorder)


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


def _fly(program: CompiledBatch, trace: Trace, progress, interval, recorder):
    """The in-process loop: the firmware answers inside the compiled tick, up to a batch of ticks
    per call. A recorded run's batches end at each snapshot tick, whose state the recorder needs."""
    total = trace.last + 1
    started = time.perf_counter()
    state = program.initial
    next_report = started + interval
    k = 0
    while k < total:
        n = min(program.batch, total - k)
        if recorder is not None:
            n = min(n, recorder.batch_limit(k))
        state, flown = program.advance_many(state, np.int32(n))
        trace.span(k, n)[:] = np.asarray(flown)[:n]
        if recorder is not None:
            recorder.ticks(k, n, state)
        k += n
        trace.ticks_done = k  # an interrupted run is judged and recorded up to here
        if progress is not None and (now := time.perf_counter()) >= next_report:
            progress(k - 1, total - 1, now - started)
            next_report = now + interval
    wall = time.perf_counter() - started
    trace.ticks_done = total
    if progress is not None:
        progress(total - 1, total - 1, wall)
    return state, wall
