"""Same scenario and seed: bit-identical histories; noise streams independent of one another."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from hil import runner, scenario


def fly(path, **overrides):
    return runner.run(runner.with_overrides(scenario.load(path), **overrides), runtime="in-process")


def test_two_runs_of_a_scenario_are_bit_identical(scenario_file):
    path = scenario_file("wind_gust.yaml", duration=4.0, expect=[])
    first, second = fly(path), fly(path)
    assert first.trace.rows.tobytes() == second.trace.rows.tobytes()
    assert np.any(first.trace.column("position")[:, 2] < -0.5)  # it flew, with turbulence and noise in play


def test_a_different_seed_changes_the_sensor_noise(scenario_file):
    path = scenario_file("hover.yaml", duration=1.0, expect=[])
    one, other = fly(path, seed=1), fly(path, seed=2)
    imu_one, imu_other = one.trace.column("reading.imu"), other.trace.column("reading.imu")
    assert np.all(imu_one[1:] != imu_other[1:])
    # Before arming the vehicle sits still: the true state is the same, only the noise differs.
    np.testing.assert_array_equal(one.trace.column("position"), other.trace.column("position"))


@pytest.mark.slow
def test_adding_a_sensor_leaves_the_other_sensors_noise_unchanged(scenario_file):
    still = {"firmware": {"name": "open_loop", "throttle": [0.0, 0.0, 0.0, 0.0]}, "duration": 1.0, "expect": []}
    imu_only = scenario_file("hover.yaml", "imu.yaml", sensors={"imu": {"rate_hz": 1000}}, **still)
    with_more = scenario_file("hover.yaml", "more.yaml", sensors={"imu": {"rate_hz": 1000}, "mag": {"rate_hz": 100},
                                                                  "gps": {"rate_hz": 10}}, **still)
    a, b = fly(imu_only), fly(with_more)
    assert a.trace.column("reading.imu").tobytes() == b.trace.column("reading.imu").tobytes()
    assert np.any(a.trace.column("reading.imu")[:, 0] != 0.0)


def test_tick_noise_has_the_bits_of_stock_jax():
    """hil lowers threefry without loops on CPU for speed; the random bits must not change: the
    normals are stock JAX's float32 ones, widened."""
    from hil.tick import noise
    ours = np.asarray(jax.jit(lambda: noise.normals(noise.tick_key(jax.random.key(11), 1234), 19, 12))())
    stock = subprocess.run([sys.executable, "-c", (
        "import jax, numpy as np; jax.config.update('jax_enable_x64', True); "
        "k = jax.random.fold_in(jax.random.fold_in(jax.random.key(11), 1234), 19); "
        "print(repr(np.asarray(jax.random.normal(k, (12,), dtype='float32')).astype(float).tolist()))")],
        capture_output=True, text=True, check=True).stdout
    np.testing.assert_array_equal(ours, np.array(eval(stock)))


def test_nothing_compiles_during_a_run(scenario_file):
    before = runner.compilations()
    jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0))  # the counter does see a compilation
    assert runner.compilations() > before
    result = fly(scenario_file("hover.yaml", duration=2.0, expect=[]))
    assert result.compilations_during_run == 0
