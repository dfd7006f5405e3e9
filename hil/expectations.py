"""Pass/fail checks of a scenario, evaluated over the run's trace."""

from dataclasses import dataclass

import numpy as np

from hil.scenario import QUANTITIES, Expectation, Scenario
from hil.trace import Trace


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


def _unit(quantity):
    return QUANTITIES[quantity].split(" ")[0]


def evaluate(expectation: Expectation, trace: Trace) -> Outcome:
    kind, check = expectation.kind(), expectation.check()
    time = trace.time
    if kind == "reach":
        distance = np.linalg.norm(trace.column("position") - np.array(check.point), axis=1)
        window = (time < check.before) & _window(time, check.after)
        inside = np.flatnonzero(window & (distance <= check.tolerance))
        closest = int(np.argmin(np.where(window, distance, np.inf))) if window.any() else None
        bound = f"<= {check.tolerance:g} m before {check.before:g} s" + (f" (from {check.after:g} s)" if check.after else "")
        if inside.size:
            return Outcome(expectation.name, kind, True, f"{distance[inside[0]]:.3f} m at {time[inside[0]]:.2f} s", bound)
        if closest is None:
            return Outcome(expectation.name, kind, False, "no ticks before the deadline", bound)
        return Outcome(expectation.name, kind, False, f"closest {distance[closest]:.3f} m at {time[closest]:.2f} s", bound)

    values = trace.quantity(check.quantity)
    unit = _unit(check.quantity)
    if kind == "within":
        window = _window(time, check.after, check.until)
        span = f"from {check.after:g} s" + (f" to {check.until:g} s" if check.until is not None else "")
        low = "-inf" if check.min is None else f"{check.min:g}"
        high = "inf" if check.max is None else f"{check.max:g}"
        bound = f"[{low}, {high}] {unit} {span}"
        if not window.any():
            return Outcome(expectation.name, kind, False, "run ended before the window", bound)
        inside = values[window]
        measured = f"{inside.min():.3f} .. {inside.max():.3f} {unit}"
        bad = np.zeros_like(inside, dtype=bool)
        if check.min is not None:
            bad |= inside < check.min
        if check.max is not None:
            bad |= inside > check.max
        detail = ""
        if bad.any():
            first = np.flatnonzero(window)[np.flatnonzero(bad)[0]]
            detail = f"first outside at {time[first]:.3f} s: {values[first]:.3f} {unit}"
        return Outcome(expectation.name, kind, not bad.any(), measured, bound, detail)

    window = _window(time, check.after)
    above = kind == "never_above"
    bound = f"{'<=' if above else '>='} {check.bound:g} {unit}" + (f" from {check.after:g} s" if check.after else "")
    if not window.any():
        return Outcome(expectation.name, kind, False, "run ended before the window", bound)
    inside = np.where(window, values, -np.inf if above else np.inf)
    worst = int(np.argmax(inside) if above else np.argmin(inside))
    passed = bool(values[worst] <= check.bound) if above else bool(values[worst] >= check.bound)
    return Outcome(expectation.name, kind, passed, f"{'max' if above else 'min'} {values[worst]:.3f} {unit} at "
                   f"{time[worst]:.2f} s", bound)


def evaluate_all(scenario: Scenario, trace: Trace) -> list[Outcome]:
    return [evaluate(expectation, trace) for expectation in scenario.expect]
