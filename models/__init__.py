"""Physics as pure JAX functions over pytrees: rigid body, quadrotor, environment, sensors.

Every stage is a function ``(params, state, ...) -> state``; parameters and states are frozen
dataclasses registered as pytrees. Frames: world NED, body FRD, SI units, quaternions
scalar-first (body to world). Every module here that imports JAX imports :mod:`hil.jaxconfig`
first (float64 and the compilation cache before any tracing); :mod:`.standard` and :mod:`.gear`
are free of JAX, for checks on the host (scenario validation) that should not start it.
"""
