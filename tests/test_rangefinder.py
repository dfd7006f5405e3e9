"""The downward rangefinder: range against geometry at several tilts, its limits, its noise, and a
firmware that ignores it flying beside it."""

import numpy as np
import pytest

from hil import runner, scenario
from hil.models import quaternion, rangefinder
from hil.models.environment import isa
from hil.models.sensors import Truth
from support import SCENARIOS

PARAMS = rangefinder.RangefinderParams(np.float64(0.0), np.float64(0.05), np.float64(12.0),
                                       np.float64(np.cos(np.radians(30.0))))


def reading(height, roll_deg=0.0, pitch_deg=0.0, yaw_deg=0.0, params=PARAMS, normal=0.0):
    attitude = quaternion.from_euler(*np.radians([roll_deg, pitch_deg, yaw_deg]))
    truth = Truth(np.array([3.0, -2.0, -height]), np.zeros(3), attitude, np.zeros(3), np.zeros(3), isa(0.0))
    _, value = rangefinder.sample(params, (), truth, np.full(12, normal))
    return np.asarray(value)


@pytest.mark.parametrize("roll, pitch, yaw", [(0, 0, 0), (10, 0, 45), (0, -20, 0), (15, 12, 170), (-21, 20, -90)])
def test_the_range_is_the_height_over_the_cosine_of_the_tilt(roll, pitch, yaw):
    # The body's down axis makes an angle with the vertical whose cosine is cos(roll) cos(pitch);
    # yaw turns the beam about the vertical and changes nothing.
    distance, valid = reading(4.0, roll, pitch, yaw)
    assert valid == 1.0
    assert distance == pytest.approx(4.0 / (np.cos(np.radians(roll)) * np.cos(np.radians(pitch))), rel=1e-12)


def test_no_return_beyond_the_tilt_limit_the_range_or_with_the_ground_behind():
    assert reading(4.0, 29.9)[1] == 1.0
    assert list(reading(4.0, 30.1)) == [0.0, 0.0]
    assert list(reading(4.0, 25.0, 25.0)) == [0.0, 0.0]  # each under the limit, together beyond it
    assert list(reading(12.5)) == [0.0, 0.0]
    assert list(reading(0.04)) == [0.0, 0.0]
    assert list(reading(-1.0)) == [0.0, 0.0]  # below the ground plane: the ground is behind the beam
    assert list(reading(4.0, 120.0)) == [0.0, 0.0]  # upside down


def test_noise_is_added_to_a_valid_distance_only():
    noisy = rangefinder.RangefinderParams(np.float64(0.05), PARAMS.min_range, PARAMS.max_range, PARAMS.cos_tilt_limit)
    assert reading(4.0, params=noisy, normal=2.0)[0] == pytest.approx(4.1, rel=1e-12)
    assert list(reading(4.0, 40.0, params=noisy, normal=2.0)) == [0.0, 0.0]


def _resting(seed: int, **sensor):
    """The vehicle on its feet with its motors off, the rangefinder sampling at 1 kHz."""
    return scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {
        "seed": seed, "duration": 3.0, "expect": [], "firmware": {"name": "open_loop", "throttle": [0, 0, 0, 0]},
        "sensors": {"imu": {"rate_hz": 1000}, "rangefinder": {"rate_hz": 1000, **sensor}}})


def test_through_the_tick_the_noise_has_the_scenarios_mean_and_deviation():
    noise = 0.05
    result = runner.run(_resting(5, noise=noise), runtime="in-process")
    readings = result.trace.column("reading.rangefinder")
    fresh = result.trace.column("fresh")[:, 1]
    assert fresh.all() and (readings[:, 1] == 1.0).all()
    heights = -result.trace.column("position")[:, 2]
    tilt_cosines = np.array([quaternion.to_matrix(q)[2, 2] for q in result.trace.column("attitude")])
    errors = readings[:, 0] - heights / tilt_cosines
    samples = len(errors)
    assert abs(errors.mean()) < 4 * noise / np.sqrt(samples)
    # The sample standard deviation of n normal draws has a relative spread of 1/sqrt(2 (n - 1)).
    assert abs(errors.std(ddof=1) / noise - 1.0) < 4 / np.sqrt(2 * (samples - 1))
    # Successive errors are independent draws: their lag-1 correlation is within noise of zero.
    assert abs(np.corrcoef(errors[:-1], errors[1:])[0, 1]) < 4 / np.sqrt(samples)
    other = runner.run(_resting(6, noise=noise), runtime="in-process").trace.column("reading.rangefinder")[:, 0]
    assert not np.array_equal(other, readings[:, 0])  # the seed drives it


@pytest.mark.slow
def test_the_c_firmware_ignores_a_rangefinder_it_does_not_need_and_flies_the_hover():
    hover = scenario.load(SCENARIOS / "hover.yaml")
    with_rangefinder = scenario.with_changes(hover, {"sensors.rangefinder": {"rate_hz": 50}})
    result = runner.run(with_rangefinder, runtime="c")
    assert result.passed, (result.failure, [o for o in result.outcomes if not o.passed])
    valid = result.trace.column("reading.rangefinder")[:, 1]
    assert valid[-1] == 1.0 and result.trace.column("reading.rangefinder")[-1, 0] == pytest.approx(2.0, abs=0.4)
