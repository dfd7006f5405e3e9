"""Changing a scenario's keys before flying it: ``hil run --set`` and ``hil replay --set`` on the
command line, :func:`hil.scenario.with_changes` from Python; one function behind all three."""

import dataclasses
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from support import ROOT, SCENARIOS, hil_command
from hil import cli, flightlog, scenario

HOVER = SCENARIOS / "hover.yaml"


def run_cli(*args):
    """``hil ARGS`` in this process, as a user's shell would run it."""
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def refused(result, *named):
    """Exit 2, every one of ``named`` in the message, no traceback; returns the message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for name in named:
        assert name in result.stderr, result.stderr
    return result.stderr


# ---- with_changes from Python ---------------------------------------------------------------------

def test_changes_from_python_are_validated_and_become_the_scenarios_text():
    hover = scenario.load(HOVER)
    changed = scenario.with_changes(hover, {"vehicle.mass": np.float64(1.6), "firmware.gains.rate": (40, 40, 20),
                                            "sensors.gps.rate_hz": 5})
    assert changed.vehicle.mass == 1.6 and changed.firmware.gains.rate == (40.0, 40.0, 20.0)
    assert changed.sensors.gps.rate_hz == 5 and changed.sensors.gps.latency == hover.sensors.gps.latency
    # What a flight log records is the changed scenario, whole: read back, it is the same scenario.
    assert scenario.parse_text(changed.source) == changed
    assert dataclasses.replace(changed, vehicle=hover.vehicle, firmware=hover.firmware,
                               sensors=hover.sensors) == hover


def test_changes_as_command_line_strings_read_values_as_yaml():
    hover = scenario.load(HOVER)
    changed = scenario.with_changes(hover, ["vehicle.mass=1.6", "firmware.gains.rate=[40, 40, 20]", "name='1e5'",
                                            "sensors.imu.gyro_noise_density=1e-4"], option="--set")
    assert (changed.vehicle.mass, changed.firmware.gains.rate) == (1.6, (40.0, 40.0, 20.0))
    assert changed.sensors.imu.gyro_noise_density == 1e-4
    assert changed.name == "1e5"  # quoted in the file, a string, and still one in the text written back
    assert scenario.parse_text(changed.source) == changed


def test_a_list_item_is_changed_by_its_index():
    failing = scenario.load(SCENARIOS / "motor_failure.yaml")
    changed = scenario.with_changes(failing, {"faults.0.start": 9.5, "faults.0.motor.efficiency": 0.25})
    assert (changed.faults[0].start, changed.faults[0].motor.efficiency) == (9.5, 0.25)
    assert changed.faults[0].duration == failing.faults[0].duration


def test_a_missing_section_is_added_and_a_null_one_filled():
    text = HOVER.read_text().replace("  gps: {rate_hz: 10, latency: 0.05}\n", "  gps: null\n")
    text = text.replace("name: quad_pid", "name: open_loop").replace("  mission:\n    waypoints:\n"
                                                                       "      - {position: [0, 0, -2], hold: 1}\n", "")
    base = scenario.parse_text(text)
    assert base.sensors.gps is None and "environment" not in base.source
    changed = scenario.with_changes(base, {"sensors.gps.rate_hz": 10,
                                           "environment.wind.turbulence.intensity": [0.5, 0.5, 0.2]})
    assert changed.sensors.gps.rate_hz == 10 and changed.environment.wind.turbulence.intensity == (0.5, 0.5, 0.2)
    assert changed.environment.wind.turbulence.time_constant == base.environment.wind.turbulence.time_constant


def test_the_seed_and_duration_a_scenario_flies_are_kept():
    hover = scenario.load(HOVER)
    from hil import runner

    overridden = runner.with_overrides(hover, seed=7, duration=12.0)
    changed = scenario.with_changes(overridden, {"vehicle.mass": 1.6})
    assert (changed.seed, changed.duration) == (7, 12.0)
    assert scenario.with_changes(changed, {"seed": 8}).seed == 8


def test_no_changes_keep_the_file_as_written():
    hover = scenario.load(HOVER)
    assert scenario.with_changes(hover, {}) is hover
    assert hover.source.startswith("# Take off from the ground")


def test_a_scenario_changed_behind_its_text_is_refused():
    edited = dataclasses.replace(scenario.load(HOVER), expect=[])
    with pytest.raises(scenario.ScenarioError, match="differs from the text it was read from"):
        scenario.with_changes(edited, {"vehicle.mass": 1.6})


@pytest.mark.parametrize("changes, says", [
    ({"vehicle.mas": 1.6}, "with_changes vehicle.mas=1.6: vehicle.mas: unknown key (did you mean 'mass'?)"),
    ({"vehicle.mass": -1}, "with_changes vehicle.mass=-1: vehicle.mass: must be greater than 0 kg, got -1"),
    ({"vehicle.mass": "heavy"}, "vehicle.mass: expected a number, got 'heavy'"),
    ({"name.first": 1}, "with_changes name.first=1: name.first: name is not a section"),
    ({"expect.9.name": "x"}, "expect.9.name: expect is a list of 5: give an index from 0 to 4"),
    ({"vehicle..mass": 1}, "expected a dotted key"),
])
def test_refusals_name_the_change_and_the_key(changes, says):
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.with_changes(scenario.load(HOVER), changes)
    assert says in str(caught.value)


def test_a_problem_across_keys_names_every_change():
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.with_changes(scenario.load(HOVER), {"vehicle.mass": 1e-9, "vehicle.motor_time_constant": 0.05})
    assert "with_changes vehicle.mass=1e-09, vehicle.motor_time_constant=0.05: physics.substeps: " in str(caught.value)


# ---- hil run --set ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, says", [
    ("vehicle.mas=1.6", "vehicle.mas: unknown key (did you mean 'mass'?)"),
    ("name.first=1", "name is not a section"),
    ("vehicle.mass=[unclosed", "vehicle.mass: the value is not YAML hil reads: expected ',' or ']'"),
    ("vehicle.mass=!!python/name:os.system", "could not determine a constructor"),
    ("vehicle.mass=0", "vehicle.mass: must be greater than 0 kg"),
    ("firmware.gains.rate=[40, 40]", "firmware.gains.rate: expected a list of 3 numbers"),
    ("vehicle.mass", "expected KEY=VALUE"),
])
def test_run_set_refuses_with_the_option_and_the_key(change, says, tmp_path):
    out = tmp_path / "r.hillog"
    refused(run_cli("run", str(HOVER), "--set", change, "--out", str(out)), f"--set {change!r}", says)
    assert not out.exists()


def test_run_set_and_duration_are_checked_together():
    """--set applies to the file, --duration after it: the expectations must fit the shorter run."""
    refused(run_cli("run", str(HOVER), "--duration", "2", "--set", "vehicle.mass=1.6"),
            "expect[0].within.after: 8.0 s is past the end of the run (2.0 s)")


@pytest.fixture(scope="module")
def flown_with_set(tmp_path_factory):
    """A short in-process flight of hover with changed mass and rate gains, and a new seed."""
    log = tmp_path_factory.mktemp("set") / "changed.hillog"
    completed = subprocess.run(hil_command("run", str(HOVER), "--firmware", "in-process", "--duration", "2",
                                           "--seed", "7", "--set", "vehicle.mass=1.6", "--set",
                                           "firmware.gains.rate=[40,40,20]", "--set", "expect=[]",
                                           "--out", str(log), "-q"),
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return log


def test_the_log_records_the_scenario_as_flown(flown_with_set):
    header = flightlog.LogReader(flown_with_set).header
    assert (header["seed"], header["duration"]) == (7, 2.0)
    logged = scenario.parse_text(header["scenario_text"])
    assert logged.vehicle.mass == 1.6 and logged.firmware.gains.rate == (40.0, 40.0, 20.0) and logged.expect == []


def test_a_run_flown_with_set_replays_bit_identically(flown_with_set):
    completed = subprocess.run(hil_command("replay", str(flown_with_set)), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.startswith("bit-identical: 2001 ticks compared")
    # Against the file's mass the same commands fly otherwise: the log holds the changed scenario.
    completed = subprocess.run(hil_command("replay", str(flown_with_set), "--set", "vehicle.mass=1.5"),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1 and completed.stdout.startswith("DIFFERENT from tick"), completed.stdout
