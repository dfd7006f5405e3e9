"""Sensor models. Each turns the true state into a reading with noise drawn from its own PRNG key.

A model is ``sample(params, state, truth, normals) -> (state, reading)``, called on the ticks
the sensor is due (its own rate); ``state`` holds what persists between samples (IMU biases) and
``normals`` are standard-normal draws the harness derives from the sensor's own PRNG stream
(as many as its kind's ``normals`` says), so a model is a plain function of its noise.
Readings are flat float64 vectors whose layout the wire protocol documents.
"""

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from hil.models import quaternion
from hil.models.environment import Atmosphere
from hil.models.pytree import pytree
from hil.models.small import matvec_t

@dataclass(frozen=True)
class SensorKind:
    """What the tick needs to know of a kind of sensor (registered in :data:`hil.tick.sampling.KINDS`)."""

    name: str  # also its section under the scenario's ``sensors``, whose ``reading`` names its fields
    stream: int  # PRNG stream id: fixed forever, so adding a sensor never shifts another's noise
    params: Callable[[Any, Any], Any]  # (its scenario section, the scenario) -> model parameters, NumPy
    sample: Callable  # (params, state, truth, normals) -> (state, reading)
    # Standard-normal draws a sample takes. Draws are counter-based, so the first n of a longer
    # draw are the n drawn alone: a count only ever shrinks to what the model reads.
    normals: int
    init: Callable[[Any], Any] = lambda params: ()  # params -> the state kept between samples
    latency: Callable[[Any], float] = lambda config: 0.0  # s from measurement to delivery


@pytree
class Truth:
    """The true quantities every sensor draws from, at the instant of the sample."""

    position: jnp.ndarray  # (3,) m NED
    velocity: jnp.ndarray  # (3,) m/s NED
    attitude: jnp.ndarray  # (4,) body -> world
    angular_rate: jnp.ndarray  # (3,) rad/s body
    specific_force: jnp.ndarray  # (3,) m/s^2 body: acceleration minus gravity, mean over the last tick
    air: Atmosphere  # at the vehicle's altitude


@pytree
class ImuParams:
    period: float  # s between samples
    gyro_noise_density: float  # rad/s/sqrt(Hz)
    gyro_bias_random_walk: float  # rad/s/sqrt(s)
    gyro_range: float  # rad/s, saturation
    accel_noise_density: float  # m/s^2/sqrt(Hz)
    accel_bias_random_walk: float  # m/s^2/sqrt(s)
    accel_range: float  # m/s^2, saturation


@pytree
class ImuState:
    gyro_bias: jnp.ndarray  # (3,) rad/s
    accel_bias: jnp.ndarray  # (3,) m/s^2


def imu_init(params: ImuParams) -> ImuState:
    return ImuState(np.zeros(3), np.zeros(3))


def imu_sample(params: ImuParams, state: ImuState, truth: Truth, normals):
    """Reading ``[gyro x y z (rad/s), accel x y z (m/s^2)]``, body FRD.

    White noise of density N sampled at rate 1/T has standard deviation N/sqrt(T); the bias
    is a random walk whose increment over one sample has standard deviation K*sqrt(T).
    """
    draws = normals.reshape(4, 3)
    root_period = jnp.sqrt(params.period)
    gyro_bias = state.gyro_bias + params.gyro_bias_random_walk * root_period * draws[0]
    accel_bias = state.accel_bias + params.accel_bias_random_walk * root_period * draws[1]
    gyro = truth.angular_rate + gyro_bias + params.gyro_noise_density / root_period * draws[2]
    accel = truth.specific_force + accel_bias + params.accel_noise_density / root_period * draws[3]
    reading = jnp.concatenate([
        jnp.clip(gyro, -params.gyro_range, params.gyro_range),
        jnp.clip(accel, -params.accel_range, params.accel_range),
    ])
    return ImuState(gyro_bias, accel_bias), reading


@pytree
class BaroParams:
    noise: float  # Pa, standard deviation


def baro_sample(params: BaroParams, state, truth: Truth, normals):
    """Reading ``[static pressure (Pa), air temperature (K)]`` from the ISA at the vehicle's altitude."""
    pressure = truth.air.pressure + params.noise * normals[0]
    return state, jnp.stack([pressure, truth.air.temperature])


@pytree
class MagParams:
    field: jnp.ndarray  # (3,) T, earth field in NED
    noise: float  # T, standard deviation per axis


def mag_sample(params: MagParams, state, truth: Truth, normals):
    """Reading ``[x y z]`` (T): the earth field rotated into the body frame, plus white noise."""
    body_field = matvec_t(quaternion.to_matrix(truth.attitude), params.field)
    return state, body_field + params.noise * normals[:3]


@pytree
class GpsParams:
    position_noise: jnp.ndarray  # (3,) m, standard deviation north, east, down
    velocity_noise: jnp.ndarray  # (3,) m/s


def gps_sample(params: GpsParams, state, truth: Truth, normals):
    """Reading ``[north east down (m), v_north v_east v_down (m/s)]`` relative to home."""
    draws = normals.reshape(2, 3)
    return state, jnp.concatenate([
        truth.position + params.position_noise * draws[0],
        truth.velocity + params.velocity_noise * draws[1],
    ])
