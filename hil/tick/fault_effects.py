"""Motor and sensor faults inside the tick, as pure functions of their parameters and the tick.

A fault is active over whole ticks ``[first, end)``. Which sensor a fault acts on and its mode
are structure (static fields); when it acts, how much and on which motor are parameters. Noise a fault
adds comes from its own PRNG stream, :data:`hil.faults.FAULT_STREAM_BASE` + i for the scenario's
fault i, as link faults' draws do.
"""

import jax.numpy as jnp
import numpy as np

from hil.faults import FAULT_STREAM_BASE, window_ticks
from hil.models.pytree import pytree, static
from hil.scenario import Scenario


@pytree
class MotorFault:
    first: jnp.ndarray  # tick
    end: jnp.ndarray  # tick, exclusive
    efficiency: jnp.ndarray  # fraction of thrust left
    motor: jnp.ndarray  # which motor: a parameter, so a sweep may draw it


@pytree
class SensorFault:
    first: jnp.ndarray
    end: jnp.ndarray
    value: jnp.ndarray  # bias: the offset; noise: the standard deviations; stuck, dropout: empty
    mode: str = static("")
    stream: int = static(0)  # noise: the stream its draws come from


@pytree
class FaultParams:
    motors: tuple  # of MotorFault
    sensors: dict  # sensor name -> tuple of SensorFault, in the scenario's order


def params(scenario: Scenario) -> FaultParams:
    motors, sensors = [], {}
    for index, fault in enumerate(scenario.faults):
        first, end = (np.int64(t) for t in window_ticks(fault, scenario))
        if fault.motor:
            motors.append(MotorFault(first, end, np.float64(fault.motor.efficiency), np.int64(fault.motor.index)))
        sensor = fault.sensor_fault()
        if sensor is not None:
            value = sensor.offset if sensor.mode == "bias" else sensor.std if sensor.mode == "noise" else ()
            sensors.setdefault(sensor.name, []).append(
                SensorFault(first, end, np.array(value, dtype=np.float64), sensor.mode, FAULT_STREAM_BASE + index))
    return FaultParams(tuple(motors), {name: tuple(effects) for name, effects in sensors.items()})


def _active(fault, tick):
    return (tick >= fault.first) & (tick < fault.end)


def motor_speed_scale(faults: FaultParams, tick):
    """Per motor, the factor on the rotor speed it can reach: thrust goes with its square."""
    scale = jnp.ones(4)
    for fault in faults.motors:
        hit = (jnp.arange(4) == fault.motor) & _active(fault, tick)
        scale = scale * jnp.where(hit, jnp.sqrt(fault.efficiency), 1.0)
    return scale


def on_reading(faults: FaultParams, name: str, tick, new, previous, delivered, draws):
    """The reading and freshness a sensor delivers at ``tick`` under its faults.

    Offsets and noise change the new value; a stuck sensor repeats the previous reading as
    if new; a dropout delivers nothing, so the firmware keeps what it had.
    """
    effects = faults.sensors.get(name, ())
    for effect in effects:
        active = _active(effect, tick)
        if effect.mode == "bias":
            new = jnp.where(active, new + effect.value, new)
        elif effect.mode == "noise":
            new = jnp.where(active, new + effect.value * draws.normals(effect.stream, new.shape[0]), new)
    for effect in effects:
        active = _active(effect, tick)
        if effect.mode in ("stuck", "dropout"):
            new = jnp.where(active, previous, new)
        if effect.mode == "dropout":
            delivered = delivered & ~active
    return new, delivered
