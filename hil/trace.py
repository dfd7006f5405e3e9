"""A run's per-tick record on the host: one row per tick, columns named by the tick's layout."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Trace:
    rows: np.ndarray  # (ticks + 1, width) float64; row k is tick k
    layout: dict  # name -> (offset, size)
    rate_hz: float
    ticks_done: int = 0  # rows filled so far

    @property
    def time(self) -> np.ndarray:
        return np.arange(self.ticks_done) / self.rate_hz

    def column(self, name: str) -> np.ndarray:
        offset, size = self.layout[name]
        return self.rows[: self.ticks_done, offset: offset + size]

    def quantity(self, name: str) -> np.ndarray:
        """A named scalar per tick, as scenario expectations use them (see hil.scenario.QUANTITIES)."""
        position, velocity = self.column("position"), self.column("velocity")
        simple = {
            "north": lambda: position[:, 0], "east": lambda: position[:, 1], "down": lambda: position[:, 2],
            "altitude": lambda: -position[:, 2],
            "velocity_north": lambda: velocity[:, 0], "velocity_east": lambda: velocity[:, 1],
            "velocity_down": lambda: velocity[:, 2], "speed": lambda: np.linalg.norm(velocity, axis=1),
            "horizontal_distance": lambda: np.linalg.norm(position[:, :2], axis=1),
            "rate_roll": lambda: self.column("angular_rate")[:, 0],
            "rate_pitch": lambda: self.column("angular_rate")[:, 1],
            "rate_yaw": lambda: self.column("angular_rate")[:, 2],
            "motor_max": lambda: self.column("command").max(axis=1),
            "motor_mean": lambda: self.column("command").mean(axis=1),
            "motor_min": lambda: self.column("command").min(axis=1),
            "tilt_deg": lambda: np.degrees(np.arccos(np.clip(1 - 2 * (self.column("attitude")[:, 1] ** 2
                                                                       + self.column("attitude")[:, 2] ** 2), -1, 1))),
        }
        if name in simple:
            return simple[name]()
        euler = {"roll_deg": 0, "pitch_deg": 1, "yaw_deg": 2}
        if name in euler:
            return np.degrees(euler_angles(self.column("attitude"))[:, euler[name]])
        raise KeyError(f"unknown quantity {name!r}")


def euler_angles(quaternions: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (rad, Z-Y-X) of scalar-first unit quaternions, one per row."""
    w, x, y, z = quaternions.T
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], axis=1)
