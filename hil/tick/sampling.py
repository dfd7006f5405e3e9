"""The sensors: their registry, their noise streams, and the stage that samples those due at a tick.

A sensor kind is one :class:`hil.models.sensors.SensorKind` in :data:`KINDS`: its reading size, its fixed PRNG
stream id, how its parameters come from its scenario section, and its model
(``sample(params, state, truth, normals) -> (state, reading)``, :mod:`hil.models.sensors`). The
order of :data:`KINDS` is the order of readings in a trace row and on the wire. A sensor's noise
comes from its own stream (:mod:`hil.tick.noise`), drawn on the ticks it is due.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hil.models import environment, quaternion, rangefinder, sensors
from hil.models.pytree import pytree, replace
from hil.models.sensors import SensorKind
from hil.models.small import matvec_t
from hil.scenario import SENSOR_FIELDS, Scenario
from hil.tick import fault_effects
from hil.tick.air import air


def _imu_params(config, scenario) -> sensors.ImuParams:
    return sensors.ImuParams(
        period=np.float64(1.0 / config.rate_hz), gyro_noise_density=np.float64(config.gyro_noise_density),
        gyro_bias_random_walk=np.float64(config.gyro_bias_random_walk), gyro_range=np.float64(config.gyro_range),
        accel_noise_density=np.float64(config.accel_noise_density),
        accel_bias_random_walk=np.float64(config.accel_bias_random_walk), accel_range=np.float64(config.accel_range))


KINDS: dict[str, SensorKind] = {kind.name: kind for kind in (
    SensorKind("imu", 16, _imu_params, sensors.imu_sample, normals=12, init=sensors.imu_init),
    SensorKind("baro", 17, lambda c, s: sensors.BaroParams(np.float64(c.noise)), sensors.baro_sample, normals=1),
    SensorKind("mag", 18, lambda c, s: sensors.MagParams(np.array(s.environment.magnetic_field), np.float64(c.noise)),
               sensors.mag_sample, normals=3),
    SensorKind("gps", 19, lambda c, s: sensors.GpsParams(np.array(c.position_noise), np.array(c.velocity_noise)),
               sensors.gps_sample, normals=6, latency=lambda c: c.latency),
    rangefinder.KIND,
)}
def present(scenario: Scenario) -> list[tuple[SensorKind, Any]]:
    """The scenario's sensors, in the registry's order, with their scenario sections."""
    sections = scenario.sensors.present()
    return [(kind, sections[name]) for name, kind in KINDS.items() if name in sections]


@pytree
class Channel:
    """One sensor's persistent state: its model's state, the last delivered reading, one in flight."""

    model: Any
    reading: jnp.ndarray
    pending: jnp.ndarray  # a reading in flight; empty for a sensor without latency (a smaller state)


def init(structure, params) -> dict:
    return {slot.name: Channel(KINDS[slot.name].init(params.sensors[slot.name]), np.zeros(SENSOR_FIELDS[slot.name]),
                               np.zeros(SENSOR_FIELDS[slot.name] if slot.latency else 0)) for slot in structure.sensors}


def truth(state, atmosphere) -> sensors.Truth:
    body = state.vehicle.body
    rotation = quaternion.to_matrix(body.attitude)
    specific_force = matvec_t(rotation, state.acceleration - jnp.array([0.0, 0.0, environment.GRAVITY]))
    return sensors.Truth(body.position, body.velocity, body.attitude, body.angular_rate, specific_force, atmosphere)


def sample(structure, params, state, draws):
    """Sample the sensors due at ``state.tick`` (``draws``: the tick's noise, :class:`hil.tick.noise.TickNoise`);
    returns the state and a freshness flag per sensor.

    A sensor slower than the tick samples inside a branch taken on its ticks alone. The tick is
    one number for a whole batch (:mod:`hil.sweep`), so there the branch is a real one too, and a
    GPS at 10 Hz costs nothing on the other 99 ticks of 100. What a sensor sees is worked out
    inside its branch: the atmosphere (a power and an exponential, one number at a time on CPU)
    only when a sensor that reads it is due.
    """
    channels, fresh = {}, {}
    for slot in structure.sensors:
        kind, channel = KINDS[slot.name], state.channels[slot.name]
        measure = state.tick % slot.decimation == 0

        def measured(kind=kind, channel=channel, name=slot.name):
            atmosphere, _ = air(params, state.vehicle, state.wind, state.tick / structure.rate)
            return kind.sample(params.sensors[name], channel.model, truth(state, atmosphere),
                               draws.normals(kind.stream, kind.normals))

        if slot.decimation == 1:
            model, measurement = measured()
        else:  # not measured: the model's state kept, and a placeholder no one delivers
            model, measurement = jax.lax.cond(measure, measured, lambda channel=channel: (channel.model, channel.reading))
        if slot.latency == 0:
            deliver, delivered, pending = measure, measurement, channel.pending
        else:
            deliver = (state.tick >= slot.latency) & ((state.tick - slot.latency) % slot.decimation == 0)
            delivered, pending = channel.pending, jnp.where(measure, measurement, channel.pending)
        if slot.name in params.faults.sensors:
            delivered, deliver = fault_effects.on_reading(params.faults, slot.name, state.tick, delivered,
                                                          channel.reading, deliver, draws)
        channels[slot.name] = Channel(model, jnp.where(deliver, delivered, channel.reading), pending)
        fresh[slot.name] = deliver
    return replace(state, channels=channels), fresh
