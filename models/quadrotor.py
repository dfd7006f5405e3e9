"""Quadrotor in X configuration: rotor lag, thrust and reaction torque, body drag, landing-gear contact.

Motor order and spin (as PX4's quad X): 0 front-right CCW, 1 rear-left CCW, 2 front-left CW,
3 rear-right CW, seen from above. A command is one normalised throttle per motor in [0, 1];
the rotor speed it asks for is ``throttle * max_rotor_speed`` and the rotor approaches it with
a first-order lag.

The derivative is a pipeline of wrenches, each a pure function of parameters and state:
rotors, aerodynamic drag, ground contact and gravity, summed into the rigid-body equations.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hil.models import quaternion, rigid_body
from hil.models.environment import GRAVITY, SEA_LEVEL_DENSITY
from hil.models.integrators import rk4
from hil.models.pytree import pytree
from hil.models.rigid_body import RigidBodyParams, RigidBodyState
from hil.models.small import matvec, matvec_t, norm, sum_rows

MOTOR_DIRECTIONS = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]) / np.sqrt(2.0)
# +1: counter-clockwise seen from above, whose reaction torque yaws the body right (+z in FRD).
MOTOR_SPIN = np.array([1.0, 1.0, -1.0, -1.0])
CONTACT_MARGIN = 0.05  # m of clearance beyond the worst-case travel before contact is skipped


@pytree
class LandingGear:
    feet: jnp.ndarray  # (F, 3) m, contact points in the body frame
    stiffness: float  # N/m per foot
    damping: float  # N s/m per foot
    friction: float  # Coulomb coefficient
    slip_speed: float  # m/s, below which friction is regularised (linear in slip speed)


@pytree
class QuadrotorParams:
    body: RigidBodyParams
    arm_length: float  # m, centre to rotor axis
    thrust_coefficient: float  # N/(rad/s)^2 at sea-level density
    torque_coefficient: float  # N m/(rad/s)^2 at sea-level density
    max_rotor_speed: float  # rad/s at full throttle
    motor_time_constant: float  # s
    drag_linear: jnp.ndarray  # (3,) N/(m/s), body axes
    drag_quadratic: jnp.ndarray  # (3,) N/(m/s)^2, body axes
    angular_drag: float  # N m/(rad/s)
    gear: LandingGear | None  # None: no ground (free flight, for physics checks)

    def replace(self, **changes) -> "QuadrotorParams":
        return dataclasses.replace(self, **changes)

    def motor_positions(self):
        return jnp.concatenate([self.arm_length * MOTOR_DIRECTIONS, jnp.zeros((4, 1))], axis=1)


@pytree
class QuadrotorState:
    body: RigidBodyState
    rotor_speed: jnp.ndarray  # (4,) rad/s


@pytree
class Air:
    """What the environment stage hands the dynamics for one tick."""

    density: jnp.ndarray  # kg/m^3
    wind: jnp.ndarray  # (3,) m/s NED


def hover_rotor_speed(params: QuadrotorParams, density=SEA_LEVEL_DENSITY):
    """Rotor speed (rad/s) at which four rotors carry the weight in still air."""
    lift = params.thrust_coefficient * density / SEA_LEVEL_DENSITY
    return jnp.sqrt(params.body.mass * GRAVITY / (4.0 * lift))


def rotor_wrench(params: QuadrotorParams, rotor_speed, density):
    """Force and torque of the rotors, body frame."""
    scale = density / SEA_LEVEL_DENSITY
    thrust = params.thrust_coefficient * scale * rotor_speed**2
    positions = params.motor_positions()
    # Each rotor pushes along body -z at its position: torque r x (0, 0, -T) = (-r_y T, r_x T, 0).
    reaction = sum_rows(MOTOR_SPIN * params.torque_coefficient * scale * rotor_speed**2)
    torque = jnp.stack([-sum_rows(positions[:, 1] * thrust), sum_rows(positions[:, 0] * thrust), reaction])
    return jnp.stack([0.0, 0.0, -sum_rows(thrust)]), torque


def drag_wrench(params: QuadrotorParams, body: RigidBodyState, air: Air):
    """Linear + quadratic drag on the air-relative velocity, and rotational damping; body frame."""
    rotation = quaternion.to_matrix(body.attitude)
    airspeed = matvec_t(rotation, body.velocity - air.wind)
    scale = air.density / SEA_LEVEL_DENSITY
    force = -scale * (params.drag_linear * airspeed + params.drag_quadratic * jnp.abs(airspeed) * airspeed)
    return force, -params.angular_drag * body.angular_rate


def contact_wrench(gear: LandingGear, body: RigidBodyState):
    """Spring-damper feet on flat ground at z = 0 with regularised Coulomb friction.

    Returns the force in the world frame and the torque in the body frame. Written one axis at a
    time over the feet (arrays of F), not as (F, 3) arrays: cross products and stacks of those
    cost XLA on CPU a kernel each that recomputes its inputs for every element.
    """
    rotation = quaternion.to_matrix(body.attitude)
    feet = gear.feet
    arm = [rotation[i, 0] * feet[:, 0] + rotation[i, 1] * feet[:, 1] + rotation[i, 2] * feet[:, 2] for i in range(3)]
    rate = matvec(rotation, body.angular_rate)  # world frame
    swirl = cross_parts(rate, arm)
    velocity = [body.velocity[i] + swirl[i] for i in range(3)]
    depth = body.position[2] + arm[2]
    normal = jnp.where(depth > 0.0, jnp.maximum(gear.stiffness * depth + gear.damping * velocity[2], 0.0), 0.0)
    slip_speed = jnp.sqrt(velocity[0] ** 2 + velocity[1] ** 2 + gear.slip_speed**2)
    grip = -gear.friction * normal / slip_speed
    force = [grip * velocity[0], grip * velocity[1], -normal]
    torque = cross_parts(arm, force)
    force_world = jnp.stack([sum_rows(part) for part in force])
    torque_world = jnp.stack([sum_rows(part) for part in torque])
    return force_world, matvec_t(rotation, torque_world)


def cross_parts(a, b):
    """The cross product of vectors given as three parts each (numbers or arrays of one shape)."""
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def derivative(params: QuadrotorParams, state: QuadrotorState, command, air: Air) -> QuadrotorState:
    body = state.body
    rotation = quaternion.to_matrix(body.attitude)
    rotor_force, rotor_torque = rotor_wrench(params, state.rotor_speed, air.density)
    drag_force, drag_torque = drag_wrench(params, body, air)
    force_world = matvec(rotation, rotor_force + drag_force) + jnp.array([0.0, 0.0, params.body.mass * GRAVITY])
    torque_body = rotor_torque + drag_torque
    if params.gear is not None:
        contact_force, contact_torque = contact_wrench(params.gear, body)
        force_world = force_world + contact_force
        torque_body = torque_body + contact_torque
    target_speed = jnp.clip(command, 0.0, 1.0) * params.max_rotor_speed
    return QuadrotorState(
        body=rigid_body.derivative(params.body, body, force_world, torque_body),
        rotor_speed=(target_speed - state.rotor_speed) / params.motor_time_constant,
    )


# The derivative as a traced function of its own: RK4's four stages call it with the same shapes,
# so JAX traces it once a branch of step, not four times (half a sweep's tracing, seconds of every
# cold start), and XLA inlines the calls: the same program, bit for bit.
_traced_once = jax.jit(derivative)


def step(params: QuadrotorParams, state: QuadrotorState, command, air: Air, dt, anyone=lambda near: near
         ) -> QuadrotorState:
    """Advance one RK4 step with the command and air held constant, attitude renormalised.

    When no foot can reach the ground within the step, the contact terms are exactly zero and
    the step runs without them (one branch chosen per step): in flight, most of a tick's work.
    ``anyone(near)`` turns this vehicle's "near the ground" into the branch's predicate: for a
    batch of vehicles stepped together, whether any of them is near.
    """
    def advance(p):
        advanced = rk4(lambda s: _traced_once(p, s, command, air), state, dt)
        return QuadrotorState(rigid_body.renormalize(advanced.body), advanced.rotor_speed)

    if params.gear is None:
        return advance(params)
    airborne = params.replace(gear=None)
    return jax.lax.cond(anyone(~(ground_clearance(params.gear, state.body, dt) > 0.0)),
                        lambda: advance(params), lambda: advance(airborne))


def ground_clearance(gear: LandingGear, body: RigidBodyState, dt):
    """How far (m) the lowest foot stays above the ground over ``dt`` in the worst case, with a margin."""
    reach = jnp.sqrt(jnp.max(sum_rows(gear.feet.T**2)))
    speed = norm(body.velocity) + norm(body.angular_rate) * reach
    return -(body.position[2] + reach) - speed * dt - CONTACT_MARGIN
