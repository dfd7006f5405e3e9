"""The air at the vehicle: the ISA atmosphere at its altitude and the wind it flies in."""

from hil.models import environment, quadrotor


def air(params, vehicle: quadrotor.QuadrotorState, wind: environment.WindState, time):
    """The atmosphere and the :class:`hil.models.quadrotor.Air` the dynamics see at ``time`` (s)."""
    atmosphere = environment.isa(params.home_altitude - vehicle.body.position[2])
    velocity = environment.wind_velocity(params.wind, wind, time)
    return atmosphere, quadrotor.Air(atmosphere.density, velocity)
