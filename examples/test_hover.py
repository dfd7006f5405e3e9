"""Flight tests a team writes with hil's pytest plugin: copy this file into your tests and run it
unchanged against the emulated firmware in CI and against your board on the bench.

    pytest examples/test_hover.py --hil-target c://quad_pid                          # CI
    pytest examples/test_hover.py --hil-target 'serial:///dev/ttyACM0?baud=921600'    # the bench

Scenario paths are relative to pytest's rootdir. A failed flight fails its test with each
failed expectation, its measured value, its bound and the tick, and the flight log's path (also
a property of the test in --junitxml). docs/testing.md is the guide.
"""

import numpy as np
import pytest


def test_hover_holds(hil_run):
    result = hil_run("scenarios/hover.yaml")
    assert result.passed


def test_hover_settles_and_stays_still(hil_run):
    """The trace, by field name: what the scenario's expectations do not say, a test can."""
    result = hil_run("scenarios/hover.yaml")
    settled = result.trace.time >= 10.0
    altitude = result.trace["altitude"][settled]
    velocity = result.trace["velocity"][settled]
    assert altitude.max() - altitude.min() < 0.4  # m: holds its height, wherever its estimate settled it
    assert np.abs(velocity).max() < 0.6  # m/s: no drift, no oscillation


@pytest.mark.hil(scenario="scenarios/hover.yaml")
def test_a_heavier_vehicle_still_holds(hil_run):
    """The marker names the scenario; keyword arguments change it as hil run --set does
    (``__`` for a dot, or ``**{"vehicle.mass": 1.65}``)."""
    hil_run(vehicle__mass=1.65)


@pytest.mark.hil(scenario="scenarios/motor_failure.yaml")
def test_a_motor_at_half_thrust_is_survived(hil_run):
    result = hil_run()
    weak = (result.trace.time >= 10.0) & (result.trace.time < 14.0)
    assert result.trace["command"][weak, 0].mean() > result.trace["command"][weak, 1:].mean()  # works motor 0 harder
