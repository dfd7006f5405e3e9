"""The tick as a pure function of its parameters: ``init(params) -> state`` and
``step(params, state[, command]) -> (state, row)``.

A :class:`Tick` holds only the :class:`~hil.tick.params.Structure` (what shapes the program);
every number comes in as :class:`~hil.tick.params.TickParams`, so one compiled program flies any
seed, mass or gain, and ``jax.vmap`` / ``jax.grad`` go through ``step``. Stages, one module each:
:mod:`.air`, :mod:`.physics`, :mod:`.sampling` (sensors), :mod:`.fault_effects`, :mod:`.firmware`
(in-process) and :mod:`.observe` (the row the host sees). :func:`hil.tick.params.build` turns a
scenario into (structure, params); :mod:`hil.sim` compiles and wraps the programs.

The initial state has tick -1, which ``step`` turns into tick 0 without moving the vehicle, so
one body serves the whole run. ``step`` integrates tick k -> k + 1 with the command in force
(link mode: the ``command`` given; in-process: the firmware's last), samples the sensors due at
k + 1 and, in-process, lets the firmware answer them.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hil.models import environment
from hil.models.pytree import pytree
from hil.models.quadrotor import QuadrotorState
from hil.models.rigid_body import RigidBodyState
from hil.tick import firmware, noise, observe, physics, sampling
from hil.tick.params import Structure, TickParams, rest_height

MOTORS = observe.MOTORS


@pytree
class SimState:
    tick: jnp.ndarray  # int64 scalar: sim time is tick / rate, never accumulated
    vehicle: QuadrotorState
    wind: environment.WindState
    channels: dict  # sensor name -> hil.tick.sampling.Channel
    firmware: Any  # the in-process firmware's state, or None
    command: jnp.ndarray  # (4,) throttle in force
    # (3,) m/s^2 NED, mean over the last tick (what an IMU's delta-velocity gives); at tick 0, the initial state's
    acceleration: jnp.ndarray


class Tick:
    """The tick for one :class:`~hil.tick.params.Structure`; its methods are pure and traceable.

    ``batch_axis``: the name of a ``jax.vmap`` axis over members that share one tick counter (the
    state's ``tick`` not mapped), as :mod:`hil.sweep` flies them. Branches on the tick (sensors
    due, tick 0) are then real branches for the whole batch, and ground contact is computed only
    while some member of the batch is near the ground. A member's numbers do not depend on it.
    """

    def __init__(self, structure: Structure, batch_axis: str | None = None):
        self.structure = structure
        self.batch_axis = batch_axis
        self.layout = observe.layout(structure)
        self.width = sum(size for _, size in self.layout.values())

    def init(self, params: TickParams) -> SimState:
        """The state before tick 0 (NumPy for host parameters, JAX under a transformation)."""
        start = params.initial
        xp = jnp if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(params)) else np
        position = start.position
        if start.on_ground:
            position = xp.concatenate([position[:2], xp.reshape(rest_height(params.vehicle), (1,))])
        body = RigidBodyState(position, start.velocity, start.attitude, start.angular_rate)
        return SimState(np.array(-1, dtype=np.int64), QuadrotorState(body, start.rotor_speed),
                        environment.wind_init(params.wind), sampling.init(self.structure, params),
                        firmware.init(self.structure, params), np.zeros(MOTORS), np.zeros(3))

    def step(self, params: TickParams, state: SimState, command=None):
        """One tick: ``(state, row)``; ``command`` in link mode, None when the firmware flies in-process."""
        structure = self.structure
        key = jax.random.wrap_key_data(jnp.asarray(params.key, dtype=jnp.uint32))
        draws = noise.TickNoise(key, state.tick + 1, batched=self.batch_axis is not None)
        state = physics.physics(structure, params, state, state.command if command is None else command, draws,
                                self.batch_axis)
        state, fresh = sampling.sample(structure, params, state, draws)
        if structure.firmware:
            state = firmware.fly(structure, params, state, fresh)
        return state, observe.observe(structure, params, state, fresh)
