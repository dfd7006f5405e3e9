"""What the host sees of a tick: one flat float64 row, laid out by :func:`layout`."""

import jax.numpy as jnp

from hil.tick.air import air
from hil.scenario import SENSOR_FIELDS

MOTORS = 4


def layout(structure) -> dict[str, tuple[int, int]]:
    """Column name -> (offset, size) in a row."""
    sizes = [("position", 3), ("velocity", 3), ("attitude", 4), ("angular_rate", 3), ("rotor_speed", 4),
             ("wind", 3), ("command", MOTORS)]
    sizes += [(f"reading.{slot.name}", SENSOR_FIELDS[slot.name]) for slot in structure.sensors]
    sizes += [("fresh", len(structure.sensors))]
    columns, offset = {}, 0
    for name, size in sizes:
        columns[name] = (offset, size)
        offset += size
    return columns


def observe(structure, params, state, fresh):
    body = state.vehicle.body
    _, held = air(params, state.vehicle, state.wind, state.tick / structure.rate)
    parts = [body.position, body.velocity, body.attitude, body.angular_rate, state.vehicle.rotor_speed,
             held.wind, state.command]
    parts += [state.channels[slot.name].reading for slot in structure.sensors]
    names = [slot.name for slot in structure.sensors]
    parts += [jnp.stack([fresh[n] for n in names]).astype(jnp.float64)] if names else [jnp.zeros(0)]
    return jnp.concatenate(parts)
