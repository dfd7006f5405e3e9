"""Bad input to ``hil run``, ``hil validate`` and ``hil replay --set``: every case ends in a
one-line message naming the option, file, line or field, and exit 2 (bad input), never a
traceback, a hang or unbounded memory."""

import os
import re
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from support import ROOT, SCENARIOS, hil_command
from hil import cli, scenario, yamlsource

HOVER = SCENARIOS / "hover.yaml"
BASE = HOVER.read_text()


def hil(*args, cwd=ROOT, env=None, timeout=300):
    return subprocess.run(hil_command(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def refused(result, *named):
    """A finished ``hil`` (a subprocess or a CliRunner result): exit 2, each of ``named`` in its
    message, no traceback. Returns the message."""
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for name in named:
        assert name in result.stderr, result.stderr
    return result.stderr


def run_cli(*args):
    """``hil ARGS`` in this process, as a user's shell would run it."""
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- hil run's options, checked before anything is compiled -------------------------------------

@pytest.mark.parametrize("value, says", [("nan", "finite"), ("inf", "finite"), ("1e9", "at most 86400 s"),
                                         ("86400.5", "at most 86400 s"), ("-1", "greater than 0")])
def test_run_length_has_a_limit(value, says):
    refused(run_cli("run", str(HOVER), "--duration", value), "--duration", says)


def test_run_length_is_limited_in_ticks_too(tmp_path):
    path = write(tmp_path, BASE.replace("  rate_hz: 1000\n", "  rate_hz: 100000\n").replace("duration: 20.0", "duration: 86400"))
    refused(hil("validate", str(path)), f"{path}:6: duration: 86400.0 s at 100000 Hz is 8,640,000,000 ticks; the "
                                        "limit is 4,294,967,295 ticks")


@pytest.mark.parametrize("baud", [str(10**20), "0", "-9600"])
def test_baud_rate_has_a_range(baud):
    refused(run_cli("run", str(HOVER), "--port", "loop://", "--baud", baud), "--baud", "50000000")


def test_an_unbalanced_quote_in_the_firmware_command_is_named():
    refused(run_cli("run", str(HOVER), "--firmware-cmd", "my_sitl --name 'hover --udp {udp}"),
            "--firmware-cmd", "no closing quotation")
    # replay checks it before it reads the log
    refused(run_cli("replay", str(HOVER), "--firmware-cmd", "my_sitl 'hover --udp {udp}"),
            "--firmware-cmd", "no closing quotation")


@pytest.mark.parametrize("option", ["--out", "--junit", "--json"])
def test_outputs_that_cannot_be_written_are_refused_before_the_run(option, tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    for target, says in ((tmp_path / "a_file" / "x", "is a file, not a folder"),
                         (tmp_path / "a_folder", "is a directory"),
                         ("/proc/hil-cannot-write-here", "cannot write a file in /proc")):
        refused(run_cli("run", str(HOVER), option, str(target)), option, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert not any((tmp_path / "a_folder").iterdir())


@pytest.mark.parametrize("options, says", [
    (["--udp", "192.168.1.50"], "--udp: '192.168.1.50' is not HOST:PORT"),
    (["--udp", "127.0.0.1:9000", "--bind", "0.0.0.0"], "--bind: '0.0.0.0' is not HOST:PORT"),
    (["--port", "socket://localhost"], "--port 'socket://localhost' is not a serial device or pyserial URL"),
    (["--port", "rfc2217://host:port"], "--port 'rfc2217://host:port'"),
    (["--port", "nonsense://x"], "protocol 'nonsense' not known"),
])
def test_a_link_option_with_a_syntax_error_is_refused_before_compiling_and_leaves_no_log(options, says, tmp_path):
    cache = tmp_path / "cache"
    result = hil("run", str(HOVER), *options, "--out", str(tmp_path / "run.hillog"), env={"HIL_CACHE_DIR": str(cache)})
    refused(result, says)
    assert not (tmp_path / "run.hillog").exists()
    assert not any((cache / "jax").iterdir()) and not (cache / "ticks").exists()  # nothing was compiled


# ---- scenario files: physics, rates, names ------------------------------------------------------

def test_an_inertia_no_rigid_body_has_is_refused(tmp_path):
    path = write(tmp_path, BASE.replace("  mass: 1.5", "  mass: 1.5\n  inertia: [1.0e-12, 0.029, 0.055]"))
    refused(hil("validate", str(path)), f"{path}:15: vehicle.inertia[2]:", "more than the other two moments")


@pytest.mark.parametrize("vehicle, field, says", [
    ("  inertia: [1.0e-12, 1.0e-12, 1.0e-12]", "vehicle.inertia", "no number of substeps (at most 1000) can"),
    ("  motor_time_constant: 1e-5", "vehicle.motor_time_constant", "set physics.substeps to 36 or more"),
])
def test_constants_too_small_for_the_physics_step_are_refused(vehicle, field, says, tmp_path):
    path = write(tmp_path, BASE.replace("  mass: 1.5", "  mass: 1.5\n" + vehicle))
    refused(hil("validate", str(path)), f"{path}:15: {field}:", says)


@pytest.mark.parametrize("rate", ["1e-300", "5e-324"])
def test_a_sensor_rate_whose_period_overflows_is_refused_in_validation(rate, tmp_path):
    path = write(tmp_path, BASE.replace("  imu: {rate_hz: 1000}", f"  imu: {{rate_hz: {rate}}}"))
    refused(hil("validate", str(path)), f"{path}:17: sensors.imu.rate_hz:", "the limit is one every 4,294,967,295 ticks")


@pytest.mark.parametrize("name, says", [('"run\\0name"', "control character"), ("x" * 300, "1 to 100 printable"),
                                        ('"two\\nlines"', "1 to 100 printable"), ('""', "1 to 100 printable")])
def test_a_name_that_cannot_name_a_log_is_refused(name, says, tmp_path):
    path = write(tmp_path, BASE.replace("name: hover\n", f"name: {name}\n"))
    refused(hil("validate", str(path)), f"{path}:3: name:", says)


@pytest.mark.parametrize("name", ["../../../../tmp/x", "/etc/hil", "..", "a/../../b", "ü" * 100])
def test_log_names_stay_in_the_output_folder(name, tmp_path):
    path = cli.default_log_path(name, tmp_path / "runs")
    assert path.parent == tmp_path / "runs" and path.name.endswith(".hillog")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-\d{8}T\d{6}Z\.hillog", path.name), path.name
    assert len(path.name) < 100


# ---- the size and shape of a YAML document -------------------------------------------------------

def test_nesting_deeper_than_the_limit_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, BASE + "description: " + "[" * 10_000 + "]" * 10_000 + "\n")
    line = BASE.count("\n") + 1
    refused(hil("validate", str(path)), f"{path}:{line}: (syntax): nested deeper than 64 levels, the limit")


@pytest.mark.parametrize("expansion", ["aliases", "merge keys"])
def test_alias_bombs_stop_at_the_expansion_limit(expansion, tmp_path):
    if expansion == "aliases":
        bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))
    else:
        bomb = "a0: &a0 {x: 1}\n" + "".join(
            f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}, *a{i - 1}], k{i}: 1}}\n" for i in range(1, 40))
    path = write(tmp_path, bomb)
    message = refused(hil("validate", str(path), timeout=120), f"{path}:", "more than 250,000 values")
    assert len(message.strip().splitlines()) == 1


def test_a_scenario_file_is_read_no_further_than_its_size_limit(tmp_path):
    big = write(tmp_path, BASE + "# " + "x" * (50 << 20) + "\n", "big.yaml")
    for path in (big, "/dev/zero"):
        refused(hil("validate", str(path), timeout=120), f"{path}: (file): larger than 1,048,576 bytes")
    refused(run_cli("run", "/dev/zero"), "/dev/zero: (file): larger than 1,048,576 bytes")


def test_a_long_mission_within_the_limits_validates(tmp_path):
    waypoints = "".join(f"      - {{position: [{i % 10}, {i % 7}, -2], hold: 0}}\n" for i in range(15_000))
    path = write(tmp_path, BASE.replace("      - {position: [0, 0, -2], hold: 1}\n", waypoints))
    assert 500_000 < path.stat().st_size < scenario.MAX_FILE_BYTES
    assert scenario.load(path).firmware.mission.waypoints[-1].position == (9.0, 5.0, -2.0)


def test_unreadable_values_are_named_not_raised(tmp_path):
    for text, says in (("version: 1\nseed: " + "9" * 5000 + "\n", ":2: (syntax): '999"),
                       ("version: !!python/object:os.system {a: 1}\n", ":1: (syntax): the tag"),
                       ("? [1, 2]\n: 3\n", ":1: (syntax): a key must be a plain value"),
                       ("version: 1\nname: \x07\n", ":2: (syntax): character #x0007")):
        path = write(tmp_path, text)
        refused(hil("validate", str(path)), f"{path}{says}")


# ---- numbers as people write them -----------------------------------------------------------------

def test_every_float_form_a_person_writes_is_a_number():
    data, _, _ = yamlsource.load("a: 1e-5\nb: 3e-07\nc: .5\nd: 1_000\ne: 1.5e3\nf: -2E+4\ng: 1.\nh: 1e5x\n")
    assert data == {"a": 1e-5, "b": 3e-7, "c": 0.5, "d": 1000, "e": 1500.0, "f": -20000.0, "g": 1.0, "h": "1e5x"}


def test_a_whole_number_written_as_a_float_is_an_integer():
    loaded = scenario.parse_text(BASE.replace("  rate_hz: 1000\n", "  rate_hz: 1e3\n").replace("seed: 1\n", "seed: 7.0\n"))
    assert loaded.physics.rate_hz == 1000 and type(loaded.physics.rate_hz) is int and loaded.seed == 7
    problems = str(pytest.raises(scenario.ScenarioError, scenario.parse_text, BASE.replace("seed: 1\n", "seed: 1.5\n")).value)
    assert "seed: expected an integer, got 1.5" in problems


def documented_defaults():
    """(section path, key, default as written) for every plain section's key in docs/scenarios.md."""
    text = (ROOT / "docs" / "scenarios.md").read_text().split(scenario.REFERENCE_MARKER)[1]
    found = []
    for block in text.split("### `")[1:]:
        section = block.split("`", 1)[0]
        for key, default in re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| `([^`]*)` \|", block, re.MULTILINE):
            found.append((section, key, default))
    return found


LIST_SECTIONS = ("faults", "expect", "environment.wind.gusts", "firmware.mission.waypoints", "pilot.steps")
# Empty by default, and what the shipped firmware flies needs them filled (a waypoint, a pilot's steps).
FILLED = (("firmware.mission", "waypoints"), ("pilot", "steps"))


@pytest.mark.parametrize("section, key, default", [d for d in documented_defaults()
                                                   if not d[0].startswith(LIST_SECTIONS) and d[:2] not in FILLED])
def test_every_documented_default_pasted_back_validates(section, key, default):
    betaflight = section.startswith(("firmware.betaflight", "pilot"))
    data = yaml.safe_load((SCENARIOS / ("betaflight_hover.yaml" if betaflight else "hover.yaml")).read_text())
    node = data
    for part in ([] if section == "scenario" else section.split(".")):
        node = node.setdefault(part, {})
    node[key] = "PASTED_DEFAULT"
    text = yaml.safe_dump(data, sort_keys=False).replace("PASTED_DEFAULT", default)
    scenario.parse_text(text, f"{section}.{key}: {default}")


# ---- replay --set ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flown(tmp_path_factory):
    """A short flight of the C firmware from a scenario named like a path, run from a scratch folder
    with its own cache directory: the folder, its log and its cache."""
    folder = tmp_path_factory.mktemp("flown")
    data = yaml.safe_load(BASE)
    data.update(name="../../../../tmp/hil-escape", duration=0.2, expect=[])
    (folder / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = hil("run", "s.yaml", cwd=folder, env={"HIL_CACHE_DIR": str(folder / "cache")})
    assert result.returncode == 0, result.stdout + result.stderr
    logs = list(folder.rglob("*.hillog"))
    return folder, logs, result


def test_a_name_like_a_path_writes_its_log_under_runs(flown):
    folder, logs, _ = flown
    assert len(logs) == 1 and logs[0].parent == folder / "runs", logs
    assert logs[0].name.startswith("tmp_hil-escape-")
    assert not list(folder.parent.glob("hil-escape*")) and not os.path.exists("/tmp/hil-escape")


def test_every_cached_artefact_is_in_the_private_cache_directory(flown):
    folder, _, _ = flown
    cache = folder / "cache"
    assert sorted(p.name for p in folder.iterdir()) == ["cache", "runs", "s.yaml"]
    assert {p.name for p in cache.iterdir()} <= {"jax", "ticks", "firmware"}
    assert any(p.name.startswith("hil_quad_pid-") for p in (cache / "firmware").iterdir())
    for directory in [cache, *(p for p in cache.iterdir())]:
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_a_cache_directory_others_can_write_or_own_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = hil("run", str(HOVER), "--out", str(tmp_path / "r.hillog"), env={"HIL_CACHE_DIR": str(shared)})
    refused(result, f"the cache directory {shared} can be written by others")
    assert not (tmp_path / "r.hillog").exists() and not any(shared.iterdir())
    if os.geteuid() != 0:
        return  # only root can give a folder to someone else
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    refused(hil("run", str(HOVER), env={"HIL_CACHE_DIR": str(theirs)}), f"{theirs} belongs to another user")


@pytest.mark.parametrize("change, says", [
    ("x=[unclosed", "expected ',' or ']'"),
    ("vehicle.mass=!!python/object/apply:os.system [echo]", "the tag"),
    ("vehicle.mass=!!python/name:os.system", "could not determine a constructor"),
    ("vehicle.mass=&a [*a]", "nested deeper than 64 levels"),
    ("vehicle..mass=1", "expected KEY=VALUE"),
    ("name.first=1", "name is not a section"),
])
def test_replay_set_with_bad_yaml_is_a_clear_error(flown, change, says):
    _, logs, _ = flown
    refused(hil("replay", str(logs[0]), "--set", change), "--set", says)


def test_replay_set_reads_numbers_as_people_write_them(flown):
    _, logs, _ = flown
    result = hil("replay", str(logs[0]), "--set", "sensors.imu.gyro_noise_density=1e-4")
    assert result.returncode == 1 and "DIFFERENT from tick" in result.stdout, result.stdout + result.stderr
