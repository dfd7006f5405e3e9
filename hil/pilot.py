"""The harness-side pilot: RC sticks from a timeline, and an outer loop that flies them from the true state.

A firmware flown by radio (Betaflight) gets what a person with a transmitter would give it: an
arming switch, a mode switch and four sticks. The scenario's ``pilot.steps`` say what the pilot
does from when; where a step asks for an altitude or a position, the pilot moves the throttle or
the roll and pitch sticks from the true state, as a careful human or a companion computer would.

Stick conventions are those of a Mode 2 transmitter and of Betaflight's angle mode: roll +1 banks
right, pitch +1 (stick forward) lowers the nose, and in angle mode a stick deflection ``s`` asks for
the angle ``s * angle_limit`` (the bridge sets Betaflight's rates so that this holds).
"""

import math
from dataclasses import dataclass

import numpy as np

from hil.models.environment import GRAVITY
from hil.scenario import Pilot, PilotStep
from hil.trace import euler_angles

RC_LOW, RC_MID, RC_HIGH = 1000, 1500, 2000  # µs
SWITCH_HIGH = 1800  # µs: inside the 1700-2100 range the bridge gives the ARM and ANGLE modes
ON_GROUND_HEIGHT = 0.15  # m above the resting height: landed when this low and slow
ON_GROUND_SPEED = 0.2  # m/s


@dataclass
class Sticks:
    """What the pilot's hands are doing: sticks in [-1, 1] (throttle in [0, 1]) and two switches."""

    roll: float = 0.0
    pitch: float = 0.0
    throttle: float = 0.0
    yaw: float = 0.0
    arm: bool = False
    angle_mode: bool = True

    def channels(self) -> list[int]:
        """The RC channels in Betaflight's default AETR order, then AUX1 (arm) and AUX2 (angle mode), in µs."""

        def centred(value):
            return round(RC_MID + 500 * float(np.clip(value, -1.0, 1.0)))

        throttle = round(RC_LOW + 1000 * float(np.clip(self.throttle, 0.0, 1.0)))
        aux = [SWITCH_HIGH if self.arm else RC_LOW, SWITCH_HIGH if self.angle_mode else RC_LOW]
        return [centred(self.roll), centred(self.pitch), throttle, centred(self.yaw), *aux] + [RC_LOW] * 10


class PilotLoop:
    """Steps through ``pilot.steps`` and closes the altitude and position loops it asks for.

    ``rest_height``: the vehicle's height above home when it stands on its feet, so that a
    landing ends where the ground is. ``angle_limit_deg``: the firmware's angle-mode limit.
    """

    def __init__(self, pilot: Pilot, angle_limit_deg: float, rest_height: float):
        self.pilot = pilot
        self.angle_limit = math.radians(angle_limit_deg)
        self.max_tilt = min(math.radians(pilot.max_tilt_deg), self.angle_limit)
        self.rest_height = rest_height
        self.sticks = Sticks()
        self.altitude: float | None = None  # the height held with the throttle, or None
        self.landing = False
        self.position: np.ndarray | None = None  # the north, east held with roll and pitch, or None
        self.climb_integral = 0.0
        self._next_step = 0
        self._last_time: float | None = None

    def _apply(self, step: PilotStep) -> None:
        sticks = self.sticks
        if step.arm is not None:
            sticks.arm = step.arm
        if step.angle_mode is not None:
            sticks.angle_mode = step.angle_mode
        if step.throttle is not None:
            sticks.throttle, self.altitude, self.landing = step.throttle, None, False
        if step.altitude is not None:
            if self.altitude is None and not self.landing:
                # Taking over from a hand on the throttle: start from where the hand was.
                self.climb_integral = sticks.throttle - self.pilot.hover_throttle if sticks.throttle else 0.0
            self.altitude, self.landing = step.altitude, False
        if step.land:
            self.landing = True
            self.altitude = None
        if (step.roll is not None or step.pitch is not None) and self.position is not None:
            # Hands back on the sticks: the one not given is centred, not left where the hold put it.
            sticks.roll, sticks.pitch, self.position = 0.0, 0.0, None
        if step.roll is not None:
            sticks.roll = step.roll
        if step.pitch is not None:
            sticks.pitch = step.pitch
        if step.yaw is not None:
            sticks.yaw = step.yaw
        if step.position is not None:
            self.position = np.array(step.position, dtype=float)

    def update(self, time: float, position, velocity, attitude) -> Sticks:
        """The sticks at ``time`` (s) for the true ``position`` and ``velocity`` (m, m/s NED) and
        ``attitude`` (scalar-first quaternion, body FRD to NED)."""
        steps = self.pilot.steps
        while self._next_step < len(steps) and steps[self._next_step].at <= time + 1e-9:
            self._apply(steps[self._next_step])
            self._next_step += 1
        dt = 0.0 if self._last_time is None else time - self._last_time
        self._last_time = time
        roll, pitch, yaw = euler_angles(np.asarray(attitude, dtype=float)[None, :])[0]
        if self.altitude is not None or self.landing:
            self.sticks.throttle = self._throttle(position, velocity, roll, pitch, dt)
        if self.position is not None:
            self.sticks.roll, self.sticks.pitch = self._tilt(position, velocity, yaw)
        return self.sticks

    def _throttle(self, position, velocity, roll, pitch, dt) -> float:
        p = self.pilot
        height, climb = -position[2], -velocity[2]
        if self.landing:
            if height < self.rest_height + ON_GROUND_HEIGHT and abs(climb) < ON_GROUND_SPEED:
                return 0.0
            wanted = -p.land_speed
        else:
            wanted = float(np.clip(p.altitude_gain * (self.altitude - height), -p.land_speed, p.climb_speed))
        error = wanted - climb
        self.climb_integral = float(np.clip(self.climb_integral + p.climb_integral * error * dt, -0.5, 0.5))
        # A tilted vehicle needs more thrust for the same lift.
        tilt_compensation = 1.0 / max(math.cos(roll) * math.cos(pitch), 0.5)
        throttle = (p.hover_throttle + self.climb_integral) * tilt_compensation + p.climb_gain * error
        return float(np.clip(throttle, 0.05, 1.0))

    def _tilt(self, position, velocity, yaw) -> tuple[float, float]:
        p = self.pilot
        wanted = p.position_gain * (self.position - np.asarray(position[:2]))
        speed = np.linalg.norm(wanted)
        if speed > p.max_speed:
            wanted *= p.max_speed / speed
        north, east = p.velocity_gain * (wanted - np.asarray(velocity[:2]))
        forward = math.cos(yaw) * north + math.sin(yaw) * east
        right = -math.sin(yaw) * north + math.cos(yaw) * east
        nose_down = float(np.clip(math.atan2(forward, GRAVITY), -self.max_tilt, self.max_tilt))
        bank = float(np.clip(math.atan2(right, GRAVITY), -self.max_tilt, self.max_tilt))
        return bank / self.angle_limit, nose_down / self.angle_limit
