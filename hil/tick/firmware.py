"""The emulated firmware flown inside the tick (an in-process run): its registry and its stage.

A firmware module has ``params_from_scenario(scenario)``, ``init(params) -> state`` and
``step(params, state, readings, fresh, time) -> (state, throttles)``; its parameters are part of
the tick's parameters, so its gains change without compiling. It also has ``PARAMETER_SET`` and
``wire_parameters(params)``: what hil sends a firmware on a link that asks for them
(docs/protocol.md, PARAM).
"""

from types import ModuleType

from hil import wire
from hil.firmware_stubs import open_loop, quad_pid, quad_pid_c
from hil.models.pytree import replace

FIRMWARES: dict[str, ModuleType] = {"quad_pid": quad_pid, "open_loop": open_loop, "quad_pid_c": quad_pid_c}


def custom_call(structure) -> str | None:
    """The XLA FFI target the in-process firmware calls, built and registered first (a firmware in
    C has ``TARGET`` and ``load()``); None for a firmware in JAX."""
    module = FIRMWARES.get(structure.firmware) if structure.firmware else None
    if module is None or not hasattr(module, "load"):
        return None
    module.load()
    return module.TARGET


def params(scenario):
    return FIRMWARES[scenario.firmware.name].params_from_scenario(scenario)


def parameter_set(scenario) -> wire.ParameterSet | None:
    """The scenario's firmware parameters as PARAM messages carry them; None for a firmware hil
    does not emulate (Betaflight's SITL)."""
    module = FIRMWARES.get(scenario.firmware.name)
    if module is None:
        return None
    return wire.ParameterSet(module.PARAMETER_SET, tuple(module.wire_parameters(module.params_from_scenario(scenario))))


def init(structure, params):
    return FIRMWARES[structure.firmware].init(params.firmware) if structure.firmware else None


def fly(structure, params, state, fresh):
    """The firmware answers the readings just sampled; its command flies the next tick."""
    readings = {name: channel.reading for name, channel in state.channels.items()}
    firmware, command = FIRMWARES[structure.firmware].step(params.firmware, state.firmware, readings, fresh,
                                                           state.tick / structure.rate)
    return replace(state, firmware=firmware, command=command)
