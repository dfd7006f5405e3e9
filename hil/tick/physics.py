"""The physics stage: one tick of rigid-body substeps with the command in force and the air held."""

import jax
import jax.numpy as jnp

from hil.models import environment, quadrotor
from hil.models.pytree import replace
from hil.tick import fault_effects, noise
from hil.tick.air import air

UNROLLED_SUBSTEPS = 4  # up to this many, substeps are written out: a loop of one XLA op per iteration costs more


def physics(structure, params, state, command, draws, batch_axis: str | None = None):
    """Integrate one tick with ``command`` and the air at the tick's start held constant.

    From tick -1 (the initial state) the step has zero length: tick 0 is the initial state.
    ``draws``: the noise of the tick being reached (:class:`hil.tick.noise.TickNoise`);
    ``batch_axis``: see :class:`hil.tick.Tick`.
    """
    _, held = air(params, state.vehicle, state.wind, state.tick / structure.rate)
    dt = jnp.where(state.tick >= 0, structure.dt, 0.0)
    substep = dt / structure.substeps
    # A motor fault limits the rotor speed the motor reaches, whatever the firmware asks for.
    faults = params.faults
    reachable = command * fault_effects.motor_speed_scale(faults, state.tick) if faults.motors else command

    def anyone(near):
        # For a batch, whether any member needs a branch: what it guards (ground contact, a
        # batch's turbulence) adds exactly zero to a member that does not, so taking it for the
        # whole batch changes no member's numbers.
        return near if batch_axis is None else jax.lax.psum(near.astype(jnp.int32), batch_axis) > 0

    def one(vehicle):
        return quadrotor.step(params.vehicle, vehicle, reachable, held, substep, anyone)

    vehicle = state.vehicle
    if structure.substeps <= UNROLLED_SUBSTEPS:
        for _ in range(structure.substeps):
            vehicle = one(vehicle)
    else:
        vehicle = jax.lax.fori_loop(0, structure.substeps, lambda _, v: one(v), vehicle)

    def blown(dt):
        return environment.wind_step(params.wind, state.wind, dt, draws.normals(noise.WIND_STREAM, 3))

    if batch_axis is None:
        wind = blown(dt)
    else:
        # A batch in still air (no member's wind turbulent) keeps its zero turbulence without
        # drawing: the step adds exactly nothing to it, and its draw and decay were a tenth of a
        # sweep's tick. The branch follows the intensities' values, so in a batch whose every
        # intensity is zero their derivatives are zero; a run alone always steps the turbulence.
        stirred = (state.tick >= 0) & anyone(jnp.any(params.wind.turbulence_intensity != 0.0))
        wind = jax.lax.cond(stirred, lambda: blown(structure.dt), lambda: state.wind)
    # Tick 0 has no tick behind it to average over: its IMU reads the initial state's own acceleration.
    acceleration = jax.lax.cond(
        state.tick >= 0, lambda: (vehicle.body.velocity - state.vehicle.body.velocity) / structure.dt,
        lambda: quadrotor.derivative(params.vehicle, state.vehicle, reachable, held).body.velocity)
    return replace(state, tick=state.tick + 1, vehicle=vehicle, wind=wind, command=command, acceleration=acceleration)
