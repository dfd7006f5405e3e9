"""An emulated quadrotor flight controller in the manner of a small autopilot.

It sees only what a board would: the sensor readings, their freshness and the time. Stages,
run on every fresh IMU sample:

1. attitude estimate: a Mahony complementary filter (gyro, accelerometer tilt, magnetometer heading);
2. position and velocity: accelerometer prediction corrected by barometric altitude and GPS; the
   barometer's zero is the mean of its samples on the ground before arming, as an autopilot
   calibrates it at boot (one sample's noise, 0.25 m at 3 Pa, would offset every height flown);
3. mission: arm, waypoints with hold times, optional landing with touchdown detection;
4. cascaded control: position P -> velocity PI -> thrust vector -> geometric attitude P -> rate PI;
5. mixer: wrench to per-rotor thrust to throttle (rotor speed is linear in throttle, thrust quadratic).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from hil.models import quaternion
from hil.models.environment import GRAVITY, pressure_altitude
from hil.models.pytree import pytree, static
from hil.models.small import computed_once, dot, matvec

WAITING, SPIN_UP, MISSION, LANDING, LANDED = range(5)
SPIN_UP_TIME = 1.0  # s of idle throttle between arming and the mission
# Mahony gains, 1/s. A multirotor's accelerometer reads mostly its own thrust, along the body's z
# axis however it banks, so its pull towards level is slow: a fast one levels the estimate of a
# held bank within a second, and the position loop, flying on that estimate, rings.
ACCEL_GAIN, MAG_GAIN, GYRO_BIAS_GAIN = 0.3, 0.5, 0.05
BARO_GAINS = (2.8, 4.0)  # altitude and vertical-velocity correction, 1/s and 1/s^2
GPS_GAINS = (1.0, 2.0)  # position and velocity correction, 1/s
MAX_YAW_STEP = 0.3  # rad
TOUCHDOWN_THRUST, TOUCHDOWN_TIME = 0.4, 0.5  # fraction of hover thrust, held this long (s), means landed


@pytree
class QuadPidParams:
    imu_period: float
    baro_period: float
    gps_period: float
    mass: float
    inertia: jnp.ndarray  # (3,)
    mixer: jnp.ndarray  # (4, 4): [collective, torque x y z] -> rotor thrusts
    thrust_coefficient: float
    max_rotor_speed: float
    idle_throttle: float
    arm_at: float
    max_speed: jnp.ndarray  # (3,) north, east, vertical
    max_tilt: float  # rad
    land_speed: float
    gain_position: jnp.ndarray
    gain_velocity: jnp.ndarray
    gain_velocity_integral: jnp.ndarray
    gain_attitude: jnp.ndarray
    gain_rate: jnp.ndarray
    gain_rate_integral: jnp.ndarray
    waypoints: jnp.ndarray  # (W, 3) NED
    waypoint_yaw: jnp.ndarray  # (W,) rad
    waypoint_hold: jnp.ndarray  # (W,) s
    acceptance: float
    land: bool = static(False)


@pytree
class QuadPidState:
    attitude: jnp.ndarray
    gyro_bias: jnp.ndarray  # Mahony integral term, rad/s, added to the gyro
    position: jnp.ndarray
    velocity: jnp.ndarray
    baro_reference: jnp.ndarray  # pressure altitude (m) of the take-off point: the mean of baro_samples
    baro_samples: jnp.ndarray  # baro samples averaged into it: those before arming, at least the first
    gps_ready: jnp.ndarray
    velocity_integral: jnp.ndarray
    rate_integral: jnp.ndarray
    waypoint: jnp.ndarray  # index of the active waypoint
    hold: jnp.ndarray  # s spent within acceptance of it
    phase: jnp.ndarray
    low_thrust: jnp.ndarray  # s of thrust below the touchdown threshold while landing
    command: jnp.ndarray


def init(params: QuadPidParams) -> QuadPidState:
    zero3 = np.zeros(3)  # NumPy, as all host-side set-up: no JAX executable to fetch at start-up
    return QuadPidState(
        attitude=np.array([1.0, 0.0, 0.0, 0.0]), gyro_bias=zero3, position=zero3, velocity=zero3,
        baro_reference=np.array(0.0), baro_samples=np.array(0.0), gps_ready=np.array(False),
        velocity_integral=zero3, rate_integral=zero3, waypoint=np.array(0), hold=np.array(0.0),
        phase=np.array(WAITING), low_thrust=np.array(0.0), command=np.zeros(4),
    )


def estimate_attitude(p: QuadPidParams, s: QuadPidState, gyro, accel, mag, once):
    """Mahony filter; returns the new attitude, gyro-bias integral and corrected body rate. ``once``:
    the predicate of :func:`~hil.models.small.computed_once`."""
    rotation = quaternion.to_matrix(s.attitude)
    # Products with the matrices of a member are written out (hil.models.small): under a sweep's
    # vmap an ``@`` is a batched matrix product, a library call of its own for a few numbers.
    up_predicted = -rotation[2]  # rotation.T @ (0, 0, -1)
    norm = jnp.linalg.norm(accel)
    # The accelerometer only tells tilt when it reads about 1 g; trust fades out by 0.5 g off.
    trust = jnp.clip(1.0 - jnp.abs(norm - GRAVITY) / (0.5 * GRAVITY), 0.0, 1.0)
    tilt_error = trust * jnp.cross(accel / jnp.maximum(norm, 1e-6), up_predicted)
    field_world = matvec(rotation, mag)
    heading_error = jnp.arctan2(field_world[1], field_world[0])
    heading_correction = -heading_error * rotation[2]  # rotation.T @ (0, 0, -heading_error)
    error = ACCEL_GAIN * tilt_error + MAG_GAIN * heading_correction
    gyro_bias = s.gyro_bias + GYRO_BIAS_GAIN * error * p.imu_period
    rate = gyro + gyro_bias
    return quaternion.integrate(s.attitude, rate + error, p.imu_period, once), gyro_bias, rate


def estimate_position(p: QuadPidParams, s: QuadPidState, attitude, accel, readings, fresh):
    acceleration = matvec(quaternion.to_matrix(attitude), accel) + jnp.array([0.0, 0.0, GRAVITY])
    position = s.position + s.velocity * p.imu_period + 0.5 * acceleration * p.imu_period**2
    velocity = s.velocity + acceleration * p.imu_period

    altitude = pressure_altitude(readings["baro"][0])
    averaged = fresh["baro"] & ((s.baro_samples == 0) | (s.phase == WAITING))
    samples = jnp.where(averaged, s.baro_samples + 1.0, s.baro_samples)
    # The division is kept finite where it is not taken: a where's other branch still reaches its gradient.
    reference = jnp.where(averaged, s.baro_reference + (altitude - s.baro_reference) / jnp.maximum(samples, 1.0),
                          s.baro_reference)
    baro_error = jnp.where(fresh["baro"], -(altitude - reference) - position[2], 0.0)
    position = position.at[2].add(BARO_GAINS[0] * p.baro_period * baro_error)
    velocity = velocity.at[2].add(BARO_GAINS[1] * p.baro_period * baro_error)

    gps = readings["gps"]
    first_fix = fresh["gps"] & ~s.gps_ready
    corrected_position = position.at[:2].add(GPS_GAINS[0] * p.gps_period * (gps[:2] - position[:2]))
    corrected_velocity = velocity + GPS_GAINS[1] * p.gps_period * (gps[3:] - velocity) * jnp.array([1.0, 1.0, 0.3])
    position = jnp.where(first_fix, position.at[:2].set(gps[:2]), jnp.where(fresh["gps"], corrected_position, position))
    velocity = jnp.where(first_fix, velocity.at[:2].set(gps[3:5]), jnp.where(fresh["gps"], corrected_velocity, velocity))
    return position, velocity, reference, samples, s.gps_ready | fresh["gps"]


def attitude_from_thrust(thrust_world, yaw):
    """Rotation whose body -z axis points along ``thrust_world`` with the given heading."""
    z_axis = -thrust_world / jnp.linalg.norm(thrust_world)
    heading = jnp.stack([jnp.cos(yaw), jnp.sin(yaw), 0.0])
    y_axis = jnp.cross(z_axis, heading)
    y_axis = y_axis / jnp.linalg.norm(y_axis)
    return jnp.stack([jnp.cross(y_axis, z_axis), y_axis, z_axis], axis=1)


def step(p: QuadPidParams, s: QuadPidState, readings, fresh, time):
    """One controller update; returns ``(state, throttle[4])``. Does nothing until a fresh IMU sample."""
    updated = _update(p, s, readings, fresh, time)
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(fresh["imu"], new, old), updated, s)
    return state, state.command


def _update(p: QuadPidParams, s: QuadPidState, readings, fresh, time):
    dt = p.imu_period
    gyro, accel = readings["imu"][:3], readings["imu"][3:]
    once = time >= 0  # always true, and the same for a batch: computed_once's predicate
    attitude, gyro_bias, rate = estimate_attitude(p, s, gyro, accel, readings["mag"], once)
    position, velocity, reference, baro_samples, gps_ready = estimate_position(p, s, attitude, accel, readings, fresh)

    # Mission: arm, spin up, fly the waypoints, optionally land.
    last = p.waypoints.shape[0] - 1
    target = jnp.asarray(p.waypoints)[s.waypoint]  # NumPy cannot be indexed by a traced value
    flying = (s.phase == MISSION) | (s.phase == LANDING)
    within = jnp.linalg.norm(position - target) < p.acceptance
    hold = jnp.where(within & (s.phase == MISSION), s.hold + dt, 0.0)
    done_here = hold >= jnp.asarray(p.waypoint_hold)[s.waypoint]
    waypoint = jnp.where(done_here & (s.waypoint < last), s.waypoint + 1, s.waypoint)
    hold = jnp.where(waypoint != s.waypoint, 0.0, hold)
    mission_over = done_here & (s.waypoint == last)
    phase = jnp.select(
        [s.phase == LANDED, (s.phase == MISSION) & mission_over & p.land, s.phase >= MISSION,
         time >= p.arm_at + SPIN_UP_TIME, time >= p.arm_at],
        [LANDED, LANDING, s.phase, MISSION, SPIN_UP], WAITING)

    # Position -> velocity setpoint, limited per axis group.
    velocity_setpoint = p.gain_position * (target - position)
    horizontal = jnp.linalg.norm(velocity_setpoint[:2])
    velocity_setpoint = velocity_setpoint.at[:2].multiply(jnp.minimum(1.0, p.max_speed[0] / jnp.maximum(horizontal, 1e-9)))
    velocity_setpoint = velocity_setpoint.at[2].set(jnp.clip(velocity_setpoint[2], -p.max_speed[2], p.max_speed[2]))
    velocity_setpoint = jnp.where(phase == LANDING, velocity_setpoint.at[2].set(p.land_speed), velocity_setpoint)

    # Velocity PI -> acceleration -> thrust vector with a tilt limit.
    velocity_error = velocity_setpoint - velocity
    velocity_integral = jnp.where(flying, jnp.clip(s.velocity_integral + velocity_error * dt, -4.0, 4.0), 0.0)
    acceleration = p.gain_velocity * velocity_error + p.gain_velocity_integral * velocity_integral
    thrust = p.mass * (acceleration - jnp.array([0.0, 0.0, GRAVITY]))
    thrust = thrust.at[2].set(jnp.minimum(thrust[2], -0.1 * p.mass * GRAVITY))
    horizontal = jnp.linalg.norm(thrust[:2])
    allowed = -thrust[2] * jnp.tan(p.max_tilt)
    thrust = thrust.at[:2].multiply(jnp.minimum(1.0, allowed / jnp.maximum(horizontal, 1e-9)))

    rotation = quaternion.to_matrix(attitude)
    collective = jnp.maximum(-dot(thrust, rotation[:, 2]), 0.0)
    # Turn at most MAX_YAW_STEP ahead of the current heading, so a large heading change never
    # pulls the geometric attitude error (and so the tilt) off the thrust direction.
    yaw = jnp.asarray(p.waypoint_yaw)[waypoint]

    def commanded_yaw():
        heading = jnp.arctan2(rotation[1, 0], rotation[0, 0])
        turn = jnp.arctan2(jnp.sin(yaw - heading), jnp.cos(yaw - heading))
        return heading + jnp.clip(turn, -MAX_YAW_STEP, MAX_YAW_STEP)

    desired = attitude_from_thrust(thrust, computed_once(commanded_yaw, once))
    # The three entries of desired.T @ rotation - rotation.T @ desired (a skew matrix) it uses.
    def mismatch(i, j):
        return dot(desired[:, i], rotation[:, j]) - dot(rotation[:, i], desired[:, j])

    attitude_error = 0.5 * jnp.stack([mismatch(2, 1), mismatch(0, 2), mismatch(1, 0)])
    rate_setpoint = -p.gain_attitude * attitude_error

    rate_error = rate_setpoint - rate
    rate_integral = jnp.where(flying, jnp.clip(s.rate_integral + rate_error * dt, -1.0, 1.0), 0.0)
    torque = p.inertia * (p.gain_rate * rate_error + p.gain_rate_integral * rate_integral)

    rotor_thrust = jnp.maximum(matvec(p.mixer, jnp.concatenate([collective[None], torque])), 0.0)
    throttle = jnp.sqrt(rotor_thrust / p.thrust_coefficient) / p.max_rotor_speed
    throttle = jnp.clip(throttle, p.idle_throttle, 1.0)

    low_thrust = jnp.where((phase == LANDING) & (collective < TOUCHDOWN_THRUST * p.mass * GRAVITY), s.low_thrust + dt, 0.0)
    phase = jnp.where(low_thrust >= TOUCHDOWN_TIME, LANDED, phase)
    command = jnp.select([(phase == WAITING) | (phase == LANDED), phase == SPIN_UP],
                         [jnp.zeros(4), jnp.full(4, p.idle_throttle)], throttle)
    return QuadPidState(attitude, gyro_bias, position, velocity, reference, baro_samples, gps_ready,
                        velocity_integral, rate_integral, waypoint, hold, phase, low_thrust, command)


def params_from_scenario(scenario) -> QuadPidParams:
    """Configure the controller for the scenario's airframe, sensor rates and mission."""
    fw, vehicle, sensors = scenario.firmware, scenario.vehicle, scenario.sensors
    half = vehicle.arm_length / np.sqrt(2.0)
    # Rotor thrusts -> [collective, roll, pitch, yaw torque] for the X layout of hil.models.quadrotor.
    positions = np.array([[half, half], [-half, -half], [half, -half], [-half, half]])
    spin = np.array([1.0, 1.0, -1.0, -1.0])
    allocation = np.stack([np.ones(4), -positions[:, 1], positions[:, 0],
                           spin * vehicle.torque_coefficient / vehicle.thrust_coefficient])
    waypoints = fw.mission.waypoints
    gains = fw.gains
    return QuadPidParams(
        imu_period=1.0 / sensors.imu.rate_hz, baro_period=1.0 / sensors.baro.rate_hz,
        gps_period=1.0 / sensors.gps.rate_hz, mass=vehicle.mass, inertia=np.array(vehicle.inertia),
        mixer=np.linalg.inv(allocation), thrust_coefficient=vehicle.thrust_coefficient,
        max_rotor_speed=vehicle.max_rotor_speed, idle_throttle=fw.idle_throttle, arm_at=fw.arm_at,
        max_speed=np.array(fw.max_speed), max_tilt=np.radians(fw.max_tilt_deg), land_speed=fw.land_speed,
        gain_position=np.array(gains.position), gain_velocity=np.array(gains.velocity),
        gain_velocity_integral=np.array(gains.velocity_integral), gain_attitude=np.array(gains.attitude),
        gain_rate=np.array(gains.rate), gain_rate_integral=np.array(gains.rate_integral),
        waypoints=np.array([w.position for w in waypoints]),
        waypoint_yaw=np.radians([w.yaw_deg for w in waypoints]),
        waypoint_hold=np.array([w.hold for w in waypoints]), acceptance=fw.mission.acceptance, land=fw.mission.land,
    )


PARAMETER_SET = "quad_pid"
MISSION_FIELDS = ("waypoints", "waypoint_yaw", "waypoint_hold", "land")
WAYPOINT_FIELDS = 5  # N, E, D (m), yaw (rad), hold (s)
_VECTOR_FIELDS = ("inertia", "max_speed", "gain_position", "gain_velocity", "gain_velocity_integral", "gain_attitude",
                  "gain_rate", "gain_rate_integral")
# Values per parameter but the mission: 3 for a vector, 16 for the mixer (row-major), 1 for a number.
_SIZES = {name: 16 if name == "mixer" else 3 if name in _VECTOR_FIELDS else 1
          for name in QuadPidParams.__dataclass_fields__ if name not in MISSION_FIELDS}


def wire_parameters(params: QuadPidParams) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The controller's parameters as a firmware takes them (PARAM messages or ``--param``): every
    field of :class:`QuadPidParams` but the mission, arrays flattened row-major; then one
    ``waypoint`` (N, E, D, yaw in rad, hold in s) per waypoint in order; then ``land`` (0 or 1)."""
    pairs = [(name, tuple(np.ravel(np.asarray(getattr(params, name), dtype=np.float64)).tolist()))
             for name in QuadPidParams.__dataclass_fields__ if name not in MISSION_FIELDS]
    for position, yaw, hold in zip(np.asarray(params.waypoints), np.asarray(params.waypoint_yaw),
                                   np.asarray(params.waypoint_hold)):
        pairs.append(("waypoint", tuple(float(v) for v in (*position, yaw, hold))))
    pairs.append(("land", (1.0 if params.land else 0.0,)))
    return tuple(pairs)


def params_from_wire(pairs) -> QuadPidParams:
    """The inverse of :func:`wire_parameters`; ValueError names a parameter that is unknown, has the
    wrong number of values, or is missing."""
    values, waypoints, land = {}, [], False
    for name, numbers in pairs:
        expected = WAYPOINT_FIELDS if name == "waypoint" else 1 if name == "land" else _SIZES.get(name)
        if expected is None:
            raise ValueError(f"parameter {name}: unknown parameter")
        if len(numbers) != expected:
            raise ValueError(f"parameter {name}: expected {expected} value{'s' * (expected > 1)}, got {len(numbers)}")
        if name == "waypoint":
            waypoints.append(numbers)
        elif name == "land":
            land = bool(numbers[0])
        else:
            values[name] = np.array(numbers) if expected > 1 else numbers[0]
    missing = [name for name in _SIZES if name not in values]
    if missing:
        raise ValueError(f"missing parameters: {', '.join(missing)}")
    if not waypoints:
        raise ValueError("no waypoint: give at least one (waypoint=N,E,D,YAW_RAD,HOLD_S)")
    values["mixer"] = values["mixer"].reshape(4, 4)
    rows = np.array(waypoints)
    return QuadPidParams(**values, waypoints=jnp.asarray(rows[:, :3]), waypoint_yaw=jnp.asarray(rows[:, 3]),
                         waypoint_hold=jnp.asarray(rows[:, 4]), land=land)



SENSOR_NEEDS = (("imu", 6), ("baro", 2), ("mag", 3), ("gps", 6))

if __name__ == "__main__":
    from hil.firmware_stubs import process

    process.main(sys.modules[__name__])
