"""A firmware that holds constant motor throttles: open-loop physics checks and motor tests."""

import jax.numpy as jnp

from hil.models.pytree import pytree


@pytree
class OpenLoopParams:
    throttle: jnp.ndarray  # (4,)


def init(params: OpenLoopParams):
    return ()


def step(params: OpenLoopParams, state, readings, fresh, time):
    return state, params.throttle


def params_from_scenario(scenario) -> OpenLoopParams:
    return OpenLoopParams(throttle=jnp.asarray(scenario.firmware.throttle))
