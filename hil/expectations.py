"""Pass/fail checks of a scenario, evaluated as the run goes.

Each expectation is a :class:`Monitor` that reads the trace's finished rows in tick order, a
chunk at a time, and keeps only what its outcome needs (running extremes, the first tick out of
bounds), so a run of any length is judged in bounded memory and the outcome does not depend on
how the rows were chunked. A value that is not finite (the physics diverged) fails every check.
"""

from dataclasses import dataclass

import numpy as np

from hil.scenario import QUANTITIES, Expectation, Scenario
from hil.trace import Trace, column, quantity


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str
    passed: bool
    measured: str
    bound: str
    detail: str = ""


def _window(time, after, until=None):
    mask = time >= after - 1e-12
    if until is not None:
        mask &= time <= until + 1e-12
    return mask


def _unit(quantity_name):
    return QUANTITIES[quantity_name].split(" ")[0]


class Monitor:
    """One expectation, judged over the rows it has read so far."""

    def __init__(self, expectation: Expectation, layout: dict, rate_hz: float):
        self.expectation = expectation
        self.kind, self.check = expectation.kind(), expectation.check()
        self.layout, self.rate_hz = layout, rate_hz
        self.seen = False  # a tick inside the window was read
        self.extreme = None  # within: (min, max) of the finite values; bounds: (worst value, its time)
        self.first_bad = None  # (time, value) of the first tick out of bounds or not finite
        self.reached = None  # reach: (distance, time) of the first tick inside the tolerance
        self.closest = None  # reach: (distance, time) of the closest tick

    def read(self, first: int, rows: np.ndarray) -> None:
        """Take finished rows ``first``, ``first + 1``, ... into account."""
        time = np.arange(first, first + rows.shape[0]) / self.rate_hz
        if self.kind == "reach":
            self._read_reach(time, rows)
            return
        check = self.check
        window = _window(time, check.after, check.until if self.kind == "within" else None)
        if not window.any():
            return
        self.seen = True
        values, time = quantity(rows, self.layout, check.quantity)[window], time[window]
        finite = np.isfinite(values)
        if self.kind == "within":
            bad = ~finite
            if check.min is not None:
                bad |= values < check.min
            if check.max is not None:
                bad |= values > check.max
            if finite.any():
                low, high = values[finite].min(), values[finite].max()
                self.extreme = (low, high) if self.extreme is None else (min(self.extreme[0], low),
                                                                        max(self.extreme[1], high))
        else:
            above = self.kind == "never_above"
            bad = ~finite | ((values > check.bound) if above else (values < check.bound))
            if finite.any():
                scored = np.where(finite, values, -np.inf if above else np.inf)
                worst = int(np.argmax(scored) if above else np.argmin(scored))
                if self.extreme is None or (values[worst] > self.extreme[0] if above else values[worst] < self.extreme[0]):
                    self.extreme = (values[worst], time[worst])
        if self.first_bad is None and bad.any():
            index = int(np.flatnonzero(bad)[0])
            self.first_bad = (time[index], values[index])

    def _read_reach(self, time, rows) -> None:
        if self.reached is not None:
            return
        check = self.check
        window = (time < check.before) & _window(time, check.after)
        if not window.any():
            return
        self.seen = True
        distance = np.linalg.norm(column(rows, self.layout, "position") - np.array(check.point), axis=1)
        distance = np.where(window & np.isfinite(distance), distance, np.inf)
        inside = np.flatnonzero(distance <= check.tolerance)
        if inside.size:
            self.reached = (distance[inside[0]], time[inside[0]])
        closest = int(np.argmin(distance))
        if np.isfinite(distance[closest]) and (self.closest is None or distance[closest] < self.closest[0]):
            self.closest = (distance[closest], time[closest])

    def outcome(self) -> Outcome:
        name, kind, check = self.expectation.name, self.kind, self.check
        if kind == "reach":
            bound = f"<= {check.tolerance:g} m before {check.before:g} s" + (f" (from {check.after:g} s)"
                                                                             if check.after else "")
            if self.reached is not None:
                return Outcome(name, kind, True, f"{self.reached[0]:.3f} m at {self.reached[1]:.2f} s", bound)
            if not self.seen:
                return Outcome(name, kind, False, "no ticks before the deadline", bound)
            if self.closest is None:
                return Outcome(name, kind, False, "position not finite", bound)
            return Outcome(name, kind, False, f"closest {self.closest[0]:.3f} m at {self.closest[1]:.2f} s", bound)
        unit = _unit(check.quantity)
        detail = "" if self.first_bad is None else (f"first outside at {self.first_bad[0]:.3f} s: "
                                                    f"{self.first_bad[1]:.3f} {unit}")
        if kind == "within":
            span = f"from {check.after:g} s" + (f" to {check.until:g} s" if check.until is not None else "")
            low = "-inf" if check.min is None else f"{check.min:g}"
            high = "inf" if check.max is None else f"{check.max:g}"
            bound = f"[{low}, {high}] {unit} {span}"
        else:
            above = kind == "never_above"
            bound = f"{'<=' if above else '>='} {check.bound:g} {unit}" + (f" from {check.after:g} s"
                                                                           if check.after else "")
        if not self.seen:
            return Outcome(name, kind, False, "run ended before the window", bound)
        if self.extreme is None:
            measured = "not finite"
        elif kind == "within":
            measured = f"{self.extreme[0]:.3f} .. {self.extreme[1]:.3f} {unit}"
        else:
            measured = f"{'max' if kind == 'never_above' else 'min'} {self.extreme[0]:.3f} {unit} at {self.extreme[1]:.2f} s"
        return Outcome(name, kind, self.first_bad is None, measured, bound, detail)


class Judge:
    """Every expectation of a scenario, reading a run's trace as its rows are finished."""

    def __init__(self, scenario: Scenario, trace: Trace):
        self.monitors = [Monitor(e, trace.layout, trace.rate_hz) for e in scenario.expect]
        self.trace = trace
        trace.readers.append(self.read)

    def read(self, first: int, rows: np.ndarray) -> None:
        for monitor in self.monitors:
            monitor.read(first, rows)

    def outcomes(self) -> list[Outcome]:
        """The outcomes once the rows still unread are read: call it when the run is over."""
        self.trace.read()
        return [monitor.outcome() for monitor in self.monitors]
