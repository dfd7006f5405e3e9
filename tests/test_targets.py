"""Targets named by URL (hil.targets): ``hil run --target`` flies every kind that can run here,
the old options name the same targets, and a URL that names no target is bad usage that lists
the forms."""

import contextlib
import dataclasses
import shlex
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

from support import SCENARIOS, SITL_PORTS, betaflight_missing, hil_command
from hil import cli, firmware_process, flightlog, runner, scenario, targets

SHORT_EXPECT = [{"name": "stays level", "never_above": {"quantity": "tilt_deg", "bound": 15}},
                {"name": "stays over home", "within": {"quantity": "north", "after": 0, "min": -0.5, "max": 0.5}}]


@pytest.fixture
def short_hover(scenario_file):
    """hover.yaml cut to 2 s with expectations a 2 s flight meets."""
    return scenario_file("hover.yaml", duration=2.0, expect=SHORT_EXPECT)


def hil(*args, timeout=300):
    return subprocess.run(hil_command(*args), capture_output=True, text=True, timeout=timeout)


def run_cli(*args):
    """``hil ARGS`` in this process, for what is refused before anything flies."""
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@contextlib.contextmanager
def board(kind, loaded):
    """The C firmware as a board hil does not start, with ``loaded``'s controller settings: on UDP
    or on its own pseudo-terminal (``--pty``, as firmware_process.start_on_pty starts it); yields
    its HOST:PORT or its terminal. It serves one run, and waits for it as long as hil takes to
    start (the firmware's own default leaves after 10 s without a frame: a loaded machine takes that)."""
    address = f"127.0.0.1:{firmware_process.free_udp_port()}" if kind == "udp" else None
    argv = [*firmware_process.command(loaded, "c", address), "--idle-timeout", "0"]
    with firmware_process.FirmwareProcess(argv, f"board ({kind})") as process:
        deadline = time.monotonic() + 60
        while (line := process.first_line()) is None:  # its first line, once it listens: a pty's device
            assert process.exit_code is None and time.monotonic() < deadline, process.last_output()
            time.sleep(0.01)
        yield address or line


def fly(path, *options, out):
    done = hil("run", str(path), "-q", "--out", str(out), *options)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "PASSED: 2/2 expectations held" in done.stdout
    return done, flightlog.read(out)


# ---- every kind that can run here, by URL and by the old options ----------------------------------

@pytest.mark.parametrize("url, runtime", [("inproc://quad_pid", "in-process"), ("c://quad_pid", "c"),
                                          ("python://quad_pid", "python")])
def test_hil_run_target_flies_the_emulated_firmware(short_hover, tmp_path, url, runtime):
    done, log = fly(short_hover, "--target", url, out=tmp_path / "run.hillog")
    assert f"target {url}" in done.stderr
    assert log.header["target"] == url and log.header["runtime"] == runtime and log.complete
    assert len(log.ticks) == 2001


@pytest.mark.parametrize("kind", ["udp", "pty"])
def test_hil_run_target_flies_a_board_it_does_not_start(short_hover, tmp_path, kind):
    with board(kind, scenario.load(short_hover)) as where:
        url = f"udp://{where}?pacing=lockstep" if kind == "udp" else f"serial://{where}?baud=921600&pacing=lockstep"
        done, log = fly(short_hover, "--target", url, out=tmp_path / "run.hillog")
    assert log.header["target"] == url and log.header["runtime"] == "board"
    assert any(name == "link" and ", lockstep" in value for name, value in log.footer["link"])


def test_hil_run_target_cmd_starts_your_own_firmware(short_hover, tmp_path):
    command = shlex.join(firmware_process.command(scenario.load(short_hover), "c", "{udp}"))
    done, log = fly(short_hover, "--target", f"cmd://{command}", out=tmp_path / "run.hillog")
    assert log.header["target"] == f"cmd://{command}" and log.header["runtime"] == "custom"


@pytest.mark.parametrize("kind", ["c", "cmd", "udp", "pty"])
def test_the_old_options_fly_the_target_their_url_names(short_hover, tmp_path, kind):
    """--firmware, --firmware-cmd, --udp and --port fly the target their URL names: the same URL
    in the log's header, and the same flight, row for row (lockstep is deterministic)."""
    loaded = scenario.load(short_hover)
    command = shlex.join(firmware_process.command(loaded, "c", "{udp}"))
    flights = []
    for form in ("url", "options"):
        with contextlib.ExitStack() as stack:
            where = stack.enter_context(board(kind, loaded)) if kind in ("udp", "pty") else None
            url, options = {
                "c": ("c://quad_pid", ["--firmware", "c"]),
                "cmd": (f"cmd://{command}", ["--firmware-cmd", command]),
                "udp": (f"udp://{where}", ["--udp", str(where), "--lockstep"]),
                "pty": (f"serial://{where}?baud=921600", ["--port", str(where), "--lockstep"]),
            }[kind]
            given = ["--target", url, *options[2:]] if form == "url" else options  # --lockstep, if any, for both
            log = fly(short_hover, *given, out=tmp_path / f"{form}.hillog")[1]
        assert log.header["target"] == url
        flights.append(log)
    by_url, by_options = flights
    assert len(by_url.rows) == len(by_options.rows) == 2001
    assert all(np.array_equal(a, b) for a, b in zip(by_url.rows, by_options.rows))


@pytest.mark.slow
def test_hil_replay_target_re_flies_a_log_on_another_target(short_hover, tmp_path):
    fly(short_hover, "--target", "c://quad_pid", out=tmp_path / "c.hillog")
    done = hil("replay", str(tmp_path / "c.hillog"), "--target", "inproc://quad_pid")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-flew 2001 ticks of hover against quad_pid (in-process); logged run: c" in done.stdout
    assert "expectations of the re-flight: 2/2 held" in done.stdout


@pytest.mark.slow
@SITL_PORTS
@pytest.mark.skipif(betaflight_missing() is not None, reason=f"{betaflight_missing()}")
def test_hil_run_target_flies_betaflight_s_sitl(tmp_path):
    """Flown to its end on the SITL, in real time; whether Betaflight holds its expectations on a
    loaded machine is tests/test_betaflight.py's matter (its real-time loop misses ticks under load)."""
    done = hil("run", str(SCENARIOS / "betaflight_hover.yaml"), "-q", "--target", "betaflight-sitl://",
               "--out", str(tmp_path / "bf.hillog"), timeout=600)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stdout + done.stderr
    log = flightlog.read(tmp_path / "bf.hillog")
    assert log.header["target"] == "betaflight-sitl://" and log.header["runtime"] == "sitl"
    assert log.complete and log.footer["failure"] is None and len(log.ticks) == 24001
    assert any(name == "link" and value.startswith("betaflight sitl") and value.endswith("real time")
               for name, value in log.footer["link"])


# ---- one way in: the old options and Board build the targets the URLs name --------------------------

@pytest.mark.parametrize("options, url", [
    ({"runtime": "c"}, "c://"),
    ({"runtime": "python"}, "python://"),
    ({"runtime": "in-process"}, "inproc://"),
    ({"firmware_command": "./my_sitl --udp {udp}"}, "cmd://./my_sitl --udp {udp}"),
    ({"port": "/dev/ttyACM0", "baud": 115200}, "serial:///dev/ttyACM0?baud=115200"),
    ({"port": "socket://localhost:4000"}, "socket://localhost:4000"),
    ({"udp": "192.168.1.50:9000", "bind": "0.0.0.0:0"}, "udp://192.168.1.50:9000?bind=0.0.0.0:0"),
])
def test_the_old_options_build_the_target_their_url_names(options, url):
    built = targets.from_options(**options)
    assert built == targets.parse(url)
    assert targets.parse(built.url) == built  # a target's URL, as a log records it, names it again


def test_a_new_kind_of_target_is_its_class_and_one_entry_in_the_registry(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class LoopTarget(targets.Target):  # what a new module of hil/targets/ holds
        name: str
        SCHEMES = ("loop-board",)
        FORMS = (("loop-board://x", "a board looped back"),)
        RUNTIME = "board"

        @classmethod
        def from_url(cls, url):
            return cls(url.split(())[0])

        @property
        def url(self):
            return f"loop-board://{self.name}"

    with pytest.raises(targets.TargetError, match="loop-board:// is no kind of target"):
        targets.parse("loop-board://x")
    monkeypatch.setattr(targets, "TARGETS", (*targets.TARGETS, LoopTarget))
    assert targets.parse("loop-board://x") == LoopTarget("x")
    assert ("loop-board://x", "a board looped back") in targets.forms()  # hil run -h and bad URLs list it


def test_board_names_the_target_its_url_names():
    assert runner.Board(udp="10.0.0.2:9000").target() == targets.parse("udp://10.0.0.2:9000")
    assert runner.Board(port="/dev/ttyUSB0", baud=57600).target() == targets.parse("serial:///dev/ttyUSB0?baud=57600")


def test_runner_takes_a_target_by_url_and_names_what_flew(tmp_path):
    loaded = scenario.load(SCENARIOS / "hover.yaml")
    result = runner.run(loaded, "inproc://quad_pid", log_path=tmp_path / "run.hillog")
    assert result.passed and result.runtime == "in-process" and result.target == "inproc://quad_pid"
    assert result.log_path == tmp_path / "run.hillog" and flightlog.read(result.log_path).complete
    position = result.trace["position"]
    assert position.shape == (loaded.ticks + 1, 3)
    assert np.array_equal(result.trace["altitude"], -position[:, 2])
    with pytest.raises(KeyError, match="neither a column of the trace .*position.* nor a quantity .*altitude"):
        result.trace["height"]
    with pytest.raises(runner.RunRefused, match="not both"):
        runner.run(loaded, "c://quad_pid", runtime="c")


def test_a_failed_expectation_names_the_tick_it_first_failed_at():
    loaded = scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {
        "duration": 3.0, "expect": [{"name": "at 5 m", "within": {"quantity": "altitude", "after": 1.5, "min": 5}},
                                    {"name": "level", "never_above": {"quantity": "tilt_deg", "bound": 15}}]})
    result = runner.run(loaded, "inproc://")
    assert not result.passed
    assert [(o.name, tick) for o, tick in result.failures()] == [("at 5 m", 1500)]
    assert result.failed_ticks == (1500, None)
    assert "FAILED, 1/2 expectations held" in repr(result)


# ---- what is refused, before anything flies -------------------------------------------------------

def test_hil_run_help_teaches_every_form_of_target():
    for command in ("run", "replay"):
        shown = run_cli(command, "-h")
        assert shown.exit_code == 0 and "--target URL" in shown.output
        for url, what in targets.forms():
            assert url in shown.output and what.split()[0] in shown.output, (command, url)


@pytest.mark.parametrize("url, says", [
    ("quad_pid", "not a target URL"),
    ("ftp://quad_pid", "ftp:// is no kind of target hil knows"),
    ("c://no_such", "no emulated firmware 'no_such' runs as c; those that do: quad_pid"),
    ("c://open_loop", "no emulated firmware 'open_loop' runs as c"),
    ("inproc://quad_pid?pacing=realtime", "inproc:// has no parameter 'pacing' (it takes none)"),
    ("c://quad_pid?pacing=fast", "pacing=fast: give pacing=lockstep or pacing=realtime"),
    ("c://quad_pid?pacing=lockstep&pacing=realtime", "parameter 'pacing' is given twice"),
    ("udp://192.168.1.50", "'192.168.1.50' is not HOST:PORT"),
    ("udp://192.168.1.50:9000?bind=anywhere", "bind: 'anywhere' is not HOST:PORT"),
    ("serial://", "no device: write serial:///dev/ttyACM0"),
    ("serial:///dev/ttyACM0?baud=fast", "baud=fast: give a whole number"),
    ("serial:///dev/ttyACM0?baud=0", "baud=0: give a rate from 1 to 50000000"),
    ("serial:///dev/ttyACM0?parity=E", "serial:// has no parameter 'parity' (it takes baud, pacing)"),
    ("socket://localhost", "'socket://localhost' is not a serial device or pyserial URL"),
    ("cmd://", "is empty: give the command that starts your firmware"),
    ("cmd://my_sitl 'unclosed", "no closing quotation"),
])
def test_a_url_that_names_no_target_is_bad_usage_that_lists_the_forms(url, says):
    result = run_cli("run", str(SCENARIOS / "hover.yaml"), "--target", url)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"--target {url!r}: " in result.output and says in result.output, result.output
    assert all(form in result.output for form, _ in targets.forms())


@pytest.mark.parametrize("scenario_name, options, says", [
    ("hover.yaml", ["--target", "python://open_loop"], "target python://open_loop flies firmware open_loop, and "
                                                        "scenario hover is written for firmware quad_pid"),
    ("hover.yaml", ["--target", "betaflight-sitl://"], "flies firmware quad_pid, which runs as c or python or "
                                                       "in-process, not sitl"),
    ("betaflight_hover.yaml", ["--target", "c://"], "flies Betaflight's SITL with a pilot on its sticks"),
    ("betaflight_hover.yaml", ["--target", "betaflight-sitl://", "--lockstep"], "real time only"),
    ("hover.yaml", ["--target", "serial:///dev/hil-no-such-port"], "serial port /dev/hil-no-such-port does not exist"),
    ("hover.yaml", ["--target", "cmd://hil-no-such-program --udp {udp}"], "'hil-no-such-program' is not found"),
    ("hover.yaml", ["--target", "c://", "--port", "/dev/ttyACM0"], "--target and --port each name what flies"),
    ("hover.yaml", ["--firmware", "c", "--udp", "10.0.0.2:9000"], "cannot be combined with --port or --udp"),
])
def test_a_target_that_cannot_fly_the_scenario_here_is_bad_usage(scenario_name, options, says):
    result = run_cli("run", str(SCENARIOS / scenario_name), *options)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert says in result.output, result.output


def test_replay_refuses_a_bad_target_before_reading_the_log(tmp_path):
    (tmp_path / "not_a_log").write_text("x")
    result = run_cli("replay", str(tmp_path / "not_a_log"), "--target", "udp://nowhere")
    assert result.exit_code == 2 and "--target 'udp://nowhere'" in result.output
