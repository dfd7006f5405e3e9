"""Re-run the physics of a flight log from its logged commands and prove bit-identity tick by tick.

The firmware is not needed: the command in force at every tick is in the log. Replay rebuilds
the scenario from the log's header (its text, seed and duration), compiles the link-mode tick as
the body of a loop of up to 4096 ticks per call, and feeds it the logged commands; every
replayed row must equal the logged one bit for bit.
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from hil import flightlog
from hil import scenario as scenario_module


REPLAY_BATCH = 4096  # ticks per call of the compiled loop


class ReplayError(RuntimeError):
    pass


@dataclass(frozen=True)
class Difference:
    field: str  # a layout column and index, e.g. position[2]
    logged: float
    replayed: float


@dataclass(frozen=True)
class ReplayResult:
    ticks: int  # ticks compared
    first_tick: int | None  # the first tick that differs, None when every tick is identical
    differences: tuple[Difference, ...]  # at first_tick, fields in layout order
    wall_seconds: float = 0.0  # the replay loop alone, compilation excluded

    @property
    def identical(self) -> bool:
        return self.first_tick is None


def scenario_of(log: flightlog.FlightLog):
    """The scenario exactly as it flew: the logged text with the logged seed and duration."""
    header = log.header
    if header is None:
        raise ReplayError(f"{log.path}: no header record, nothing to replay ({log.damage or 'empty log'})")
    loaded = scenario_module.parse_text(header["scenario_text"], f"{log.path} (scenario in the log)")
    return replace(loaded, seed=header["seed"], duration=header["duration"])


def column_names(layout: dict) -> list[str]:
    names = [""] * sum(size for _, size in layout.values())
    for name, (offset, size) in layout.items():
        for index in range(size):
            names[offset + index] = f"{name}[{index}]" if size > 1 else name
    return names


def replay(log: flightlog.FlightLog, flown=None) -> ReplayResult:
    """Replay ``log`` (or ``flown``, a changed scenario, against its commands) and compare every tick."""
    from hil.sim import Simulation  # JAX: imported only when there is something to run

    flown = flown or scenario_of(log)
    simulation = Simulation(flown, in_process_firmware=False)
    layout = {name: tuple(span) for name, span in log.header["layout"].items()}
    if layout != simulation.layout:
        raise ReplayError(f"{log.path}: the log's columns {sorted(layout)} do not match this hil's "
                          f"{sorted(simulation.layout)}; replay it with the hil version that recorded it "
                          f"({log.header.get('hil')})")
    batch = simulation.compile_batch(REPLAY_BATCH)
    offset, size = layout["command"]
    compare = np.ones(simulation.width, dtype=bool)
    compare[offset:offset + size] = False
    logged = np.asarray(log.rows)
    # Row k's command is what the physics flew from tick k to k + 1; tick 0 is reached from rest.
    commands = np.zeros((len(logged) + batch.batch, size))
    if len(logged) > 1:
        commands[1:len(logged)] = logged[:-1, offset:offset + size]
    state = batch.initial
    started = time.perf_counter()
    for first in range(0, len(logged), batch.batch):
        count = min(batch.batch, len(logged) - first)
        state, rows = batch.advance_many(state, commands[first:first + batch.batch], np.int32(count))
        replayed = np.asarray(rows)[:count]
        differs = (replayed != logged[first:first + count]) & compare
        if differs.any():
            row = int(np.flatnonzero(differs.any(axis=1))[0])
            names = column_names(layout)
            return ReplayResult(first + row, log.ticks[first + row][0], tuple(
                Difference(names[i], float(logged[first + row][i]), float(replayed[row][i]))
                for i in np.flatnonzero(differs[row])), time.perf_counter() - started)
    return ReplayResult(len(logged), None, (), time.perf_counter() - started)


@dataclass(frozen=True)
class Comparison:
    """How a re-flight of a logged scenario against another firmware differs from the logged flight."""

    ticks: int  # ticks compared: the shorter of the two flights
    first_tick: int | None  # the first tick whose true state differs at all; None when none does
    first_beyond: int | None  # the first tick the position differs by more than the tolerance
    tolerance: float  # m
    worst: dict  # quantity -> (largest difference, its tick)

    @property
    def within_tolerance(self) -> bool:
        return self.first_beyond is None


STATE_COLUMNS = ("position", "velocity", "attitude", "angular_rate")


def compare_flights(logged: np.ndarray, flown: np.ndarray, layout: dict, rate: float, tolerance: float) -> Comparison:
    """Compare two flights' rows tick by tick: where they part and how far apart they get."""
    from hil.trace import Trace

    ticks = min(len(logged), len(flown))
    first, second = (Trace(np.asarray(rows[:ticks]), layout, rate, ticks) for rows in (logged, flown))
    parted = np.flatnonzero(np.any([np.any(first.column(name) != second.column(name), axis=1) for name in STATE_COLUMNS],
                                   axis=0))
    distance = np.linalg.norm(first.column("position") - second.column("position"), axis=1)
    beyond = np.flatnonzero(distance > tolerance)
    differences = {
        "position (m)": distance,
        "altitude (m)": np.abs(first.quantity("altitude") - second.quantity("altitude")),
        "tilt (deg)": np.abs(first.quantity("tilt_deg") - second.quantity("tilt_deg")),
        "yaw (deg)": np.abs((first.quantity("yaw_deg") - second.quantity("yaw_deg") + 180) % 360 - 180),
        "motor command (throttle)": np.abs(first.column("command") - second.column("command")).max(axis=1),
    }
    worst = {name: (float(values.max()), int(values.argmax())) for name, values in differences.items()}
    return Comparison(ticks, int(parted[0]) if parted.size else None, int(beyond[0]) if beyond.size else None,
                      tolerance, worst)

