"""quad_pid's C code flown inside the compiled tick: ``c/quad_pid.c``, the controller a board
compiles, stepped by an XLA FFI call (``c/quad_pid_ffi.cc``, built with the system compilers and
cached like the C firmware), so that a sweep flies the C code itself over its whole batch, not
only its JAX twin (:mod:`hil.firmware_stubs.quad_pid`).

Its parameters are the twin's (:class:`~hil.firmware_stubs.quad_pid.QuadPidParams`, from the same
scenario keys, so a sweep disperses the same gains). Its state is ``quad_pid_state`` flattened
into one float64 array per member (:data:`STATE_FIELDS`), carried by the tick like any other
state, so members share nothing; under ``jax.vmap`` one call steps every member, in C.

Between the tick and the controller stands what the wire does to the C firmware process flown
in lockstep (docs/protocol.md): it receives each reading as a float32 and sends its throttles as
float32. So a member flies the commands that process sends for the same flight
(tests/test_c_controller_ffi.py holds them to 1e-9), where the twin, on float64 readings, flies
within about a millimetre of it.
"""

import ctypes
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hil.firmware_stubs import quad_pid

TARGET = "hil_quad_pid_step"
PLATFORMS = ("cpu",)  # the FFI call is registered for the CPU: a sweep of it flies on the CPU's cores (hil.sweep)
SOURCE = Path(__file__).resolve().parent / "c" / "quad_pid_ffi.cc"

# quad_pid_state's fields in order, ints as doubles: the layout of a member's state array.
STATE_FIELDS = (("attitude", 4), ("gyro_bias", 3), ("position", 3), ("velocity", 3), ("baro_reference", 1),
                ("baro_samples", 1), ("gps_ready", 1), ("velocity_integral", 3), ("rate_integral", 3),
                ("waypoint", 1), ("hold", 1), ("phase", 1), ("low_thrust", 1), ("command", 4))
STATE_SIZE = sum(size for _, size in STATE_FIELDS)
# The fields of QuadPidParams but the mission, in the order of quad_pid.c's parameter table (and of
# quad_pid.wire_parameters): 51 numbers, then `land` as 0 or 1.
PARAM_FIELDS = tuple(name for name in quad_pid.QuadPidParams.__dataclass_fields__ if name not in quad_pid.MISSION_FIELDS)
PARAM_SIZE = 52
SENSORS = tuple(name for name, _ in quad_pid.SENSOR_NEEDS)
READING_SIZE = sum(size for _, size in quad_pid.SENSOR_NEEDS)

params_from_scenario = quad_pid.params_from_scenario
PARAMETER_SET, wire_parameters = quad_pid.PARAMETER_SET, quad_pid.wire_parameters


def init(params: quad_pid.QuadPidParams) -> np.ndarray:
    """quad_pid_init's state: level, waiting to arm, at the first waypoint, everything else zero."""
    state = np.zeros(STATE_SIZE)
    state[0] = 1.0  # attitude w
    return state


def step(params: quad_pid.QuadPidParams, state, readings, fresh, time):
    """One tick of the C firmware as the lockstep process flies it: ``(state, throttles)`` from the
    readings it would receive (float32), the throttles as it sends them (float32)."""
    missing = [name for name in SENSORS if name not in readings]
    if missing:
        raise ValueError(f"quad_pid_c flies on {', '.join(SENSORS)}; the scenario has no {' or '.join(missing)} "
                         "(add it under sensors)")
    received = {name: _float32(readings[name]) for name in SENSORS}
    state, throttle = controller(params, state, received, fresh, time)
    return state, _float32(throttle)


def controller(params: quad_pid.QuadPidParams, state, readings, fresh, time):
    """quad_pid_step on exactly the readings given: ``(state, throttles)``, what
    :func:`hil.firmware_stubs.quad_pid.step` computes, from C. Traced: builds and registers the
    FFI call first (RuntimeError naming the compiler when it cannot)."""
    max_waypoints = load()[1]
    flat = jnp.concatenate([jnp.ravel(jnp.asarray(getattr(params, name), jnp.float64)) for name in PARAM_FIELDS]
                           + [jnp.full(1, float(params.land))])
    if flat.shape != (PARAM_SIZE,):
        raise ValueError(f"QuadPidParams flattens to {flat.shape[0]} numbers and {SOURCE.name} reads {PARAM_SIZE}: "
                         "a field was added to one and not the other")
    mission = jnp.concatenate([jnp.reshape(jnp.asarray(params.waypoints, jnp.float64), (-1, 3)),
                               jnp.asarray(params.waypoint_yaw, jnp.float64)[:, None],
                               jnp.asarray(params.waypoint_hold, jnp.float64)[:, None]], axis=1)
    if not 1 <= mission.shape[0] <= max_waypoints:
        raise ValueError(f"quad_pid_c: the mission has {mission.shape[0]} waypoints; the C controller flies 1 to "
                         f"{max_waypoints} (QUAD_PID_MAX_WAYPOINTS in c/quad_pid.h)")
    values = jnp.concatenate([jnp.asarray(readings[name], jnp.float64) for name in SENSORS])
    flags = jnp.stack([jnp.asarray(fresh[name]) for name in SENSORS]).astype(jnp.float64)
    call = jax.ffi.ffi_call(TARGET, (jax.ShapeDtypeStruct((STATE_SIZE,), jnp.float64),
                                     jax.ShapeDtypeStruct((4,), jnp.float64)), vmap_method="broadcast_all")
    return call(flat, mission, jnp.asarray(state, jnp.float64), values, flags, jnp.asarray(time, jnp.float64))


def _float32(values):
    """A float64 value as the wire carries it: rounded to the nearest float32, as hil_proto.c and hil.wire round."""
    return jnp.asarray(values, jnp.float64).astype(jnp.float32).astype(jnp.float64)


@functools.cache
def load() -> tuple[ctypes.CDLL, int]:
    """Build (or take from the cache) and load the controller's library, check that it agrees with
    this module, and register it with XLA; returns it and the most waypoints it flies."""
    if jax.default_backend() != "cpu":
        raise RuntimeError(f"quad_pid_c is an XLA FFI call for the CPU backend, and JAX uses "
                           f"{jax.default_backend()}: fly it with JAX_PLATFORMS=cpu, or fly quad_pid")
    import jaxlib

    from hil.firmware_stubs import c_build

    library = ctypes.CDLL(str(c_build.build_ffi_library(TARGET, SOURCE, Path(jax.ffi.include_dir()), jaxlib.__version__,
                                                        c_sources=("quad_pid.c",))))
    sizes = (ctypes.c_int64 * 4)()
    library.hil_quad_pid_ffi_sizes(sizes)
    if tuple(sizes[:3]) != (STATE_SIZE, PARAM_SIZE, READING_SIZE):
        raise RuntimeError(f"{SOURCE.name} and {Path(__file__).name} disagree on the layout of the state, "
                           f"parameters or readings ({tuple(sizes[:3])} numbers in C, "
                           f"{(STATE_SIZE, PARAM_SIZE, READING_SIZE)} in Python)")
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.HilQuadPidStep), platform="cpu")
    return library, sizes[3]
