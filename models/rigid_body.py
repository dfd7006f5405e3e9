"""6-DOF rigid-body dynamics: NED world position and velocity, body-to-world quaternion, FRD body rates."""

import jax.numpy as jnp
import numpy as np

from hil.models import quaternion
from hil.models.small import matvec
from hil.models.pytree import pytree


@pytree
class RigidBodyParams:
    mass: float  # kg
    inertia: jnp.ndarray  # (3, 3) kg m^2 about the centre of mass, body axes
    inverse_inertia: jnp.ndarray  # (3, 3), precomputed on the host: a tiny solve per stage is slow on CPU

    @staticmethod
    def of(mass, inertia) -> "RigidBodyParams":
        inertia = np.asarray(inertia, dtype=np.float64)
        return RigidBodyParams(float(mass), inertia, np.linalg.inv(inertia))


@pytree
class RigidBodyState:
    position: jnp.ndarray  # (3,) m, NED
    velocity: jnp.ndarray  # (3,) m/s, NED
    attitude: jnp.ndarray  # (4,) unit quaternion, body -> world, scalar first
    angular_rate: jnp.ndarray  # (3,) rad/s, body FRD


def derivative(params: RigidBodyParams, state: RigidBodyState, force_world, torque_body) -> RigidBodyState:
    """Newton-Euler equations for the net force (world frame) and torque (body frame)."""
    rate = state.angular_rate
    rate_quaternion = jnp.concatenate([jnp.zeros(1), rate])
    angular_momentum = matvec(params.inertia, rate)
    return RigidBodyState(
        position=state.velocity,
        velocity=force_world / params.mass,
        attitude=0.5 * quaternion.multiply(state.attitude, rate_quaternion),
        angular_rate=matvec(params.inverse_inertia, torque_body - jnp.cross(rate, angular_momentum)),
    )


def renormalize(state: RigidBodyState) -> RigidBodyState:
    """Project the attitude back onto the unit sphere after an integration step."""
    return RigidBodyState(state.position, state.velocity, quaternion.normalize(state.attitude), state.angular_rate)
