"""The ``hil`` command line."""

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from hil import __version__, targets, wire
from hil.replay import ReplayError
from hil.scenario import ScenarioError
from hil.targets.serial import MAX_BAUD

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SWEEP_PLOT = "sweep.png"  # hil sweep --plot, in the out folder


class _Group(click.Group):
    """Click exits 2 on bad usage already; this makes every other escape a clear message too."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ScenarioError as error:
            for problem in error.problems:
                click.echo(f"error: {problem}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except ReplayError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt as error:  # SIGINT, or hil.runner.Interrupted: SIGINT or SIGTERM
            click.echo(f"interrupted{f' by {error.signal_name}' if hasattr(error, 'signal_name') else ''}", err=True)
            ctx.exit(getattr(error, "exit_code", 130))


# The commands that trace JAX programs; the others stay quick to start, without JAX.
TRACING_COMMANDS = ("run", "replay")
# hil run -h and hil replay -h: an example of each form of target (\b keeps click from rewrapping it).
TARGETS_HELP = f"\b\nTargets (--target URL):\n{targets.forms_text()}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="hil")
@click.pass_context
def main(ctx):
    """Fly flight software against a compiled JAX physics model.

    \b
    Start here:
      hil validate scenarios/*.yaml     check scenario files without flying them
      hil run scenarios/hover.yaml      fly a scenario; exit 0 if every expectation held

    Exit codes: 0 every expectation held, 1 a check failed, 2 bad usage or bad input.
    """
    if ctx.invoked_subcommand in TRACING_COMMANDS:
        from hil import jaxconfig

        jaxconfig.configure()


@main.command(epilog=TARGETS_HELP)
@click.argument("scenario_path", metavar="SCENARIO", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="Override the scenario's seed (all noise derives from it).")
@click.option("--duration", type=float, help="Override the run length in seconds (at most 86400, and 2^32 - 1 ticks).")
@click.option("--set", "changes", metavar="KEY=VALUE", multiple=True,
              help="Change a key of the scenario before flying it (repeatable): KEY is dotted, list items by index "
                   "(vehicle.mass=1.6, firmware.gains.rate=[40,40,20], faults.0.start=2); VALUE is YAML. The log "
                   "records the scenario as flown, so replay flies it again.")
@click.option("--target", "target_url", metavar="URL",
              help="What flies, named by a URL (the forms are below). Default: the scenario's own firmware, as its "
                   "firmware.runs says. --firmware, --firmware-cmd, --port and --udp name the same targets.")
@click.option("--firmware", "runtime", type=click.Choice(["c", "python", "in-process"]),
              help="Override the scenario's firmware.runs: the C or Python emulated firmware as its own process "
                   "over UDP, or in-process inside the compiled tick (fastest).")
@click.option("--firmware-cmd", "firmware_command", metavar="COMMAND",
              help="Start your own firmware speaking the hil protocol (a SITL build); {udp} in COMMAND is replaced "
                   "by the HOST:PORT it must bind. Flown in lockstep unless --realtime. Its output is kept: the "
                   "last 20 lines are shown when the run fails, the last 2000 with -v. hil stops it (and all it "
                   "started) when the run ends.")
@click.option("--port", metavar="URL", help="Fly a board on this serial port or pyserial URL (/dev/ttyACM0, COM3, "
                                            "socket://host:port).")
@click.option("--baud", type=click.IntRange(1, MAX_BAUD), default=921600, show_default=True, help="Baud rate for --port.")
@click.option("--udp", metavar="HOST:PORT", help="Fly a board on the network at this address.")
@click.option("--bind", metavar="HOST:PORT", default="127.0.0.1:0", show_default=True,
              help="Local address for --udp; hil binds to loopback unless told otherwise.")
@click.option("--realtime/--lockstep", default=None,
              help="Pace ticks on the wall clock, or wait for each reply. Default: lockstep for emulated firmware, "
                   "real time for a board.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the flight log. Default: runs/<scenario>-<UTC time>.hillog.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML: one test case per expectation, for CI systems.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a machine-readable JSON summary of the run.")
@click.option("--member", metavar="RESULT:I",
              help="Fly member I of a sweep of SCENARIO (RESULT: the folder hil sweep wrote, or its members.csv): its "
                   "seed and drawn values, rebuilt from SCENARIO and the sweep's summary.json, on any target; --set, "
                   "--seed and --duration apply on top of them.")
@click.option("-v", "--verbose", count=True, help="More detail: compile time, tick cost, firmware messages.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line, only the results table.")
def run(scenario_path, seed, duration, changes, target_url, runtime, firmware_command, port, baud, udp, bind, realtime,
        out_path, junit_path, json_path, member, verbose, quiet):
    """Fly SCENARIO and check its expectations.

    With no --target the scenario's emulated firmware is started as its own process and
    flown over UDP on loopback in lockstep, as fast as the machine allows. A board's URL (or
    --port, --udp) flies a real board instead, in real time. Progress shows sim time and the
    real-time factor; the run ends with one row per expectation and the link's statistics.

    \b
    Examples:
      hil run scenarios/hover.yaml
      hil run scenarios/hover.yaml --target inproc://quad_pid
      hil run scenarios/hover.yaml --target 'serial:///dev/ttyACM0?baud=921600'
      hil run scenarios/hover.yaml --firmware in-process
      hil run scenarios/wind_gust.yaml --seed 7 --duration 30 -v
      hil run scenarios/hover.yaml --set vehicle.mass=1.6 --set firmware.gains.rate=[40,40,20]
      hil run scenarios/hover.yaml --port /dev/ttyACM0 --baud 921600
      hil run scenarios/hover.yaml --udp 192.168.1.50:9000 --bind 0.0.0.0:0
      hil run scenarios/betaflight_hover.yaml      (Betaflight's SITL, in real time)
    """
    from hil import jaxconfig, runner, scenario

    named = _named_target(target_url, runtime=runtime, firmware_command=firmware_command, port=port, baud=baud,
                          udp=udp, bind=bind)
    loaded = _sweep_member(scenario_path, member) if member else scenario.load(scenario_path)
    loaded = scenario.with_changes(loaded, changes, option="--set")
    loaded = runner.with_overrides(loaded, seed=seed, duration=duration)
    target = _target_for(named, loaded, realtime)
    # The log's folders are made by the recorder; the reports' are not. The default log is made
    # just before the flight (default_log_path), and dropped if the run ends before writing it.
    for option, path, makes_folders in (("--out", out_path, True), ("--junit", junit_path, False),
                                        ("--json", json_path, False)):
        if path is not None:
            _check_writable(option, path, makes_folders)
    try:
        jaxconfig.cache_directory("jax")
    except jaxconfig.CacheDirectoryError as error:
        raise click.UsageError(str(error)) from None
    show_progress = not quiet and sys.stderr.isatty()
    click.echo(f"hil {__version__}: {loaded.name} from {scenario_path}, seed {loaded.seed}, "
               f"{loaded.duration:g} s at {loaded.physics.rate_hz} Hz, target {target.url}", err=True)
    if not quiet and not _structure_compiled(loaded, target):
        click.echo("  compiling the tick: this scenario's structure (its sensors and their rates, gusts, faults, "
                   "waypoints, firmware) has not flown here before; a run that changes only numbers (seed, mass, "
                   "gains, noise, wind, fault times) starts without compiling", err=True)

    def progress(tick, last, elapsed):
        rate = loaded.physics.rate_hz
        factor = tick / rate / max(elapsed, 1e-9)
        line = f"  t = {tick / rate:7.2f} / {last / rate:.2f} s   {factor:6.1f}x real time"
        click.echo("\r" + line if show_progress else line, err=True, nl=not show_progress)

    claimed = out_path is None
    out_path = out_path or default_log_path(loaded.name)
    try:
        with _signals_interrupt():
            result = _fly(scenario=loaded, target=target, realtime=realtime, log_path=out_path,
                          progress=progress if (show_progress or verbose) and not quiet else None,
                          progress_interval=0.25 if show_progress else 2.0,
                          warn=lambda line: click.echo(line, err=True),
                          firmware_lines=runner.FIRMWARE_LINES_VERBOSE if verbose else runner.FIRMWARE_LINES)
    except runner.Interrupted as error:
        click.echo(f"\nINTERRUPTED by {error.signal_name}" + (f"; log {out_path}" if _begun(out_path) else ""),
                   err=True)
        sys.exit(error.exit_code)
    finally:
        if claimed and not _begun(out_path):
            out_path.unlink(missing_ok=True)  # the run ended before its log began: no empty log left behind
    if show_progress:
        click.echo("", err=True)
    ticks = result.trace.ticks_done
    if verbose and ticks:
        click.echo(f"  compiled in {result.compile_seconds:.2f} s; firmware ready in {result.startup_seconds:.2f} s; "
                   f"{ticks} ticks in {result.wall_seconds:.2f} s "
                   f"({result.wall_seconds / ticks * 1e6:.1f} µs/tick, {result.real_time_factor:.1f}x real time); "
                   f"recompilations during the run: {result.compilations_during_run}", err=True)
    stats = result.link_stats
    if stats is not None:
        _show_firmware_messages(stats, loaded.physics.rate_hz, verbose)
        click.echo(_rows(stats.summary()))
    if result.firmware_output and (verbose or not result.passed):
        kept = runner.FIRMWARE_LINES_VERBOSE if verbose else runner.FIRMWARE_LINES
        click.echo(f"firmware output (at most its last {kept} lines):\n"
                   + "\n".join(f"  | {line}" for line in result.firmware_output.splitlines()))
    if result.not_reproducible:
        click.echo(f"NOT REPRODUCIBLE from seed {loaded.seed}: {result.not_reproducible}", err=True)
    from hil import reports

    if junit_path:
        reports.write_junit(result, junit_path)
    if json_path:
        reports.write_json(result, json_path, out_path)
    if result.outcomes:
        click.echo(_table(result.outcomes, verbose))
    if result.failure:
        click.echo(f"FAILED: {result.failure} (after {ticks} ticks; log {out_path})")
        sys.exit(EXIT_FAILED)
    passed = sum(o.passed for o in result.outcomes)
    verdict = "PASSED" if result.passed else "FAILED"
    click.echo(f"{verdict}: {passed}/{len(result.outcomes)} expectations held; log {out_path}")
    sys.exit(EXIT_PASSED if result.passed else EXIT_FAILED)


def _show_firmware_messages(stats, rate_hz: int, verbose: int) -> None:
    """The firmware's STATUS messages on the terminal: those kept (the first few, the first
    warnings and worse after those, the latest few), only warnings and worse unless -v, and how
    many were held back; the flight log has every one."""
    from hil import session

    shown = 0
    kept = sorted([*stats.status_messages, *stats.status_warnings, *stats.status_latest], key=lambda m: m[0])
    for tick, severity, text in kept:
        if verbose or severity >= session.WARNING:
            click.echo(f"  firmware [{wire.SEVERITIES[severity]}] t={tick / rate_hz:.3f} s: {text}", err=True)
            shown += 1
    held_back = sum(stats.status_counts.values()) - shown
    if held_back and (verbose or shown):
        click.echo(f"  ... {held_back} more firmware messages held back (the flight log has every one)", err=True)


# Modules whose state the log's footer is written from: an interruption is not raised inside
# them (a record half written, or written and not yet marked so, would be written again), but
# retried every INTERRUPT_RETRY s until the run has left them.
UNINTERRUPTED = ("hil.flightlog", "hil.trace", "hil.expectations", "hil.record")
INTERRUPT_RETRY = 0.001


@contextlib.contextmanager
def _signals_interrupt():
    """SIGINT and SIGTERM end a run cleanly: the first raises :class:`hil.runner.Interrupted` in the
    run (which stops the firmware and closes the log with a footer), or, once the run is ending,
    is left to the run to raise when its log is closed (:data:`hil.runner.ENDING`); later ones
    are ignored while it does so."""
    from hil import runner

    first = []

    def interrupt(number, frame):
        if not first:
            first.append(number)
            for each in (signal.SIGINT, signal.SIGTERM):
                signal.signal(each, signal.SIG_IGN)
        if runner.ENDING.note(runner.Interrupted(first[0])):
            return
        while frame is not None:
            if frame.f_globals.get("__name__") in UNINTERRUPTED:
                signal.setitimer(signal.ITIMER_REAL, INTERRUPT_RETRY)  # SIGALRM: here again
                return
            frame = frame.f_back
        raise runner.Interrupted(first[0])

    previous = {each: signal.signal(each, interrupt) for each in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for each, handler in previous.items():
            signal.signal(each, handler)


def default_log_path(name: str, folder: Path = Path("runs")) -> Path:
    """``runs/<name>-<UTC time>.hillog`` (``-2``, ``-3``... when another run took it in the same
    second), made now: the name cut down to letters, digits, ``.``, ``-`` and ``_`` so that no
    name (``../x``, ``/etc/x``, a very long one) can place the log outside ``folder``."""
    from hil import flightlog

    try:
        return flightlog.claim(folder, f"{flightlog.file_name(name)}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    except OSError as error:
        raise click.UsageError(f"cannot write the flight log in {folder.absolute()} ({error.strerror or error}); "
                               "give --out PATH") from None


def _begun(log: Path) -> bool:
    """Whether a run wrote its log's first bytes (a log is claimed empty, then written)."""
    return log.exists() and log.stat().st_size > 0


def _named_target(url: str | None, **options):
    """The target ``--target URL`` names, or the old options (``--firmware``, ``--firmware-cmd``,
    ``--port``/``--baud``, ``--udp``/``--bind``, ``options``) that name the same targets; None
    when neither does. A URL or a value that names no target is bad usage, before anything is
    compiled; ``--baud`` and ``--bind`` have defaults and only count with ``--port`` or ``--udp``."""
    given = [option for name, option in (("runtime", "--firmware"), ("firmware_command", "--firmware-cmd"),
                                         ("port", "--port"), ("udp", "--udp")) if options.get(name) is not None]
    if url is not None and given:
        raise click.UsageError(f"--target and {' and '.join(given)} each name what flies; give one")
    try:
        if url is None:
            return targets.from_options(**options)
        return targets.parse(url)
    except targets.TargetError as error:
        raise click.UsageError(str(error) if url is None else f"--target {error}") from None


def _target_for(named, loaded, realtime):
    """The target that flies ``loaded`` (``named``, or else the scenario's own firmware), checked
    before anything is compiled: a scenario it cannot fly, a pacing it does not keep and a target
    that is not here (a serial port that does not exist, Betaflight not installed) are bad usage."""
    try:
        target = (named or targets.default(loaded)).for_scenario(loaded)
        target.realtime_for(realtime)
    except targets.RunRefused as error:
        raise click.UsageError(str(error)) from None
    missing = target.absent()
    if missing is not None:
        raise click.UsageError(missing)
    return target


def _check_writable(option: str, path: Path, makes_folders: bool) -> None:
    """Refuse, before anything is compiled or started, a file the run could not write. A file made
    and dropped at once in the nearest existing folder is the test: permission bits do not tell
    (root, read-only mounts, /proc), and nothing is left behind."""
    folder = next(p for p in path.absolute().parents if os.path.exists(p))
    if not os.path.isdir(folder):
        raise click.UsageError(f"{option} {path}: {folder} is a file, not a folder")
    if folder != path.absolute().parent and not makes_folders:
        raise click.UsageError(f"{option} {path}: the folder {path.parent} does not exist")
    try:
        tempfile.TemporaryFile(dir=folder).close()
        if os.path.exists(path):
            open(path, "ab").close()
    except OSError as error:
        raise click.UsageError(f"{option} {path}: cannot write a file in {folder} ({error.strerror or error})") from None


def _check_output(option: str, output: Path, log: Path, makes_folders: bool) -> None:
    """The file a command that reads ``log`` writes: never the log itself, and writable."""
    if output.exists() and output.samefile(log):
        raise click.UsageError(f"{option} {output}: is the log being read; give another file")
    _check_writable(option, output, makes_folders)


def _structure_compiled(loaded, target) -> bool:
    """Whether a program for the scenario's structure is cached, as ``target`` will fly it: in
    batches with the firmware in the tick, or over a link a tick per call or in the exchange loop."""
    from hil import runner
    from hil.sim import Simulation

    in_process = not target.LINK
    simulation = Simulation(loaded, in_process_firmware=in_process)
    kinds = [f"batch{runner.IN_PROCESS_BATCH}"] if in_process else ["tick", f"exchange{runner.EXCHANGE_BATCH}"]
    return any(simulation.compiled(kind) for kind in kinds)


def _fly(**arguments):
    """``runner.run``, with a run it refuses reported as bad usage."""
    from hil import runner

    try:
        return runner.run(**arguments)
    except runner.RunRefused as error:
        raise click.UsageError(str(error)) from None


@main.command("log")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def log_command(path):
    """Summarise a flight log: scenario, length, result, link statistics, and whether it is whole.

    A log cut short (a killed run, a full disk) reads up to its last intact record, and a damaged
    one on past each damaged span; this says where each span is and the ticks it lost. Exit 0 for
    a complete log, 1 for a cut or damaged one, 2 for a file that is not a hil flight log.
    """
    from hil import flightlog

    reader = _open_log(path)
    header = reader.header
    counts = {flightlog.TICK: 0, flightlog.PACKET: 0, flightlog.SNAPSHOT: 0, flightlog.FOOTER: 0}
    last = 0
    for kind, value in reader.records():
        counts[kind] += 1
        if kind == flightlog.TICK:
            last = value[0]
    footer = reader.footer or {}
    rows = [("file", f"{path} ({path.stat().st_size} B, {reader.intact} records)"),
            ("scenario", f"{header['scenario']}, seed {header['seed']}, {header['runtime']}"),
            ("recorded", f"{counts[flightlog.TICK]} ticks ({last / reader.rate:g} s of {header['duration']:g} s), "
                         f"{counts[flightlog.PACKET]} packets, {counts[flightlog.SNAPSHOT]} snapshots"),
            ("versions", ", ".join(f"{k} {v}" for k, v in header["versions"].items()))]
    if footer:
        verdict = "PASSED" if footer.get("passed") else f"FAILED{': ' + footer['failure'] if footer.get('failure') else ''}"
        held = sum(o["passed"] for o in footer.get("outcomes", []))
        rows.append(("result", f"{verdict} ({held}/{len(footer.get('outcomes', []))} expectations held)"))
        rows += [tuple(pair) for pair in footer.get("link", [])]
    rows.append(("state", _log_state(reader)))
    rows += [("damaged", str(damage)) for damage in reader.damage]
    click.echo(_rows(rows))
    sys.exit(EXIT_PASSED if reader.complete else EXIT_FAILED)


def _open_log(path: Path, *columns: str):
    """``path`` as a :class:`hil.flightlog.LogReader` whose layout has ``columns``; a file that is
    not a hil flight log, or whose header is not one hil writes, is bad input."""
    from hil import flightlog

    try:
        reader = flightlog.LogReader(path)
        reader.require(*columns)
    except flightlog.LogError as error:
        raise _BadInput(str(error)) from None
    except OSError as error:
        raise _BadInput(f"{path}: {error.strerror}") from None
    return reader


class _BadInput(click.ClickException):
    """A one-line message and exit 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


def _log_state(reader) -> str:
    """Whether a log that has been read whole is complete, or how it is not."""
    if reader.complete:
        return "complete"
    spans = f"{len(reader.damage)} damaged span{'s' if len(reader.damage) > 1 else ''} skipped"
    if reader.footer is None:
        return "incomplete: no footer (the run did not finish)" + (f"; {spans}" if reader.damage else "")
    return f"damaged: {spans}"


def _report_damage(reader) -> int:
    """Say on stderr how a log was cut or damaged (as far as it was read), each damaged span with
    the ticks it lost; the exit code that follows (1 unless the log is complete)."""
    if reader.complete:
        return EXIT_PASSED
    if reader.read_whole:
        click.echo(f"the log is {_log_state(reader)}", err=True)
    for damage in reader.damage:
        click.echo(f"  damaged {damage}", err=True)
    return EXIT_FAILED


@main.command("replay", epilog=TARGETS_HELP)
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--set", "changes", metavar="KEY=VALUE", multiple=True,
              help="Change the logged scenario before replaying, as hil run --set does (e.g. vehicle.mass=1.6): a "
                   "what-if, or a check that replay notices.")
@click.option("--target", "target_url", metavar="URL",
              help="Re-fly the logged scenario (same seed, same faults) on this target (the forms are below) and "
                   "report where and how far the flight departs from the logged one.")
@click.option("--firmware", "runtime", type=click.Choice(["c", "python", "in-process"]),
              help="Re-fly against this emulated firmware, as --target c://, python:// or inproc:// does.")
@click.option("--firmware-cmd", "firmware_command", metavar="COMMAND",
              help="Re-fly against your own firmware build, as hil run --firmware-cmd ({udp} is its HOST:PORT).")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="With a target: how far (m) the re-flight may stray from the logged flight.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With a target: where to record the re-flight's own log.")
def replay_command(path, changes, target_url, runtime, firmware_command, tolerance, out_path):
    """Re-run the physics of a flight log from its logged commands and compare every tick bit for bit.

    No firmware is needed: the command in force at every tick is in the log, which is read a
    chunk at a time. Past a damaged span replay resumes from the next snapshot and names the
    ticks it could not check. Exit 0 when every tick is identical, 1 at the first difference (its
    tick, fields and both values) or when the log is cut or damaged, 2 for bad input.

    \b
    With --target (or --firmware, --firmware-cmd) it is a regression check of a firmware change
    instead: the logged scenario flies again on that target, and hil reports the first tick the flight
    differs, the first tick it strays beyond --tolerance, and the largest differences. Exit 0 when
    the re-flight stays within the tolerance and its expectations hold, 1 otherwise.
    """
    from hil import replay, scenario

    named = _named_target(target_url, runtime=runtime, firmware_command=firmware_command)
    if out_path is not None:
        _check_output("--out", out_path, path, makes_folders=True)
    reader = _open_log(path)
    flown = scenario.with_changes(replay.scenario_of(reader), changes, option="--set")
    if named is not None:
        _refly(reader, flown, _target_for(named, flown, None), tolerance, out_path)
    result = replay.replay(reader, flown)
    rate = reader.rate
    unchecked = "" if not result.unchecked else "; not checked (no state to replay them from after damage): " + \
        ", ".join(f"ticks {first}–{last}" for first, last in result.unchecked)
    if result.identical:
        click.echo(f"bit-identical: {result.ticks} ticks compared, replayed from the logged commands{unchecked}")
        sys.exit(_report_damage(reader))
    click.echo(f"DIFFERENT from tick {result.first_tick} (t = {result.first_tick / rate:g} s), identical before "
               f"it{unchecked}")
    click.echo(_rows([("field", "logged  →  replayed")] + [(d.field, f"{d.logged!r}  →  {d.replayed!r}")
                                                         for d in result.differences]))
    _report_damage(reader)
    sys.exit(EXIT_FAILED)


def _refly(reader, flown, target, tolerance, out_path):
    """Fly ``flown`` again and compare it with the logged flight, tick by tick as it flies, as far
    as the log's ticks follow each other from tick 0."""
    from hil import replay

    rate = reader.rate
    comparing = replay.FlightComparison(reader.chunks(), reader.layout, rate, tolerance)
    with _signals_interrupt():
        result = _fly(scenario=flown, target=target, log_path=out_path,
                      warn=lambda line: click.echo(line, err=True), readers=[comparing.read])
    if result.failure:
        click.echo(f"the re-flight broke off: {result.failure}", err=True)
    comparison = comparing.comparison()
    flew = target.describe(flown)
    click.echo(f"re-flew {comparison.ticks} ticks of {reader.header['scenario']} against {flew}; logged run: "
               f"{reader.header['runtime']}")
    if comparison.first_tick is None:
        click.echo("the flight is bit-identical to the logged one")
    else:
        click.echo(f"the flight departs at tick {comparison.first_tick} (t = {comparison.first_tick / rate:g} s); "
                   + ("it stays within " if comparison.within_tolerance else
                      f"it strays beyond {tolerance:g} m at tick {comparison.first_beyond} "
                      f"(t = {comparison.first_beyond / rate:g} s); tolerance ") + f"{tolerance:g} m")
    click.echo(_rows([("largest difference", "value  at")] + [
        (name, f"{value:.4g}  t = {tick / rate:g} s") for name, (value, tick) in comparison.worst.items()]))
    held = sum(o.passed for o in result.outcomes)
    click.echo(f"expectations of the re-flight: {held}/{len(result.outcomes)} held"
               + "".join(f"\n  FAIL {o.name}" for o in result.outcomes if not o.passed))
    damaged = _report_damage(reader)
    passed = (comparison.within_tolerance and result.passed and comparison.ticks == comparing.logged_ticks
              and not damaged)
    sys.exit(EXIT_PASSED if passed else EXIT_FAILED)


@main.command("export")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "kind", type=click.Choice(["csv", "mcap"]), required=True,
              help="csv: one row per tick, every column; mcap: /state, /actuators and /sensors/<name> as JSON "
                   "messages with JSON schemas, for Foxglove.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write; default: FILE with the format's suffix.")
def export_command(path, kind, output):
    """Export a flight log to CSV or MCAP, read and written a chunk at a time.

    Exit 0 for a complete log; 1 when it is cut or damaged (what it holds is exported and each
    damaged span is named); 2 for bad input.
    """
    from hil import export

    output = output or path.with_suffix(f".{kind}")
    _check_output("-o", output, path, makes_folders=False)
    reader = _open_log(path, *export.COLUMNS[kind])
    if kind == "csv":
        click.echo(f"{export.to_csv(reader, output)} rows written to {output}")
    else:
        counts = export.to_mcap(reader, output)
        click.echo(f"{sum(counts.values())} messages on {len(counts)} channels written to {output}")
    sys.exit(_report_damage(reader))


@main.command("plot")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The image to write, its format from its suffix (.png, .pdf, .svg, ...); default: FILE with .png.")
def plot_command(path, output):
    """Plot a flight log: position, attitude, body rates and motor commands, with expectation bounds.

    A long log is read a chunk at a time and each line keeps at most a few thousand points (the
    extremes of each stretch of ticks). Exit 0 for a complete log; 1 when it is cut or damaged
    (what it holds is plotted and each damaged span is named); 2 for bad input.
    """
    from hil import plot

    output = output or path.with_suffix(".png")
    formats = plot.formats()
    if output.suffix.lstrip(".").lower() not in formats:
        raise click.UsageError(f"-o {output}: {output.suffix or 'no suffix'} is not an image format hil writes; "
                               f"use one of {', '.join('.' + name for name in sorted(formats))}")
    _check_output("-o", output, path, makes_folders=False)
    reader = _open_log(path, *plot.COLUMNS)
    if plot.plot(reader, output) is None:
        click.echo(f"error: {path}: nothing to plot: no tick is intact", err=True)
        _report_damage(reader)
        sys.exit(EXIT_FAILED)
    click.echo(f"plot written to {output}")
    sys.exit(_report_damage(reader))


@main.command("sweep")
@click.argument("scenario_path", metavar="SCENARIO", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--runs", type=click.IntRange(1, 10_000_000), help="Members to fly (default: the scenario's sweep.runs).")
@click.option("--chunk", type=click.IntRange(1, 1_000_000), help="Members flown at a time by one compiled program, "
              "split over the devices (default 256 a CPU core, 16,384 a GPU; or all of them when fewer).")
@click.option("--set", "changes", metavar="KEY=VALUE", multiple=True,
              help="Change a key of the scenario before sweeping it, as hil run --set (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for members.csv and summary.json (default: runs/sweeps/NAME-TIME).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML: a test case per expectation, failed when its pass rate is below "
                   "sweep.require, with its failure rate, 95 % interval and worst members.")
@click.option("--keep-traces", is_flag=True,
              help="Also write every member's rows (every tick, every column) to traces.npz in the out folder: "
                   "rows (members, ticks, columns), columns (their names), passed. Memory and disk grow with "
                   "members x ticks; without it no row leaves the compiled program.")
@click.option("--plot", is_flag=True,
              help="Also write sweep.png in the out folder: per measured value a histogram against its bound, and "
                   "a fan of north, east and altitude of members 0-31 (failures in red). Those 32 members fly "
                   "a second time with their traces kept, unless --keep-traces kept every member's.")
@click.option("--devices", type=click.IntRange(1, 65536), help="Split each chunk's members over this many of the "
              "machine's devices (default: all of them: one per core on a CPU-only machine, else each GPU).")
@click.option("--executor", default="local", show_default=True, metavar="NAME",
              help="Who flies the chunks: local (this process), or ray (a Ray cluster: the one RAY_ADDRESS names, "
                   "else one started on this machine; pip install 'hil[ray]'). A member's results do not depend on it.")
@click.option("--build-processes", type=click.IntRange(0, 1024), metavar="N",
              help="Build each chunk's members (their checks and parameters) in N processes; 0 or 1: a thread "
                   "builds them (the default where the members fly on the CPU's cores; where they fly on "
                   "accelerators, every core but one; with --executor ray, each task builds its own).")
@click.option("-v", "--verbose", is_flag=True, help="Also each stage's time as it ends: the program traced or "
              "loaded, compiled or loaded, each chunk's members built on the host and flown.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line, only the results table.")
def sweep_command(scenario_path, runs, chunk, changes, out_dir, junit_path, keep_traces, plot, devices, executor,
                  build_processes, verbose, quiet):
    """Fly many dispersed members of SCENARIO in one compiled program and report pass rates.

    The scenario's `sweep:` section says how many members fly, what differs between them
    (dispersions of its numbers) and the pass rate every expectation must reach (`require`).
    Without one, --runs N flies N members that differ in their seed alone. The firmware flies
    inside the compiled tick. Writes members.csv (each member's draws, measured values and
    verdicts) and summary.json (pass rates with Wilson 95 % intervals, the worst members, and
    the scenario's file and --set changes, from which `hil run SCENARIO --member DIR:I` flies
    member I alone on any target). Exit 0 when every expectation's pass rate reaches `require`,
    1 otherwise, 2 on bad input.

    \b
    Examples:
      hil sweep scenarios/hover_sweep.yaml
      hil sweep scenarios/hover.yaml --runs 200 --set duration=10
      hil sweep scenarios/hover_sweep.yaml --out sweeps/today --junit sweep.xml --plot
      hil run scenarios/hover_sweep.yaml --member sweeps/today:17 --firmware c
    """
    from hil import flightlog, jaxconfig, scenario, sweep

    jaxconfig.configure()
    loaded = scenario.with_changes(scenario.load(scenario_path), changes, option="--set")
    if junit_path is not None:
        _check_writable("--junit", junit_path, makes_folders=False)
    try:
        plan = sweep.plan(loaded, runs)
    except sweep.SweepError as error:
        raise click.UsageError(str(error)) from None
    claimed, default_parent = out_dir is None, Path("runs") / "sweeps"
    made = claimed or not out_dir.exists()  # removed again if the sweep stops before any result
    try:  # before flying: a sweep's results are not lost to a folder that cannot be written
        if claimed:  # a folder of its own, even for two sweeps started in the same second
            stem = f"{flightlog.file_name(loaded.name)}-{datetime.now():%Y%m%d-%H%M%S}"
            out_dir = flightlog.claim(default_parent, stem, "", folder=True)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        if claimed:
            raise click.UsageError(f"cannot make a folder in {default_parent} ({reason}); give --out DIR") from None
        raise click.UsageError(f"--out {out_dir}: cannot make the folder: {reason}") from None
    ticks = loaded.ticks + 1
    show_progress = not quiet and sys.stderr.isatty()
    click.echo(f"hil {__version__}: sweep of {loaded.name} from {scenario_path}: {plan.runs} members of "
               f"{loaded.duration:g} s at {loaded.physics.rate_hz} Hz, sweep seed {plan.seed}, dispersed: "
               f"{', '.join(d.key for d in plan.dispersions) or 'the seed alone'}", err=True)
    if (note := sweep.grid_note(plan)) is not None:
        click.echo(note, err=True)

    first_told, last_line = [], [0.0]  # (member-ticks, seconds) at the first report: the rate leaves compilation out

    def progress(flown, total, elapsed):
        if not first_told:
            first_told.append((flown, elapsed))
        since, began = first_told[0]
        if not show_progress and elapsed - last_line[0] < 2.0 and flown < total:
            return  # a log gets a line every two seconds, not one a segment
        last_line[0] = elapsed
        line = f"  {flown // ticks}/{plan.runs} members"
        if elapsed > began and flown > since:
            rate = (flown - since) / (elapsed - began)
            line += f"   {rate / 1e3:8.1f} k member-ticks/s   ETA {(total - flown) / rate:5.0f} s"
        click.echo("\r" + line.ljust(64) if show_progress else line, err=True, nl=not show_progress)

    if build_processes is None:  # a Ray task builds its own chunk, on a machine this one cannot see
        build_processes = sweep.default_build_processes(loaded.firmware.name) if executor == "local" else 0
    flown = interrupted = False
    try:
        if not quiet:  # the first results come once the program is ready (seconds) and its first part flown
            click.echo(f"  0/{plan.runs} members   preparing the compiled program...", err=True, nl=not show_progress)
        with _stages_shown(verbose, over_a_progress_line=show_progress):
            result = sweep.fly(loaded, runs, chunk, progress=None if quiet else progress, keep_traces=keep_traces,
                               devices=devices, executor=executor, build_processes=build_processes)
        flown = True
    except sweep.SweepError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not interrupt the stopping
        interrupted = True
    finally:
        if made and not flown:  # stopped before any result: no empty folder of its making left behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    if interrupted:
        # The sweep's own clean-up has run: its processes and a Ray cluster it started are stopped,
        # and a chunk being built is given up. XLA may still be compiling the program on a thread,
        # work nobody will read, and the interpreter would wait for it at exit (seconds).
        click.echo("\ninterrupted" if show_progress else "interrupted", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if show_progress:
        click.echo("", err=True)
    result.origin = sweep.Origin(str(scenario_path), tuple(changes))
    click.echo(f"  {result.runs} members, {result.member_ticks:,} member-ticks in {result.wall_seconds:.1f} s "
               f"({result.member_ticks / result.wall_seconds / 1e3:.1f} k member-ticks/s on {result.devices} "
               f"{result.platform.upper()} device{'s' if result.devices > 1 else ''}, first chunk of {result.chunk} "
               f"after {result.first_chunk_seconds:.1f} s, compilation included)", err=True)
    written, option, target = [], "--out", out_dir
    try:
        written += result.write(out_dir)
        # The folder holds this sweep's results alone: what an earlier sweep left there that this one
        # does not write (its traces, its plot) would pass for this one's.
        for wanted, name in ((keep_traces, sweep.TRACES), (plot, SWEEP_PLOT)):
            if not wanted:
                (out_dir / name).unlink(missing_ok=True)
        if keep_traces:
            written.append(result.write_traces(out_dir / sweep.TRACES))
        if junit_path is not None:
            option, target = "--junit", junit_path
            result.write_junit(junit_path)
            written.append(junit_path)
        if plot:
            option, target = "--plot", out_dir / SWEEP_PLOT
            written.append(_sweep_plot(loaded, result, chunk, out_dir, quiet))
    except OSError as error:
        click.echo(f"error: {option} {error.filename or target}: cannot write: {error.strerror or error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(_sweep_table(result))
    verdict = "PASSED" if result.ok else "FAILED"
    click.echo(f"{verdict}: every expectation needs a pass rate of {plan.require:.4g}; "
               f"wrote {', '.join(str(path) for path in written)}")
    sys.exit(EXIT_PASSED if result.ok else EXIT_FAILED)


class _Stages(logging.Handler):
    """hil's log at INFO (each stage's time) as -v shows it: a line each, with the seconds since
    the command began, above a progress line that rewrites itself."""

    def __init__(self, started: float, over_a_progress_line: bool):
        super().__init__(logging.INFO)
        self.started, self.over_a_progress_line = started, over_a_progress_line

    def emit(self, record: logging.LogRecord) -> None:
        line = f"  [{record.created - self.started:6.1f} s] {record.getMessage()}"
        click.echo("\r" + line.ljust(64) if self.over_a_progress_line else line, err=True)


@contextlib.contextmanager
def _stages_shown(shown: bool, over_a_progress_line: bool):
    """-v: hil's log at INFO shown while the command runs; as it was afterwards (a script may call
    the command more than once)."""
    if not shown:
        yield
        return
    hil_log, handler = logging.getLogger("hil"), _Stages(time.time(), over_a_progress_line)
    level = hil_log.level
    hil_log.setLevel(logging.INFO)
    hil_log.addHandler(handler)
    try:
        yield
    finally:
        hil_log.removeHandler(handler)
        hil_log.setLevel(level)


def _sweep_plot(loaded, result, chunk, out_dir: Path, quiet: bool) -> Path:
    """``hil sweep --plot``: sweep.png, its fan from the kept traces or from the fan's members flown again."""
    from hil import plot, sweep

    fan = result
    if result.traces is None:
        count = min(plot.FAN, result.runs)
        if not quiet:
            click.echo(f"  flying members 0-{count - 1} again with their traces kept, for the plot's fan", err=True)
        fan = sweep.fly(loaded, count, chunk, keep_traces=True)
    return plot.plot_sweep(result, fan, out_dir / SWEEP_PLOT)


def _sweep_member(scenario_path: Path, given: str):
    """``hil run SCENARIO --member RESULT:I``: member I of the sweep whose results are in RESULT,
    rebuilt from SCENARIO (:func:`hil.sweep.member_of`); bad usage when it cannot be."""
    from hil import sweep

    results, _, number = given.rpartition(":")
    if not results or not re.fullmatch(r"[0-9]+", number):
        raise click.UsageError(f"--member {given}: give RESULT:I, the folder hil sweep wrote (or its members.csv) "
                               "and a member's number, e.g. runs/sweeps/hover_sweep-20260101-120000:17")
    try:
        member, drawn = sweep.member_of(Path(results), int(number), scenario_path)
    except sweep.SweepError as error:
        raise click.UsageError(f"--member {given}: {error}") from None
    click.echo(f"member {int(number)} of the sweep in {results}: seed {member.seed}, {sweep.describe(drawn)}",
               err=True)
    return member


def _sweep_table(result) -> str:
    if not result.expectations:
        return "(the scenario has no expectations)"
    headers = ("result", "expectation", "passed", "rate", "95 % interval", "worst member")
    rows = []
    for index, (expectation, (rate, low, high)) in enumerate(zip(result.expectations, result.pass_rates())):
        worst = result.worst(index, 1)[0]
        outcome = result.outcomes[worst][index]
        rows.append(("PASS" if rate >= result.sweep.require else "FAIL", expectation.name,
                     f"{int(result.passed[:, index].sum())}/{result.runs}", f"{rate:.4f}", f"{low:.4f} .. {high:.4f}",
                     f"#{worst}: {outcome.measured} ({outcome.bound})"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    for index, row in enumerate(rows):
        cells = "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        lines.append(click.style(cells[:4], fg="green" if row[0] == "PASS" else "red") + cells[4:])
        associated = result.associated(index)[:2] if not result.passed[:, index].all() else []
        if associated:
            lines.append(" " * (widths[0] + 2) + "most associated with failing (Spearman's rho): " + ", ".join(
                f"{entry['draw']} {entry['spearman']:+.2f}" for entry in associated))
    return "\n".join(lines)


@main.command()
def ports():
    """List serial ports, for --port."""
    from serial.tools import list_ports

    found = sorted(list_ports.comports(), key=lambda p: p.device)
    if not found:
        click.echo("no serial ports found (a board on USB shows up as /dev/ttyACM* or /dev/ttyUSB* on Linux)")
        return
    click.echo(_rows([(p.device, " ".join(x for x in (p.description, p.hwid) if x and x != "n/a")) for p in found]))


def _rows(pairs) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def _table(outcomes, verbose) -> str:
    if not outcomes:
        return "(the scenario has no expectations)"
    headers = ("result", "expectation", "measured", "bound")
    rows = [("PASS" if o.passed else "FAIL", o.name, o.measured, o.bound) for o in outcomes]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    for outcome, row in zip(outcomes, rows):
        cells = "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        color = "green" if outcome.passed else "red"
        lines.append(click.style(cells[:4], fg=color) + cells[4:])
        if outcome.detail and (verbose or not outcome.passed):
            lines.append(" " * (widths[0] + 2) + outcome.detail)
    return "\n".join(lines)


@main.command()
@click.argument("paths", metavar="SCENARIO...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
def validate(paths):
    """Check scenario files without flying them.

    Every problem is reported as FILE:LINE: key.path: message, unknown keys with the nearest
    valid one. Exit 0 when all files are valid, 2 otherwise.
    """
    from hil import scenario

    bad = 0
    for path in paths:
        try:
            loaded = scenario.load(path)
        except ScenarioError as error:
            bad += 1
            for problem in error.problems:
                click.echo(f"error: {problem}", err=True)
            continue
        click.echo(f"ok: {path} ({loaded.name}, {loaded.duration:g} s, {len(loaded.expect)} expectations)")
    sys.exit(EXIT_BAD_INPUT if bad else EXIT_PASSED)
