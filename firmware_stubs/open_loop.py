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


PARAMETER_SET = "open_loop"


def wire_parameters(params: OpenLoopParams) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The constant throttles as a firmware takes them (PARAM messages or ``--param``)."""
    return (("throttle", tuple(float(v) for v in params.throttle)),)


def params_from_wire(pairs) -> OpenLoopParams:
    """The inverse of :func:`wire_parameters`; ValueError names what is wrong."""
    throttle = None
    for name, values in pairs:
        if name != "throttle":
            raise ValueError(f"parameter {name}: unknown parameter: open_loop takes only throttle=T0,T1,T2,T3")
        if len(values) != 4:
            raise ValueError(f"parameter throttle: expected 4 values, got {len(values)}")
        throttle = values
    if throttle is None:
        raise ValueError("missing parameters: throttle")
    return OpenLoopParams(throttle=jnp.asarray(throttle))


if __name__ == "__main__":
    import sys

    from hil.firmware_stubs import process

    process.main(sys.modules[__name__])
