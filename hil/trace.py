"""A run's per-tick record on the host: one row per tick, columns named by the tick's layout.

A run's trace keeps a bounded window of rows, however long the run: when the drivers ask for room
past its end, the finished rows go to its readers (the expectations, evaluated as the run goes)
and the window moves on. A run short enough to fit keeps every row.
"""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# The most a run's trace holds in memory; a longer run keeps its newest rows in this much.
WINDOW_BYTES = 64 * 1024 * 1024
# Rows kept behind the first row a driver asks room for when the window moves: the recorder
# encodes a few dozen ticks at a time and reads them from here (hil.flightlog.ENCODE_BATCH).
KEEP_BEHIND = 256

Reader = Callable[[int, np.ndarray], None]  # (first tick, finished rows from it on, in tick order)


@dataclass
class Trace:
    rows: np.ndarray  # (rows held, width) float64; row i is tick first + i
    layout: dict  # name -> (offset, size)
    rate_hz: float
    ticks_done: int = 0  # ticks finished so far (rows filled, the first ``first`` no longer held), kept by hil.record
    first: int = 0  # the tick of rows[0]: above 0 once a long run's window has moved on
    length: int | None = None  # rows the run will have; None: as many as ``rows`` holds
    readers: list[Reader] = field(default_factory=list)
    read_up_to: int = 0  # the readers have seen every row before this tick

    @classmethod
    def for_run(cls, ticks: int, layout: dict, rate_hz: float) -> "Trace":
        """An empty trace for a run of ``ticks`` rows: all of them, or a window of them that fits
        in :data:`WINDOW_BYTES`."""
        width = sum(size for _, size in layout.values())
        held = min(ticks, max(WINDOW_BYTES // (8 * max(width, 1)), 2 * KEEP_BEHIND + 4096))
        return cls(np.empty((held, width)), layout, rate_hz, length=ticks)

    @property
    def last(self) -> int:
        """The run's last tick."""
        return (self.rows.shape[0] if self.length is None else self.length) - 1

    @property
    def whole(self) -> bool:
        """Every row of the run is still held."""
        return self.first == 0

    def span(self, tick: int, count: int) -> np.ndarray:
        """Rows ``tick`` to ``tick + count - 1`` to be written (a view). Every row before ``tick``
        must be finished: the window may move on past them."""
        end = tick + count
        if end > self.first + self.rows.shape[0]:
            self._move(tick, count)
        return self.rows[tick - self.first:end - self.first]

    def row(self, tick: int) -> np.ndarray:
        """Tick ``tick``'s row, held or made room for (see :meth:`span`)."""
        index = tick - self.first
        if index >= self.rows.shape[0]:
            self._move(tick, 1)
            index = tick - self.first
        return self.rows[index]

    def held(self, ticks) -> np.ndarray:
        """Copies of the rows of ``ticks``, in order, which must still be held."""
        if ticks[0] < self.first:
            raise IndexError(f"tick {ticks[0]} has left the trace's window (it holds ticks from {self.first} on)")
        return self.rows.take(np.asarray(ticks) - self.first, axis=0)

    def _move(self, tick: int, count: int) -> None:
        keep = max(self.first, tick - KEEP_BEHIND)
        if count > self.rows.shape[0] - (tick - keep):
            raise ValueError(f"{count} rows from tick {tick} do not fit a trace window of {self.rows.shape[0]}")
        self.read(tick)
        kept = tick - keep
        self.rows[:kept] = self.rows[keep - self.first:tick - self.first]
        self.first = keep

    def read(self, up_to: int | None = None) -> None:
        """Hand the finished rows not yet read, up to ``up_to`` (default: every tick done), to the readers."""
        up_to = self.ticks_done if up_to is None else up_to
        if up_to > self.read_up_to:
            chunk = self.rows[self.read_up_to - self.first:up_to - self.first]
            for reader in self.readers:
                reader(self.read_up_to, chunk)
            self.read_up_to = up_to

    @property
    def time(self) -> np.ndarray:
        return np.arange(self.first, self.ticks_done) / self.rate_hz

    def column(self, name: str) -> np.ndarray:
        return column(self.rows[: self.ticks_done - self.first], self.layout, name)

    def quantity(self, name: str) -> np.ndarray:
        """A named scalar per tick, as scenario expectations use them (see hil.scenario.QUANTITIES)."""
        return quantity(self.rows[: self.ticks_done - self.first], self.layout, name)


def column(rows: np.ndarray, layout: dict, name: str) -> np.ndarray:
    offset, size = layout[name]
    return rows[:, offset: offset + size]


def _array_module(rows):
    """NumPy for rows on the host; JAX's NumPy for rows on the device (hil.sweep judges there)."""
    if isinstance(rows, np.ndarray):
        return np
    import jax.numpy

    return jax.numpy


def quantity(rows: np.ndarray, layout: dict, name: str) -> np.ndarray:
    """A named scalar for each of ``rows`` (see hil.scenario.QUANTITIES), NumPy or JAX as ``rows`` are."""
    xp = _array_module(rows)

    def of(column_name):
        return column(rows, layout, column_name)

    simple = {
        "north": lambda: of("position")[:, 0], "east": lambda: of("position")[:, 1],
        "down": lambda: of("position")[:, 2], "altitude": lambda: -of("position")[:, 2],
        "velocity_north": lambda: of("velocity")[:, 0], "velocity_east": lambda: of("velocity")[:, 1],
        "velocity_down": lambda: of("velocity")[:, 2], "speed": lambda: xp.linalg.norm(of("velocity"), axis=1),
        "horizontal_distance": lambda: xp.linalg.norm(of("position")[:, :2], axis=1),
        "rate_roll": lambda: of("angular_rate")[:, 0],
        "rate_pitch": lambda: of("angular_rate")[:, 1],
        "rate_yaw": lambda: of("angular_rate")[:, 2],
        "motor_max": lambda: of("command").max(axis=1),
        "motor_mean": lambda: of("command").mean(axis=1),
        "motor_min": lambda: of("command").min(axis=1),
        "tilt_deg": lambda: xp.degrees(xp.arccos(xp.clip(1 - 2 * (of("attitude")[:, 1] ** 2
                                                                   + of("attitude")[:, 2] ** 2), -1, 1))),
    }
    if name in simple:
        return simple[name]()
    euler = {"roll_deg": 0, "pitch_deg": 1, "yaw_deg": 2}
    if name in euler:
        return xp.degrees(euler_angles(of("attitude"))[:, euler[name]])
    raise KeyError(f"unknown quantity {name!r}")


def euler_angles(quaternions: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (rad, Z-Y-X) of scalar-first unit quaternions, one per row."""
    xp = _array_module(quaternions)
    w, x, y, z = quaternions.T
    roll = xp.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = xp.arcsin(xp.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = xp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return xp.stack([roll, pitch, yaw], axis=1)
