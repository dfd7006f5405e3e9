"""hil's pytest plugin: a test flies a scenario, and the command line says what flies it.

    def test_hover_holds(hil_run):
        result = hil_run("scenarios/hover.yaml")
        assert result.passed

    pytest --hil-target c://quad_pid                          # CI: the emulated firmware
    pytest --hil-target 'serial:///dev/ttyACM0?baud=921600'    # the bench: a board

Installed with hil, registered through the ``pytest11`` entry point. It adds options
(``--hil-target``, ``--hil-seed``, ``--hil-log-dir``), the ``hil_run`` fixture and the ``hil``
marker, and nothing else: a session that uses none of them runs as it would without hil, and
nothing of hil's runner (nor JAX) is imported until a test flies. docs/testing.md is the guide.
"""

import argparse
import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

LOG_STEM_CHARS = 150  # of a log's name before its number: the test's id and the target
FIRMWARE_LINES = 20  # of a broken-off run's firmware output in the failure message


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to 2**63 - 1")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("hil", "hil: flight software in the loop")
    group.addoption("--hil-target", metavar="URL",
                    help="what hil_run flies, as hil run --target names it: inproc://quad_pid, c://quad_pid, "
                         "udp://HOST:PORT, serial:///dev/ttyACM0?baud=921600 (any pyserial URL), betaflight-sitl://, "
                         "cmd://COMMAND (hil run -h lists them). Default: each scenario's own firmware.")
    group.addoption("--hil-seed", metavar="N", type=_seed,
                    help="fly every scenario with this seed instead of its own (all noise derives from it)")
    group.addoption("--hil-log-dir", metavar="DIR",
                    help="where each flight's log goes, named after the test and the target (default: hil-logs in "
                         "pytest's temporary folder); its path is a property of the test in --junitxml")


def pytest_configure(config):
    config.addinivalue_line("markers", "hil(scenario=None, target=None): the scenario hil_run() flies when it is "
                                       "given none, and the target URL this test flies whatever --hil-target says")
    url = config.getoption("hil_target")
    if url is not None:  # a typo fails the session at once, not each test
        from hil import targets

        try:
            targets.parse(url)
        except targets.TargetError as error:
            raise pytest.UsageError(f"--hil-target {error}") from None


@pytest.fixture
def hil_run(request, record_property, tmp_path_factory):
    """Fly a scenario; a :class:`hil.RunResult` (``result.passed``, ``result.outcomes``,
    ``result.trace["position"]``, ``result.log_path``). A failed flight fails the test with each
    failed expectation, its measured value, bound and tick, and the log's path.

    ``hil_run(scenario=None, *, target=None, check=True, **overrides)``:

    - ``scenario``: a scenario file (a relative path is from pytest's rootdir) or a
      :class:`hil.Scenario`; by default the ``hil`` marker's ``scenario``.
    - ``overrides``: scenario keys to change, as ``hil run --set`` does: ``duration=2``,
      ``vehicle__mass=1.6`` (``__`` for a dot) or ``**{"firmware.gains.rate": [40, 40, 20]}``.
    - ``target``: a target URL; by default the marker's, else ``--hil-target``, else the
      scenario's own firmware. A target that is not here (a serial port that does not exist,
      Betaflight not installed) skips the test, saying why; one that cannot fly the scenario
      skips it when ``--hil-target`` named it, and fails it when the test did.
    - ``check``: False returns a failed flight's result instead of failing the test (for a test
      that a fault is caught).
    """
    marker = request.node.get_closest_marker("hil")
    marked = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and (marker.args or set(marked) - {"scenario", "target"}):
        pytest.fail(f"@pytest.mark.hil takes scenario= and target= only, not {marker.args or sorted(marked)}",
                    pytrace=False)

    def fly(scenario=None, *, target=None, check=True, **overrides):
        from hil import jaxconfig

        jaxconfig.configure()  # before hil's runner brings in JAX, as hil's own entry points do
        from hil import runner, targets

        loaded = _scenario(request.config, scenario if scenario is not None else marked.get("scenario"), overrides)
        flying = _target(request.config, loaded, target if target is not None else marked.get("target"))
        log = _log_path(request.config, tmp_path_factory, request.node.nodeid, flying)
        record_property("hil_log", str(log))
        try:
            with _held(flying):
                result = runner.run(loaded, flying, log_path=log)
        except targets.RunRefused as error:
            log.unlink(missing_ok=True)
            pytest.fail(f"hil cannot fly {loaded.name} on {flying.url}: {error}", pytrace=False)
        if check and not result.passed:
            pytest.fail(failure_message(result), pytrace=False)
        return result

    return fly


def _scenario(config, scenario, overrides: dict):
    """The scenario to fly: loaded (a path from the rootdir), with ``overrides`` and
    ``--hil-seed`` applied; a scenario refused fails the test with each problem."""
    from hil import Scenario, scenario as scenarios

    if scenario is None:
        pytest.fail("hil_run needs a scenario: hil_run('scenarios/hover.yaml'), or "
                    "@pytest.mark.hil(scenario='scenarios/hover.yaml') on the test", pytrace=False)
    changes = {key.replace("__", "."): value for key, value in overrides.items()}
    seed = config.getoption("hil_seed")
    if seed is not None and "seed" not in changes:
        changes["seed"] = seed
    try:
        loaded = scenario if isinstance(scenario, Scenario) else scenarios.load(config.rootpath / scenario)
        return scenarios.with_changes(loaded, changes, option="hil_run")
    except scenarios.ScenarioError as error:
        pytest.fail("\n".join(str(problem) for problem in error.problems), pytrace=False)


def _target(config, scenario, url: str | None):
    """What flies ``scenario``: ``url`` (the test's), else ``--hil-target``, else its own firmware.
    Skips a test whose target is not here, or that the session's target cannot fly."""
    from hil import targets

    named_by_test = url is not None
    url = url if named_by_test else config.getoption("hil_target")
    try:
        chosen = targets.parse(url) if url is not None else targets.default(scenario)
        flying = chosen.for_scenario(scenario)
    except targets.RunRefused as error:
        if named_by_test or isinstance(error, targets.TargetError):
            pytest.fail(str(error), pytrace=False)
        pytest.skip(f"{url} does not fly {scenario.name}: {error}")
    missing = flying.absent()
    if missing is not None:
        pytest.skip(f"target {flying.url} is not here: {missing}")
    return flying


def _log_path(config, tmp_path_factory, nodeid: str, target) -> Path:
    """A new log file for one flight, named after the test and the target and numbered: the first
    number free is taken by making the file, so no two flights share a log, whatever runs at once
    (pytest -n, two sessions on one folder)."""
    from hil import flightlog

    given = config.getoption("hil_log_dir")
    folder = config.invocation_params.dir / given if given else tmp_path_factory.getbasetemp() / "hil-logs"
    return flightlog.claim(folder, flightlog.file_name(f"{nodeid}-{target.url}", LOG_STEM_CHARS), numbered=True)


@contextmanager
def _held(target):
    """The target for this flight alone while it flies, across processes: a board, or Betaflight's
    fixed ports, serves one run at a time, so with pytest -n the runs on it take turns. A target
    hil starts on a free port of its own (c://, python://, cmd://, inproc://) is not held."""
    shared = target.shared()
    if shared is None:
        yield
        return
    digest = hashlib.sha256(shared.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"hil-target-{os.getuid()}-{digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def failure_message(result) -> str:
    """Why a flight failed: each failed expectation with its measured value, bound and tick, how
    the run broke off (with the firmware's last lines), and the log."""
    rate = result.scenario.physics.rate_hz
    held = sum(o.passed for o in result.outcomes)
    lines = [f"{result.scenario.name} on {result.target} FAILED: {held}/{len(result.outcomes)} expectations held"]
    for outcome, tick in result.failures():
        at = "" if tick is None else f", first failed at tick {tick} (t = {tick / rate:g} s)"
        lines.append(f"  FAIL {outcome.name}: measured {outcome.measured}, bound {outcome.bound}{at}")
    if result.failure:
        lines.append(f"  the run broke off after {result.trace.ticks_done} ticks: {result.failure}")
        tail = result.firmware_output.splitlines()[-FIRMWARE_LINES:]
        lines += [f"  firmware | {line}" for line in tail]
    lines.append(f"flight log: {result.log_path}")
    return "\n".join(lines)
