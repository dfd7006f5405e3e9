"""Fly a scenario: compile the tick, run it tick by tick, evaluate the expectations."""

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from hil import scenario as scenario_module
from hil.expectations import Outcome, evaluate_all
from hil.scenario import Scenario
from hil.sim import CompiledTick, Simulation
from hil.trace import Trace

_compilations = 0


def _count_compilation(event: str, *args, **kwargs):
    global _compilations
    if "compile" in event or "compilation_cache" in event:
        _compilations += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilation)
jax.monitoring.register_event_listener(_count_compilation)


def compilations() -> int:
    """How many compilation events (XLA compiles and cache loads) this process has seen."""
    return _compilations


@dataclass
class RunResult:
    scenario: Scenario
    trace: Trace
    outcomes: list[Outcome]
    compile_seconds: float
    wall_seconds: float  # the tick loop alone
    compilations_during_run: int  # after tick 0; always 0 unless something is broken
    final_state: object  # hil.sim.SimState after the last tick

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def real_time_factor(self) -> float:
        return (self.trace.ticks_done - 1) / self.scenario.physics.rate_hz / max(self.wall_seconds, 1e-9)


Progress = Callable[[int, int, float], None]  # (tick, last tick, seconds since tick 0)


def with_overrides(scenario: Scenario, seed: int | None = None, duration: float | None = None) -> Scenario:
    """The scenario with ``seed`` and ``duration`` replaced, re-validated as if written in the file."""
    if seed is None and duration is None:
        return scenario
    changed = replace(scenario, **{k: v for k, v in (("seed", seed), ("duration", duration)) if v is not None})
    check = scenario_module.Check()
    changed.__check__(check, ())
    if check.problems:
        raise scenario_module.ScenarioError([scenario_module.Located("(command line)", 0, scenario_module.format_path(p.path),
                                                                     p.message) for p in check.problems])
    return changed


def run(scenario: Scenario, progress: Progress | None = None, progress_interval: float = 0.25) -> RunResult:
    """Fly ``scenario`` with its firmware in-process, as fast as the machine allows."""
    simulation = Simulation(scenario, in_process_firmware=True)
    started = time.perf_counter()
    tick = simulation.compile()
    compile_seconds = time.perf_counter() - started
    trace, final, wall, recompiled = _fly(simulation, tick, progress, progress_interval)
    return RunResult(scenario, trace, evaluate_all(scenario, trace), compile_seconds, wall, recompiled,
                     tick.unravel(final))


def _fly(simulation: Simulation, tick: CompiledTick, progress, interval):
    last = simulation.scenario.ticks
    rows = np.empty((last + 1, simulation.width))
    trace = Trace(rows, simulation.layout, simulation.rate)
    before = compilations()
    started = time.perf_counter()
    state = tick.initial
    next_report = started + interval
    advance = tick.advance
    for k in range(last + 1):
        state, out = advance(state)
        rows[k] = out
        if progress is not None and k % 64 == 0:
            now = time.perf_counter()
            if now >= next_report:
                trace.ticks_done = k + 1
                progress(k, last, now - started)
                next_report = now + interval
    wall = time.perf_counter() - started
    trace.ticks_done = last + 1
    if progress is not None:
        progress(last, last, wall)
    return trace, state, wall, compilations() - before


def save_trace(result: RunResult, path: Path) -> Path:
    """Write the run's trace as a NumPy ``.npz``: ``time`` and one array per layout column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: result.trace.column(name) for name in result.trace.layout}
    np.savez_compressed(path, time=result.trace.time, seed=result.scenario.seed, **columns)
    return path
