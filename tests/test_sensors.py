"""Sensor models against their specifications: noise density and bias walk (Allan deviation), ISA table."""

import jax
import numpy as np
import pytest

import hil.jaxconfig  # noqa: F401
from hil.models import environment, sensors
from hil.models.environment import Atmosphere

RATE = 100.0  # Hz


def allan_deviation(samples, rate, cluster):
    """Overlapping Allan deviation of a rate signal at averaging time ``cluster / rate``."""
    theta = np.cumsum(samples, axis=0) / rate
    m = cluster
    tau = m / rate
    d = theta[2 * m:] - 2 * theta[m:-m] + theta[:-2 * m]
    return np.sqrt(np.mean(d**2, axis=0) / (2 * tau**2))


def still_imu(noise_density, random_walk, seconds, seed=0):
    params = sensors.ImuParams(period=1 / RATE, gyro_noise_density=noise_density, gyro_bias_random_walk=random_walk,
                               gyro_range=1e9, accel_noise_density=noise_density, accel_bias_random_walk=random_walk,
                               accel_range=1e9)
    truth = sensors.Truth(np.zeros(3), np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3), np.zeros(3),
                          Atmosphere(288.15, 101325.0, 1.225))
    key = jax.random.key(seed)

    @jax.jit
    def run():
        def body(state, k):
            normals = jax.random.normal(jax.random.fold_in(key, k), (sensors.NORMALS_PER_STREAM,))
            state, reading = sensors.imu_sample(params, state, truth, normals)
            return state, reading
        return jax.lax.scan(body, sensors.imu_init(params), np.arange(round(seconds * RATE)))[1]

    return np.asarray(run())


def test_imu_white_noise_density_matches_configuration():
    density = 2e-3
    readings = still_imu(density, 0.0, 2000)
    for tau in (0.1, 1.0, 10.0):
        adev = allan_deviation(readings, RATE, round(tau * RATE))  # six axes, each its own estimate
        expected = density / np.sqrt(tau)
        assert np.mean(adev) == pytest.approx(expected, rel=0.05), tau


def test_imu_bias_random_walk_matches_configuration():
    walk = 1e-3
    readings = still_imu(1e-4, walk, 4000, seed=1)
    tau = 100.0
    adev = allan_deviation(readings, RATE, round(tau * RATE))
    # Rate random walk K shows as K * sqrt(tau / 3); six independent axes, long clusters: ~15 % scatter.
    assert np.mean(adev) == pytest.approx(walk * np.sqrt(tau / 3), rel=0.25)
    # ... and a sensor without a walk stays flat at long tau.
    flat = allan_deviation(still_imu(1e-4, 0.0, 4000, seed=1), RATE, round(tau * RATE))
    assert np.mean(flat) < 0.05 * walk * np.sqrt(tau / 3)


def test_imu_saturates_at_its_range():
    params = sensors.ImuParams(1e-3, 0.0, 0.0, 2.0, 0.0, 0.0, 16.0)
    truth = sensors.Truth(np.zeros(3), np.zeros(3), np.array([1.0, 0, 0, 0]), np.array([5.0, -5.0, 1.0]),
                          np.array([0, 0, -30.0]), Atmosphere(288.15, 101325.0, 1.225))
    _, reading = sensors.imu_sample(params, sensors.imu_init(params), truth, np.zeros(12))
    np.testing.assert_allclose(reading, [2.0, -2.0, 1.0, 0, 0, -16.0])


# U.S. Standard Atmosphere 1976 / ISA table values: altitude (m), pressure (Pa), temperature (K), density (kg/m^3).
ISA_TABLE = [(0.0, 101325.0, 288.15, 1.2250), (1000.0, 89874.6, 281.65, 1.1117), (5000.0, 54019.9, 255.65, 0.73612),
             (11000.0, 22632.1, 216.65, 0.36392), (15000.0, 12044.6, 216.65, 0.19367)]


@pytest.mark.parametrize("altitude, pressure, temperature, density", ISA_TABLE)
def test_isa_matches_the_standard_table(altitude, pressure, temperature, density):
    air = environment.isa(altitude)
    assert float(air.pressure) == pytest.approx(pressure, rel=2e-5)
    assert float(air.temperature) == pytest.approx(temperature, abs=1e-6)
    assert float(air.density) == pytest.approx(density, rel=3e-4)


@pytest.mark.parametrize("altitude, pressure", [(0.0, 101325.0), (1000.0, 89874.6)])
def test_barometer_reads_the_isa_pressure_at_its_altitude(altitude, pressure):
    truth = sensors.Truth(np.array([0, 0, -altitude]), np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3), np.zeros(3),
                          environment.isa(altitude))
    readings = np.array([sensors.baro_sample(sensors.BaroParams(3.0), (), truth, n)[1]
                         for n in np.random.default_rng(0).standard_normal((2000, 12))])
    assert readings[:, 0].mean() == pytest.approx(pressure, abs=0.3)  # 3 Pa noise averaged over 2000 samples
    assert readings[:, 0].std() == pytest.approx(3.0, rel=0.05)
    assert float(environment.pressure_altitude(pressure)) == pytest.approx(altitude, abs=0.05)


def test_magnetometer_rotates_the_earth_field_into_the_body():
    from hil.models import quaternion
    field = np.array([2e-5, 0.0, 4e-5])
    yawed = quaternion.from_euler(0.0, 0.0, np.pi / 2)  # nose east: north is to the left (-y)
    truth = sensors.Truth(np.zeros(3), np.zeros(3), yawed, np.zeros(3), np.zeros(3), environment.isa(0.0))
    _, reading = sensors.mag_sample(sensors.MagParams(field, 0.0), (), truth, np.zeros(12))
    np.testing.assert_allclose(reading, [0.0, -2e-5, 4e-5], atol=1e-15)
