"""Sensor models against their specifications: noise density and bias walk (Allan deviation), ISA table."""

import jax
import numpy as np
import pytest
import yaml

from hil import scenario
from hil.models import environment, sensors
from hil.models.environment import Atmosphere
from hil.sim import Simulation
from hil.tick import noise

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
            normals = noise.normals(noise.tick_key(key, k), 0, 12)  # the tick's own draws
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


# U.S. Standard Atmosphere 1976, the table by geometric altitude (m): pressure (Pa), temperature (K), density
# (kg/m^3), printed to five significant figures. Below 32 km it is the ISA (ISO 2533).
ISA_TABLE = [(0.0, 101325.0, 288.150, 1.2250), (1000.0, 89876.0, 281.651, 1.1117), (5000.0, 54048.0, 255.676, 0.73643),
             (11000.0, 22699.0, 216.774, 0.36480), (15000.0, 12111.0, 216.650, 0.19476)]


@pytest.mark.parametrize("altitude, pressure, temperature, density", ISA_TABLE)
def test_isa_matches_the_standard_table_at_geometric_altitudes(altitude, pressure, temperature, density):
    air = environment.isa(altitude)
    assert float(air.pressure) == pytest.approx(pressure, rel=1e-4)  # a unit of the last printed figure
    assert float(air.temperature) == pytest.approx(temperature, abs=1e-3)
    assert float(air.density) == pytest.approx(density, rel=3e-4)


def test_geopotential_height_of_a_geometric_altitude():
    # The 1976 standard's own pairs: 11,019 m geometric is the 11,000 m geopotential tropopause.
    assert environment.geopotential_height(11019.1) == pytest.approx(11000.0, abs=0.1)
    assert environment.geopotential_height(5000.0) == pytest.approx(4996.07, abs=0.01)


@pytest.mark.parametrize("altitude, pressure", [(0.0, 101325.0), (1000.0, 89876.0)])
def test_barometer_reads_the_isa_pressure_at_its_altitude(altitude, pressure):
    truth = sensors.Truth(np.array([0, 0, -altitude]), np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3), np.zeros(3),
                          environment.isa(altitude))
    readings = np.array([sensors.baro_sample(sensors.BaroParams(3.0), (), truth, n)[1]
                         for n in np.random.default_rng(0).standard_normal((2000, 12))])
    assert readings[:, 0].mean() == pytest.approx(pressure, abs=1.0)  # the table's figures; 3 Pa noise averaged
    assert readings[:, 0].std() == pytest.approx(3.0, rel=0.05)
    # A firmware's pressure altitude is the ISA's geopotential height, as avionics compute it.
    assert float(environment.pressure_altitude(pressure)) == pytest.approx(environment.geopotential_height(altitude),
                                                                          abs=0.1)


def first_readings(**sections):
    """The IMU and barometer readings of tick 0 of a noiseless scenario with ``sections`` (an open-loop firmware)."""
    text = yaml.safe_dump({
        "version": 1, "name": "first-sample", "duration": 0.01,
        "sensors": {"imu": {"rate_hz": 1000, "gyro_noise_density": 0, "gyro_bias_random_walk": 0,
                            "accel_noise_density": 0, "accel_bias_random_walk": 0},
                    "baro": {"rate_hz": 50, "noise": 0}},
        "firmware": {"name": "open_loop", "runs": "in-process"}, **sections})
    simulation = Simulation(scenario.parse_text(text))
    tick = simulation.compile()
    _, row = tick.advance(tick.initial)
    (imu, imu_size), (baro, baro_size) = simulation.layout["reading.imu"], simulation.layout["reading.baro"]
    return np.asarray(row[imu:imu + imu_size]), np.asarray(row[baro:baro + baro_size])


def test_the_first_accelerometer_sample_reads_the_initial_states_specific_force():
    hover = float(np.sqrt(1.5 * environment.GRAVITY / (4 * 8.5e-6)))  # the default vehicle's hover rotor speed
    falling, _ = first_readings(environment={"ground": False}, initial={"position": [0, 0, -100]})
    standing, _ = first_readings()
    hovering, _ = first_readings(environment={"ground": False},
                                 initial={"position": [0, 0, -10], "rotor_speed": hover})
    np.testing.assert_allclose(falling[3:], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(standing[3:], [0.0, 0.0, -environment.GRAVITY], atol=1e-6)
    thinner = float(environment.isa(10.0).density) / environment.SEA_LEVEL_DENSITY  # the rotors' thrust at 10 m
    np.testing.assert_allclose(hovering[3:], [0.0, 0.0, -environment.GRAVITY * thinner], atol=1e-9)


def test_the_barometer_at_5000_m_reads_the_standard_tables_pressure():
    _, baro = first_readings(environment={"ground": False, "home_altitude": 5000.0}, initial={"position": [0, 0, 0]})
    assert baro[0] == pytest.approx(54048.0, abs=1.0)  # geopotential height taken as geometric reads 28 Pa low
    assert baro[1] == pytest.approx(255.676, abs=1e-3)


def test_magnetometer_rotates_the_earth_field_into_the_body():
    from hil.models import quaternion
    field = np.array([2e-5, 0.0, 4e-5])
    yawed = quaternion.from_euler(0.0, 0.0, np.pi / 2)  # nose east: north is to the left (-y)
    truth = sensors.Truth(np.zeros(3), np.zeros(3), yawed, np.zeros(3), np.zeros(3), environment.isa(0.0))
    _, reading = sensors.mag_sample(sensors.MagParams(field, 0.0), (), truth, np.zeros(12))
    np.testing.assert_allclose(reading, [0.0, -2e-5, 4e-5], atol=1e-15)
