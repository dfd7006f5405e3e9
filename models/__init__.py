"""Physics as pure JAX functions over pytrees: rigid body, quadrotor, environment, sensors.

Every stage is a function ``(params, state, ...) -> state``; parameters and states are frozen
dataclasses registered as pytrees. Frames: world NED, body FRD, SI units, quaternions
scalar-first (body to world).
"""

import hil.jaxconfig  # noqa: F401  (float64 and the compilation cache before any tracing)
