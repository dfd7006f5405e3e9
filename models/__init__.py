"""Physics as pure JAX functions over pytrees: rigid body, quadrotor, environment, sensors.

Every stage is a function ``(params, state, ...) -> state``; parameters and states are frozen
dataclasses registered as pytrees. Frames: world NED, body FRD, SI units, quaternions
scalar-first (body to world). Importing these modules changes none of JAX's settings; the
physics needs float64, which :func:`hil.jaxconfig.configure` turns on and which hil's entry points
call before anything is traced. :mod:`.standard` and :mod:`.gear` are free of JAX, for checks on
the host (scenario validation) that should not start it.
"""
