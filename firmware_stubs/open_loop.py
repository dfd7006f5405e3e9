"""A firmware that holds constant motor throttles: open-loop physics checks and motor tests."""

import jax.numpy as jnp
import numpy as np

from hil.models.pytree import pytree


@pytree
class OpenLoopParams:
    throttle: jnp.ndarray  # (4,)


def init(params: OpenLoopParams):
    return ()


def step(params: OpenLoopParams, state, readings, fresh, time):
    return state, params.throttle


def params_from_scenario(scenario) -> OpenLoopParams:
    return OpenLoopParams(throttle=np.asarray(scenario.firmware.throttle, dtype=np.float64))


SENSOR_NEEDS = ()


def command_line(params: OpenLoopParams) -> list[str]:
    return ["--param", "throttle=" + ",".join(repr(float(v)) for v in params.throttle)]


def params_from_command_line(params: list[str], waypoints: list[str], land: bool) -> OpenLoopParams:
    for item in params:
        name, _, text = item.partition("=")
        if name == "throttle":
            values = [float(v) for v in text.split(",")]
            if len(values) == 4:
                return OpenLoopParams(throttle=jnp.asarray(values))
    raise ValueError("open_loop needs --param throttle=T0,T1,T2,T3")


if __name__ == "__main__":
    import sys

    from hil.firmware_stubs import process

    process.main(sys.modules[__name__])
