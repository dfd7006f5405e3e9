"""The world the vehicle flies in: gravity, the ISA atmosphere, the geomagnetic field and wind."""

import jax.numpy as jnp
import numpy as np

from hil.models.pytree import pytree
from hil.models.small import matvec_t
from hil.models.standard import (EARTH_RADIUS, GAS_CONSTANT_AIR, GRAVITY, LAPSE_RATE, SEA_LEVEL_DENSITY,  # noqa: F401
                                 SEA_LEVEL_PRESSURE, SEA_LEVEL_TEMPERATURE, TROPOPAUSE)

_EXPONENT = GRAVITY / (GAS_CONSTANT_AIR * LAPSE_RATE)


@pytree
class Atmosphere:
    temperature: jnp.ndarray  # K
    pressure: jnp.ndarray  # Pa
    density: jnp.ndarray  # kg/m^3


def geopotential_height(altitude):
    """The geopotential height (m) of a geometric altitude (m): ``H = r0 z / (r0 + z)``, r0 of ISO 2533."""
    return EARTH_RADIUS * altitude / (EARTH_RADIUS + altitude)


def isa(altitude):
    """International Standard Atmosphere at a geometric altitude (m AMSL), troposphere and lower stratosphere.

    The standard's layers are defined in geopotential height, so the altitude is converted first
    (1.6 m lower at 5 km). A NumPy or Python number gives NumPy results without touching JAX
    (host-side use, no compile).
    """
    xp = np if isinstance(altitude, (int, float, np.ndarray, np.generic)) else jnp
    height = geopotential_height(altitude)
    troposphere_t = SEA_LEVEL_TEMPERATURE - LAPSE_RATE * xp.minimum(height, TROPOPAUSE)
    tropopause_p = SEA_LEVEL_PRESSURE * (troposphere_t / SEA_LEVEL_TEMPERATURE) ** _EXPONENT
    above = xp.maximum(height - TROPOPAUSE, 0.0)
    pressure = tropopause_p * xp.exp(-GRAVITY * above / (GAS_CONSTANT_AIR * troposphere_t))
    return Atmosphere(troposphere_t, pressure, pressure / (GAS_CONSTANT_AIR * troposphere_t))


def pressure_altitude(pressure):
    """The pressure altitude (m) of ``pressure`` in the troposphere, as avionics compute it: the ISA's
    geopotential height at which the pressure is ``pressure`` (not converted back to geometric)."""
    return SEA_LEVEL_TEMPERATURE / LAPSE_RATE * (1.0 - (pressure / SEA_LEVEL_PRESSURE) ** (1.0 / _EXPONENT))


@pytree
class WindParams:
    steady: jnp.ndarray  # (3,) m/s NED: the direction the air moves towards
    turbulence_intensity: jnp.ndarray  # (3,) m/s, standard deviation per axis
    turbulence_time_constant: float  # s, correlation time of the Gauss-Markov turbulence
    gust_start: jnp.ndarray  # (G,) s
    gust_duration: jnp.ndarray  # (G,) s
    gust_peak: jnp.ndarray  # (G, 3) m/s NED, velocity at the middle of a 1-cosine gust


@pytree
class WindState:
    turbulence: jnp.ndarray  # (3,) m/s


def wind_init(params: WindParams) -> WindState:
    return WindState(np.zeros(3))


def wind_step(params: WindParams, state: WindState, dt, normals) -> WindState:
    """First-order Gauss-Markov turbulence, discretised exactly so its variance does not depend on dt.

    ``normals``: three standard-normal draws for this step.
    """
    decay = jnp.exp(-dt / params.turbulence_time_constant)
    drive = params.turbulence_intensity * jnp.sqrt(1.0 - decay**2)
    return WindState(decay * state.turbulence + drive * normals[:3])


def wind_velocity(params: WindParams, state: WindState, time):
    """Air velocity (m/s NED) at ``time``: steady + turbulence + scheduled 1-cosine gusts."""
    phase = (time - params.gust_start) / params.gust_duration
    active = (phase >= 0.0) & (phase <= 1.0)
    shape = jnp.where(active, 0.5 * (1.0 - jnp.cos(2.0 * jnp.pi * phase)), 0.0)
    gusts = matvec_t(params.gust_peak, shape) if params.gust_peak.shape[0] else 0.0
    return params.steady + state.turbulence + gusts
