"""hil's pytest plugin (hil.pytest_plugin), run as a team runs it: a test file of their own in a
fresh pytest process (pytester), the plugin found through its entry point, the target chosen
on the command line."""

import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from support import ROOT, SCENARIOS
from test_targets import board
from hil import flightlog, pytest_plugin, scenario, targets

pytest_plugins = ["pytester"]

# A team's test file: the same file for every target.
TEST_FILE = '''
import pytest


def test_hover_holds(hil_run):
    result = hil_run("scenarios/hover.yaml")
    assert result.passed
    assert [o.name for o in result.outcomes] == ["stays level", "stays over home"]
    assert result.trace["position"].shape == (result.scenario.ticks + 1, 3)
    assert result.log_path.exists()


@pytest.mark.hil(scenario="scenarios/hover.yaml", target="inproc://quad_pid")
def test_a_heavier_vehicle_stays_level_in_the_simulation(hil_run):
    result = hil_run(vehicle__mass=1.6)
    assert result.target == "inproc://quad_pid" and result.scenario.vehicle.mass == 1.6
'''

EXPECT = [{"name": "stays level", "never_above": {"quantity": "tilt_deg", "bound": 15}},
          {"name": "stays over home", "within": {"quantity": "north", "after": 0, "min": -0.5, "max": 0.5}}]
CLIMB = {"name": "climbs to 5 m", "within": {"quantity": "altitude", "after": 2.0, "min": 5}}


@pytest.fixture
def team(pytester):
    """A team's folder: TEST_FILE and a 3 s hover at scenarios/hover.yaml; ``team(expect)`` writes
    the scenario with other expectations. Returns the scenario's path."""
    pytester.makepyfile(test_hover=TEST_FILE)

    def write(expect=EXPECT):
        data = yaml.safe_load((SCENARIOS / "hover.yaml").read_text())
        data.update(duration=3.0, expect=expect)
        path = pytester.path / "scenarios" / "hover.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def run(pytester, *options):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *options, timeout=600)


@pytest.mark.parametrize("target", ["inproc://quad_pid", "c://quad_pid", "pty"])
def test_the_same_test_file_passes_on_every_target(pytester, team, target):
    path = team()
    if target == "pty":  # the C firmware as a board on its own pseudo-terminal: a serial port
        with board("pty", scenario.load(path)) as device:
            result = run(pytester, "--hil-target", f"serial://{device}?pacing=lockstep")
    else:
        result = run(pytester, "--hil-target", target)
    result.assert_outcomes(passed=2)


def test_a_serial_port_that_does_not_exist_skips_and_says_why(pytester, team):
    team()
    result = run(pytester, "--hil-target", "serial:///dev/hil-no-such-port", "-k", "test_hover_holds")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*target serial:///dev/hil-no-such-port?baud=921600 is not here: serial "
                                 "port /dev/hil-no-such-port does not exist*"])


def test_a_failed_flight_names_the_expectation_tick_and_log_and_junit_keeps_the_log(pytester, team):
    team(EXPECT + [CLIMB])
    result = run(pytester, "--hil-target", "inproc://quad_pid", "--hil-seed", "7", "--hil-log-dir", "logs",
                 "--junitxml", "report.xml")
    result.assert_outcomes(failed=2)  # the marked test flies the same scenario
    output = result.stdout.str()
    log = pytester.path / "logs" / "test_hover.py_test_hover_holds-inproc_quad_pid-1.hillog"
    for line in ("hover on inproc://quad_pid FAILED: 2/3 expectations held",
                 "FAIL climbs to 5 m: measured ",
                 " m, bound [5, inf] m from 2 s, first failed at tick 2000 (t = 2 s)",
                 f"flight log: {log}"):
        assert line in output, line
    assert "Traceback" not in output and "def fly(" not in output  # the message alone, not hil's code
    assert flightlog.read(log).header["seed"] == 7 and flightlog.read(log).complete
    report = ElementTree.parse(pytester.path / "report.xml")
    logged = {case.get("name"): [p.get("value") for p in case.iter("property") if p.get("name") == "hil_log"]
              for case in report.iter("testcase")}
    assert logged["test_hover_holds"] == [str(log)]
    assert logged["test_a_heavier_vehicle_stays_level_in_the_simulation"] == [
        str(pytester.path / "logs" / "test_hover.py_test_a_heavier_vehicle_stays_level_in_the_simulation-"
                                     "inproc_quad_pid-1.hillog")]


def test_sessions_at_once_never_share_a_log(pytester, team):
    """What pytest -n does: sessions flying the same test into one log folder at the same time."""
    team()
    sessions = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k",
                                  "test_hover_holds", "--hil-target", "c://quad_pid", "--hil-log-dir", "logs",
                                  "--basetemp", str(pytester.path / f"tmp{i}")],
                                 cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for i in range(2)]
    outputs = [session.communicate(timeout=600)[0] for session in sessions]
    assert [session.returncode for session in sessions] == [0, 0], outputs
    logs = sorted((pytester.path / "logs").iterdir())
    assert [log.name for log in logs] == [f"test_hover.py_test_hover_holds-c_quad_pid-{n}.hillog" for n in (1, 2)]
    assert all(flightlog.read(log).complete for log in logs)


def test_a_board_flies_one_test_at_a_time_and_a_started_firmware_is_not_held():
    board_target = targets.parse("serial:///dev/ttyACM0")
    order = []

    def second():
        with pytest_plugin._held(board_target):
            order.append("second")

    with pytest_plugin._held(board_target):
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(0.5)  # it waits for the board however long this holds it
        order.append("first")
    waiting.join()
    assert order == ["first", "second"]
    with pytest_plugin._held(targets.parse("c://quad_pid")), pytest_plugin._held(targets.parse("c://quad_pid")):
        pass  # each run of c:// has a port of its own: nothing to wait for


@pytest.mark.slow  # four 20 s flights
def test_the_example_a_team_copies_passes_in_the_simulation(pytester):
    shutil.copy(ROOT / "examples" / "test_hover.py", pytester.path)
    shutil.copytree(SCENARIOS, pytester.path / "scenarios")
    run(pytester, "--hil-target", "inproc://").assert_outcomes(passed=4)


def test_a_bad_target_url_stops_the_session_listing_the_forms(pytester, team):
    team()
    result = run(pytester, "--hil-target", "serail:///dev/ttyACM0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-target 'serail:///dev/ttyACM0': serail:// is no kind of target hil knows*",
                                 "*c://quad_pid*", "*serial:///dev/ttyACM0?baud=921600*"])


def test_a_session_that_flies_nothing_loads_nothing_of_hil_s(pytester):
    """The plugin adds options, a fixture and a marker: a test suite that uses none of them runs
    as it would without hil (nothing of its runner, nor JAX, imported)."""
    pytester.makepyfile(test_plain='''
        import sys

        def test_nothing_heavy_is_loaded(request):
            assert "jax" not in sys.modules and "hil.runner" not in sys.modules
            assert request.config.getoption("hil_target") is None
    ''')
    run(pytester).assert_outcomes(passed=1)
