"""Re-run the physics of a flight log from its logged commands and prove bit-identity tick by tick.

The firmware is not needed: the command in force at every tick is in the log. Replay rebuilds
the scenario from the log's header (its text, seed and duration), compiles the link-mode tick as
the body of a loop of up to 4096 ticks per call, and feeds it the logged commands, read from
the log a chunk at a time; every replayed row must equal the logged one bit for bit. Past a
damaged span, whose commands are lost, it goes on from the state of the next SNAPSHOT.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from hil import flightlog
from hil.flightlog import Chunk
from hil.record import commands_flown_into
from hil import scenario as scenario_module
from hil.trace import column, quantity


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
    first_tick: int | None  # the first tick that differs, None when every tick compared is identical
    differences: tuple[Difference, ...]  # at first_tick, fields in layout order
    wall_seconds: float = 0.0  # the replay loop alone, compilation excluded
    unchecked: tuple[tuple[int, int], ...] = ()  # (first, last) logged ticks that could not be compared

    @property
    def identical(self) -> bool:
        return self.first_tick is None


def scenario_of(log):
    """The scenario exactly as it flew (``log``: a LogReader or a FlightLog): the logged text
    with the logged seed and duration."""
    header = log.header
    loaded = scenario_module.parse_text(header["scenario_text"], f"{log.path} (scenario in the log)")
    return replace(loaded, seed=header["seed"], duration=header["duration"])


def column_names(layout: dict) -> list[str]:
    names = [""] * sum(size for _, size in layout.values())
    for name, (offset, size) in layout.items():
        for index in range(size):
            names[offset + index] = f"{name}[{index}]" if size > 1 else name
    return names


def replay(log, flown=None) -> ReplayResult:
    """Replay ``log`` (or ``flown``, a changed scenario, against its commands) and compare every tick.

    ``log`` is read in chunks (a FlightLog is read again from its file), so memory stays bounded
    however long the log. Ticks after a damaged span cannot be replayed from the commands, which
    the span lost: replay resumes at the next SNAPSHOT, from the state it holds, and the ticks in
    between are ``unchecked``.
    """
    from hil.sim import Simulation  # JAX: imported only when there is something to run

    reader = log if isinstance(log, flightlog.LogReader) else flightlog.LogReader(log.path)
    flown = flown or scenario_of(reader)
    simulation = Simulation(flown, in_process_firmware=False)
    layout = reader.layout
    if layout != simulation.layout:
        raise ReplayError(f"{reader.path}: the log's columns {sorted(layout)} do not match this hil's "
                          f"{sorted(simulation.layout)}; replay it with the hil version that recorded it "
                          f"({reader.header['hil']})")
    batch = simulation.compile_batch(REPLAY_BATCH)
    offset, size = layout["command"]
    compare = np.ones(simulation.width, dtype=bool)
    compare[offset:offset + size] = False
    resume = _Resume(simulation, batch, reader.header["runtime"] == "in-process")
    # The state after tick ``next - 1`` (None: unknown since a gap) and the command flown from it,
    # which its row holds (hil.record); tick 0 is reached from rest.
    state, command, next_tick = batch.initial, np.zeros(size), 0
    compared, unchecked = 0, []
    started = time.perf_counter()
    for chunk in reader.chunks(batch.batch):
        count = len(chunk.rows)
        if chunk.first != next_tick or state is None:
            state = resume.state(chunk.snapshot)
            if unchecked and unchecked[-1][1] == chunk.first - 1:
                unchecked[-1] = (unchecked[-1][0], chunk.first + count - 1)
            else:
                unchecked.append((chunk.first, chunk.first + count - 1))
        else:
            commands = np.zeros((batch.batch, size))
            commands_flown_into(chunk.rows, command, layout, commands)
            state, rows = batch.advance_many(state, commands, np.int32(count))
            replayed = np.asarray(rows)[:count]
            differs = (replayed != chunk.rows) & compare
            if differs.any():
                row = int(np.flatnonzero(differs.any(axis=1))[0])
                names = column_names(layout)
                return ReplayResult(compared + row, chunk.first + row, tuple(
                    Difference(names[i], float(chunk.rows[row][i]), float(replayed[row][i]))
                    for i in np.flatnonzero(differs[row])), time.perf_counter() - started, tuple(unchecked))
            compared += count
        command, next_tick = chunk.rows[-1, offset:offset + size], chunk.first + count
    return ReplayResult(compared, None, (), time.perf_counter() - started, tuple(unchecked))


class _Resume:
    """A replay's state from a log's SNAPSHOT, the flat state after a tick. An in-process run's
    state holds its firmware's too: the replay's leaves are found in it by their paths."""

    def __init__(self, simulation, batch, in_process: bool):
        from hil.sim import Simulation

        self._sizes = [page.size for page in batch.initial]
        self._copies = None  # in-process: (start in the replay's flat state, start in the snapshot, size)
        if in_process:
            own = _leaf_spans(simulation.initial_state())
            logged = _leaf_spans(Simulation(simulation.scenario, in_process_firmware=True).initial_state())
            self._copies = [(start, logged[path][0], size) for path, (start, size) in own.items()]
            self._logged_size = sum(size for _, size in logged.values())

    def state(self, snapshot):
        """The replay's state pages from ``snapshot``; None when there is none or it does not fit."""
        if snapshot is None:
            return None
        if self._copies is not None:
            if len(snapshot) != self._logged_size:
                return None
            flat = np.empty(sum(self._sizes))
            for start, source, size in self._copies:
                flat[start:start + size] = snapshot[source:source + size]
            snapshot = flat
        if len(snapshot) != sum(self._sizes):
            return None
        return tuple(np.split(np.array(snapshot), np.cumsum(self._sizes)[:-1]))


def _leaf_spans(state) -> dict:
    """(start, size) in the flat state (pages end to end, as a SNAPSHOT holds it) of each leaf, by its path."""
    import jax

    spans, start = {}, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        spans[jax.tree_util.keystr(path)] = (start, int(np.size(leaf)))
        start += int(np.size(leaf))
    return spans


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
DIFFERENCES = ("position (m)", "altitude (m)", "tilt (deg)", "yaw (deg)", "motor command (throttle)")


class FlightComparison:
    """A re-flight compared with the logged flight tick by tick as it is flown, in bounded memory:
    a reader of the re-flight's trace (:attr:`hil.trace.Trace.readers`) that takes the logged rows
    chunk by chunk alongside, as far as they follow each other from tick 0."""

    def __init__(self, logged: Iterator[Chunk], layout: dict, rate: float, tolerance: float):
        self._logged = logged
        self._held: list[np.ndarray] = []  # logged rows from tick ``ticks`` on, end to end
        self._ended = False  # the logged rows that follow from tick 0 are all taken
        self.layout, self.rate, self.tolerance = layout, rate, tolerance
        self.ticks = 0
        self.first_tick: int | None = None
        self.first_beyond: int | None = None
        self.worst = {name: (0.0, 0) for name in DIFFERENCES}

    def read(self, first: int, flown: np.ndarray) -> None:
        held = sum(len(rows) for rows in self._held)
        while held < len(flown) and not self._ended:
            chunk = next(self._logged, None)
            if chunk is None or chunk.first != self.ticks + held:
                self._ended = True
            else:
                self._held.append(chunk.rows)
                held += len(chunk.rows)
        if not held:
            return
        logged = np.concatenate(self._held)
        count = min(len(flown), held)
        self._compare(first, logged[:count], flown[:count])
        self._held = [logged[count:]]
        self.ticks += count

    def _compare(self, first: int, logged: np.ndarray, flown: np.ndarray) -> None:
        def of(rows, name):
            return quantity(rows, self.layout, name)

        def columns(rows, name):
            return column(rows, self.layout, name)

        parted = np.flatnonzero(np.any([np.any(columns(logged, name) != columns(flown, name), axis=1)
                                        for name in STATE_COLUMNS], axis=0))
        distance = np.linalg.norm(columns(logged, "position") - columns(flown, "position"), axis=1)
        beyond = np.flatnonzero(distance > self.tolerance)
        if self.first_tick is None and parted.size:
            self.first_tick = first + int(parted[0])
        if self.first_beyond is None and beyond.size:
            self.first_beyond = first + int(beyond[0])
        differences = zip(DIFFERENCES, (
            distance,
            np.abs(of(logged, "altitude") - of(flown, "altitude")),
            np.abs(of(logged, "tilt_deg") - of(flown, "tilt_deg")),
            np.abs((of(logged, "yaw_deg") - of(flown, "yaw_deg") + 180) % 360 - 180),
            np.abs(columns(logged, "command") - columns(flown, "command")).max(axis=1)))
        for name, values in differences:
            worst = int(values.argmax())
            if values[worst] > self.worst[name][0]:
                self.worst[name] = (float(values[worst]), first + worst)

    def comparison(self) -> Comparison:
        """The outcome, once every row of the re-flight was read. The log is read to its end, so
        that its reader has seen every damaged span; :attr:`logged_ticks` counts the logged ticks
        that follow each other from tick 0."""
        self.logged_ticks = self.ticks + sum(len(rows) for rows in self._held)
        for chunk in self._logged:
            if not self._ended and chunk.first == self.logged_ticks:
                self.logged_ticks += len(chunk.rows)
            else:
                self._ended = True
        return Comparison(self.ticks, self.first_tick, self.first_beyond, self.tolerance, dict(self.worst))

