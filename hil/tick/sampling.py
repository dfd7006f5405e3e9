"""The sensors: their registry, their noise streams, and the stage that samples those due at a tick.

A sensor kind is one :class:`hil.models.sensors.SensorKind` in :data:`KINDS`: its reading size, its fixed PRNG
stream id, how its parameters come from its scenario section, and its model
(``sample(params, state, truth, normals) -> (state, reading)``, :mod:`hil.models.sensors`). The
order of :data:`KINDS` is the order of readings in a trace row and on the wire. Randomness for
tick k and consumer s is ``fold_in(fold_in(key, k), s)``: adding a consumer never shifts
another's noise.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hil.faults import FAULT_STREAM_BASE
from hil.models import environment, quaternion, rangefinder, sensors
from hil.models.pytree import pytree, replace
from hil.models.sensors import SensorKind
from hil.models.small import matvec_t
from hil.scenario import SENSOR_FIELDS, Scenario
from hil.tick import fault_effects


def _imu_params(config, scenario) -> sensors.ImuParams:
    return sensors.ImuParams(
        period=np.float64(1.0 / config.rate_hz), gyro_noise_density=np.float64(config.gyro_noise_density),
        gyro_bias_random_walk=np.float64(config.gyro_bias_random_walk), gyro_range=np.float64(config.gyro_range),
        accel_noise_density=np.float64(config.accel_noise_density),
        accel_bias_random_walk=np.float64(config.accel_bias_random_walk), accel_range=np.float64(config.accel_range))


KINDS: dict[str, SensorKind] = {kind.name: kind for kind in (
    SensorKind("imu", 16, _imu_params, sensors.imu_sample, sensors.imu_init),
    SensorKind("baro", 17, lambda c, s: sensors.BaroParams(np.float64(c.noise)), sensors.baro_sample),
    SensorKind("mag", 18, lambda c, s: sensors.MagParams(np.array(s.environment.magnetic_field), np.float64(c.noise)),
               sensors.mag_sample),
    SensorKind("gps", 19, lambda c, s: sensors.GpsParams(np.array(c.position_noise), np.array(c.velocity_noise)),
               sensors.gps_sample, latency=lambda c: c.latency),
    rangefinder.KIND,
)}
STREAMS = {"wind": 1, **{kind.name: kind.stream for kind in KINDS.values()}}


def present(scenario: Scenario) -> list[tuple[SensorKind, Any]]:
    """The scenario's sensors, in the registry's order, with their scenario sections."""
    sections = scenario.sensors.present()
    return [(kind, sections[name]) for name, kind in KINDS.items() if name in sections]


def stream_id(name: str) -> int:
    if name.startswith("fault."):
        return FAULT_STREAM_BASE + int(name.removeprefix("fault."))
    return STREAMS[name]


def tick_noise(key, tick, streams: tuple[str, ...]) -> dict:
    """Standard-normal draws for each consumer at ``tick``, from its own stream.

    All streams are derived in one vectorised call: XLA on CPU runs threefry as a loop, and one
    loop per consumer per tick would cost more than the physics.
    """
    ids = jnp.array([stream_id(name) for name in streams], dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.fold_in(key, tick), ids)
    draws = jax.vmap(lambda k: jax.random.normal(k, (sensors.NORMALS_PER_STREAM,)))(keys)
    return {name: draws[i] for i, name in enumerate(streams)}


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


def sample(structure, params, state, atmosphere, noise):
    """Sample the sensors due at ``state.tick``; returns the state and a freshness flag per sensor."""
    seen = truth(state, atmosphere)
    channels, fresh = {}, {}
    for slot in structure.sensors:
        kind, channel = KINDS[slot.name], state.channels[slot.name]
        measure = state.tick % slot.decimation == 0
        model, measurement = kind.sample(params.sensors[slot.name], channel.model, seen, noise[slot.name])
        model = jax.tree_util.tree_map(lambda new, old: jnp.where(measure, new, old), model, channel.model)
        if slot.latency == 0:
            deliver, delivered, pending = measure, measurement, channel.pending
        else:
            deliver = (state.tick >= slot.latency) & ((state.tick - slot.latency) % slot.decimation == 0)
            delivered, pending = channel.pending, jnp.where(measure, measurement, channel.pending)
        if slot.name in params.faults.sensors:
            delivered, deliver = fault_effects.on_reading(params.faults, slot.name, state.tick, delivered,
                                                          channel.reading, deliver, noise)
        channels[slot.name] = Channel(model, jnp.where(deliver, delivered, channel.reading), pending)
        fresh[slot.name] = deliver
    return replace(state, channels=channels), fresh
