"""A downward rangefinder (lidar or sonar) over flat ground at down = 0.

It measures along the body's down axis: over flat ground the slant range is the height over
``cos(tilt)``, where tilt is the angle between the body's down axis and the world's. Beyond
its tilt limit (the beam misses the ground or returns too weak an echo) or its maximum range,
or with the ground behind it, it reports no valid return. Reading: ``[distance (m), valid (1/0)]``;
an invalid reading's distance is 0.
"""

import jax.numpy as jnp
import numpy as np

from hil.models import quaternion
from hil.models.pytree import pytree
from hil.models.sensors import SensorKind, Truth


@pytree
class RangefinderParams:
    noise: jnp.ndarray  # m, standard deviation of a valid distance
    min_range: jnp.ndarray  # m: closer than this, no valid return
    max_range: jnp.ndarray  # m
    cos_tilt_limit: jnp.ndarray  # cosine of the largest tilt with a valid return


def slant_range(truth: Truth):
    """Distance (m) along the body's down axis to the ground plane, and the cosine of the tilt."""
    cos_tilt = quaternion.to_matrix(truth.attitude)[2, 2]
    height = -truth.position[2]
    return height / jnp.maximum(cos_tilt, 1e-9), cos_tilt


def sample(params: RangefinderParams, state, truth: Truth, normals):
    distance, cos_tilt = slant_range(truth)
    measured = distance + params.noise * normals[0]
    valid = ((cos_tilt >= params.cos_tilt_limit) & (distance >= params.min_range) & (distance <= params.max_range))
    return state, jnp.stack([jnp.where(valid, measured, 0.0), valid.astype(jnp.float64)])


def params_from_scenario(config, scenario) -> RangefinderParams:
    return RangefinderParams(np.float64(config.noise), np.float64(config.min_range), np.float64(config.max_range),
                             np.float64(np.cos(np.radians(config.tilt_limit_deg))))


KIND = SensorKind("rangefinder", 20, params_from_scenario, sample, normals=1)
