"""Monte Carlo sweeps: many members of one scenario, dispersed, flown as one compiled program.

A member is the scenario with its ``sweep.dispersions`` drawn and, unless ``sweep.vary_seed`` is
false, a seed of its own (:func:`member_scenarios`). Member i's draws come from
``fold_in(key(sweep.seed), i)``, sub-stream j for dispersion j and sub-stream
:data:`SEED_STREAM` for its seed, so member i is the same whatever the number of members or
the chunking. Every member must have member 0's :class:`~hil.tick.params.Structure` and
parameter layout: the sweep flies one program, ``vmap`` over the members of a chunk inside a
``lax.scan`` over ticks. The expectations are judged inside that program, tick by tick, by
running versions of :class:`hil.expectations.Monitor` (running extremes, the first
tick out of bounds, the first tick within reach), so no member's rows come to the host; their
final state fills a Monitor on the host, whose :meth:`~hil.expectations.Monitor.outcome` gives
the same :class:`~hil.expectations.Outcome` a run alone gives.

Agreement (docs/sweep.md): a member's numbers are bit-identical for the same chunk size; across
chunk sizes the compiled batch shape changes how XLA fuses (FMA contraction on CPU), and a
member agrees to within 1e-12 over a short flight.
"""

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from hil import jaxconfig, schema, tick_cache
from hil import scenario as scenarios
from hil.expectations import Monitor, Outcome
from hil.scenario import Expectation, Scenario, ScenarioError, Sweep
from hil.schema import Check
from hil.tick import SimState, Tick
from hil.tick.firmware import FIRMWARES, custom_call
from hil.tick.params import build
from hil.trace import column, quantity

log = logging.getLogger(__name__)  # what hil sweep -v shows: each stage's time
SEED_STREAM = 0xFFFFFFFF  # the sub-stream of a member's key its seed is drawn from
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval
WORST = 5  # members listed per expectation in the summary
DRAWN_AT_ONCE = 256  # members drawn together, the last group padded: each draw compiles for one shape
# Members each device flies at a time unless --chunk says. On a CPU core 256: two cores flew
# 1,000 members of the 20 s hover at 1.04-1.14 M member-ticks/s in chunks of 128 a device, 1.22 M
# in chunks of 256 and 1.29 M in one chunk of 500 (XLA's fixed cost a kernel shared by more
# members); 256 leaves a second chunk to build while the first flies, and its results sooner. An
# accelerator runs each kernel over the whole batch at once, so it takes a wider one (not
# measured: no GPU was lent).
MEMBERS_PER_DEVICE = {"cpu": 256}
MEMBERS_PER_ACCELERATOR = 16_384
SUMMARY, TABLE, TRACES = "summary.json", "members.csv", "traces.npz"  # what a sweep writes in its folder

Progress = Callable[[int, int, float], None]  # (member-ticks flown, member-ticks in all, seconds since the start)


class SweepError(Exception):
    """A sweep that cannot fly as asked: the message names the member, its draws and why."""


# ---- members ----------------------------------------------------------------------------------------

def plan(scenario: Scenario, runs: int | None = None) -> Sweep:
    """The scenario's sweep section (or one that varies the seed alone), with ``runs`` if given."""
    sweep = scenario.sweep or Sweep()
    if runs is not None:
        if runs < 1:
            raise SweepError(f"--runs {runs}: give at least one member")
        sweep = Sweep(runs, sweep.seed, sweep.require, sweep.vary_seed, sweep.dispersions)
    return sweep


def grid_note(sweep: Sweep) -> str | None:
    """What a person should know when the grids' product does not divide the members: some of its
    combinations are flown once more than the others. None when it divides them, or there is no grid."""
    combinations = math.prod(len(d.grid) for d in sweep.dispersions if d.kind() == "grid")
    left = sweep.runs % combinations
    if left == 0:  # no grid: one combination
        return None
    return (f"note: the grids form {combinations:,} combinations, which {sweep.runs:,} members do not divide: "
            f"the first {left:,} {'is' if left == 1 else 'are'} flown {sweep.runs // combinations + 1:,} times, the others "
            f"{sweep.runs // combinations:,}; give --runs a multiple of {combinations:,} for a balanced grid")


def draws(scenario: Scenario, sweep: Sweep, members) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The seeds and drawn values of ``members`` (indices): ``(seeds, {key: (members, ...) array})``,
    drawn on the CPU whatever the default device, so the same wherever a member is built."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        return _draws(scenario, sweep, members)


def _draws(scenario: Scenario, sweep: Sweep, members) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    members = np.asarray(members, dtype=np.int64).ravel()
    if members.size and members.max() >= 2**32:
        raise SweepError(f"member {members.max()}: a sweep has at most 2^32 members")
    groups = []
    for start in range(0, max(members.size, 1), DRAWN_AT_ONCE):
        group = members[start:start + DRAWN_AT_ONCE]
        padding = np.full(DRAWN_AT_ONCE - group.size, group[-1] if group.size else 0)
        seeds, drawn = _drawn(scenario, sweep, np.concatenate([group, padding]))
        groups.append((seeds[:group.size], {key: values[:group.size] for key, values in drawn.items()}))
    return np.concatenate([seeds for seeds, _ in groups]), \
        {key: np.concatenate([drawn[key] for _, drawn in groups]) for key in groups[0][1]}


def _drawn(scenario: Scenario, sweep: Sweep, members: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    base = jax.random.key(sweep.seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(members, dtype=jnp.uint32))
    if sweep.vary_seed:
        bits = np.asarray(jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, SEED_STREAM), (2,),
                                                             jnp.uint32))(keys)).astype(np.uint64)
        seeds = ((bits[:, 0] << np.uint64(32)) | bits[:, 1]) & np.uint64(2**63 - 1)
    else:
        seeds = np.full(members.shape, scenario.seed, dtype=np.uint64)
    drawn, radix = {}, 1
    for index, dispersion in enumerate(sweep.dispersions):
        sub = jax.vmap(lambda k, j=index: jax.random.fold_in(k, j))(keys)
        kind = dispersion.kind()
        if kind == "normal":
            drawn[dispersion.key] = _normal(dispersion.normal, sub)
        elif kind == "uniform":
            low, high = np.asarray(dispersion.uniform.low, float), np.asarray(dispersion.uniform.high, float)
            drawn[dispersion.key] = np.asarray(jax.vmap(lambda k: jax.random.uniform(
                k, low.shape, jnp.float64, low, high))(sub))
        elif kind == "choice":
            values = np.asarray(dispersion.choice)
            picks = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 0, len(values)))(sub))
            drawn[dispersion.key] = values[picks]
        else:  # grids form a product, the first varying fastest; they use no random numbers
            values = np.asarray(dispersion.grid)
            drawn[dispersion.key] = values[(members // radix) % len(values)]
            radix *= len(values)
    return seeds, drawn


def _normal(normal, keys) -> np.ndarray:
    mean, sigma = np.asarray(normal.mean, float), np.asarray(normal.sigma, float)
    shape = np.broadcast_shapes(mean.shape, sigma.shape)
    low = -np.inf if normal.min is None else np.asarray(normal.min, float)
    high = np.inf if normal.max is None else np.asarray(normal.max, float)
    spread = sigma > 0
    # A truncated normal in standard units; an element with sigma 0 is its mean.
    lower = np.where(spread, (low - mean) / np.where(spread, sigma, 1.0), -np.inf) * np.ones(shape)
    upper = np.where(spread, (high - mean) / np.where(spread, sigma, 1.0), np.inf) * np.ones(shape)
    z = np.asarray(jax.vmap(lambda k: jax.random.truncated_normal(k, lower, upper, shape, jnp.float64))(keys))
    return np.clip(mean + sigma * z, low, high)  # the rounding of mean + sigma z stays inside the truncation


def member_scenario(scenario: Scenario, sweep: Sweep, member: int, seed, drawn: dict) -> Scenario:
    """Member ``member``: the scenario with its draws and its seed (``with_changes``)."""
    changes = {key: values for key, values in drawn.items()}
    changes["seed"] = int(seed)
    try:
        return scenarios.with_changes(scenario, changes, option=f"sweep member {member}")
    except ScenarioError as error:
        raise SweepError(f"member {member} ({describe(drawn)}) is not a valid scenario: "
                         + "; ".join(f"{p.path}: {p.message}" for p in error.problems)) from None


def changed(scenario: Scenario, changes: dict, member: int | None = None) -> Scenario:
    """``scenario`` with ``changes`` (dotted keys the sweep section validated) applied to its parsed
    tree and checked as :func:`hil.scenario.with_changes` checks them: each value by its field's
    type and bounds, then every section from the key's up to the scenario (where the checks that
    read several keys live). It gives the scenario ``with_changes`` gives (tests/test_sweep.py
    compares them) in about 1 % of its time, which reads and writes the whole file as YAML; the
    result's ``source`` is the base scenario's, so fly a member alone with :func:`member_scenario`."""
    check = Check()
    for key, value in changes.items():
        parts = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        owners = [scenario]
        for part in parts[:-1]:
            owners.append(owners[-1][part] if isinstance(part, int) else getattr(owners[-1], part))
        typed = schema.parse_field(type(owners[-1]), parts[-1], scenarios._plain(value), check, parts)
        if typed is None:
            continue
        for depth in range(len(parts) - 1, -1, -1):
            node = owners[depth]
            if isinstance(node, list):
                typed = [*node[:parts[depth]], typed, *node[parts[depth] + 1:]]
            else:
                typed = dataclasses.replace(node, **{parts[depth]: typed})
                node = typed
            if depth and hasattr(typed, "__check__"):
                typed.__check__(check, parts[:depth])
        scenario = typed
    if not check.problems:
        scenario.__check__(check, ())
    if check.problems:
        raise SweepError(f"member {member} ({describe(changes)}) is not a valid scenario: "
                         + "; ".join(f"{schema.format_path(p.path)}: {p.message}" for p in check.problems))
    return scenario


def member_of(results, member: int, scenario_path) -> tuple[Scenario, dict]:
    """Member ``member`` of the sweep whose results are in ``results`` (the folder ``hil sweep``
    wrote, or its members.csv or summary.json), rebuilt from the file ``scenario_path`` as the sweep
    built it: the file with the sweep's ``--set`` changes (from summary.json) must give the swept
    text (its ``scenario_sha256``), then :func:`draws` and :func:`member_scenario`. Returns the
    member's scenario (with its seed) and its draws; raises :class:`SweepError` naming the summary
    and what does not fit (another scenario, a member the sweep did not fly)."""
    results = Path(results)
    if results.is_dir():
        where = results / SUMMARY
    elif results.name in (TABLE, SUMMARY):
        where = results.with_name(SUMMARY)
    else:
        raise SweepError(f"{results}: neither a folder hil sweep wrote nor its {TABLE} or {SUMMARY}")
    try:
        summary = json.loads(where.read_text(encoding="utf-8"))
        name, path, digest, changes, runs = (summary[key] for key in ("scenario", "scenario_path", "scenario_sha256",
                                                                       "set", "runs"))
        if not (isinstance(changes, list) and all(isinstance(c, str) for c in changes) and isinstance(runs, int)):
            raise TypeError
    except OSError as error:
        raise SweepError(f"{where}: cannot read it ({error.strerror or error}): give the folder hil sweep wrote, "
                         "or its members.csv") from None
    except (ValueError, KeyError, TypeError):
        raise SweepError(f"{where}: not a summary hil sweep writes (it needs scenario, scenario_path, "
                         "scenario_sha256, set and runs)") from None
    if not 0 <= member < runs:
        raise SweepError(f"{where}: member {member} was not flown: the sweep flew members 0 to {runs - 1}")
    swept_from = f"a sweep of {name!r} from {path}" + "".join(f" --set {change}" for change in changes)
    loaded = scenarios.load(scenario_path)
    try:
        swept = scenarios.with_changes(loaded, changes, option="--set")
    except ScenarioError as error:
        raise SweepError(f"{where}: {swept_from}; its --set changes do not apply to {scenario_path}: "
                         + "; ".join(f"{p.path}: {p.message}" for p in error.problems)) from None
    if fingerprint(swept) != digest:
        why = (f"{scenario_path} is {loaded.name!r}" if loaded.name != name else
               f"{scenario_path} is not the text that was swept (changed since?)")
        raise SweepError(f"{where}: {swept_from}; {why}")
    sweep = plan(swept, runs)
    seeds, drawn = draws(swept, sweep, [member])
    picked = {key: values[0] for key, values in drawn.items()}
    return member_scenario(swept, sweep, member, seeds[0], picked), picked


def describe(drawn: dict) -> str:
    return ", ".join(f"{key}={_text(value)}" for key, value in drawn.items()) or "the seed alone"


def _text(value) -> str:
    """A drawn value as a person reads it; a whole number (a seed, an index) whole, to be given again."""
    def number(x):
        return str(x) if isinstance(x, int) else f"{x:.6g}"

    value = np.asarray(value)
    if value.ndim:
        return "[" + ", ".join(number(x) for x in value.tolist()) + "]"
    return number(value.item())


# ---- expectations on the device -------------------------------------------------------------------

class DeviceMonitor:
    """One expectation's running state inside the compiled program, as :class:`Monitor` keeps it
    on the host: ``read(state, tick, row, inside)`` once a tick, the state carried :meth:`packed`
    (every field 0 before the first row), and :meth:`monitor` to turn a member's final state into
    a host Monitor."""

    def __init__(self, expectation: Expectation, layout: dict, rate_hz: float):
        self.expectation, self.layout, self.rate_hz = expectation, layout, rate_hz
        self.kind, self.check = expectation.kind(), expectation.check()
        names = ("reached", "closest") if self.kind == "reach" else ("extreme", "bad")
        # has_<name>: whether <name> holds a (value or distance, time) pair; within's extreme: (min, max)
        self.fields = ("seen", *(field for name in names for field in (f"has_{name}", f"{name}_a", f"{name}_b")))
        self.flags = tuple(field == "seen" or field.startswith("has_") for field in self.fields)

    def packed(self, state: dict):
        """``state`` (traced) as one array, its fields along the last axis, flags as 0 and 1: a
        tick writes one buffer a member, not seven."""
        return jnp.stack([jnp.asarray(state[field], jnp.float64) for field in self.fields], axis=-1)

    def unpacked(self, array) -> dict:
        """:meth:`packed`'s array (NumPy or traced) as the state."""
        return {field: array[..., index] != 0 if flag else array[..., index]
                for index, (field, flag) in enumerate(zip(self.fields, self.flags))}

    def read(self, state: dict, tick, row, inside) -> dict:
        """Take a member's ``row`` of ``tick`` into account where ``inside`` (a tick of the run).

        One row a call, each tick as it is made: the host's minima, maxima and firsts over rows
        are selects on one number, with no reduction, arg-extreme or gather over a row of one."""
        time = tick / self.rate_hz  # as the host computes it: the same division
        if self.kind == "reach":
            return self._read_reach(state, time, row, inside)
        check = self.check
        window = inside & (time >= check.after - 1e-12)
        if self.kind == "within" and check.until is not None:
            window &= time <= check.until + 1e-12
        value = quantity(row[None], self.layout, check.quantity)[0]
        finite = jnp.isfinite(value)
        usable = window & finite
        had = state["has_extreme"]
        new = dict(state, seen=state["seen"] | window, has_extreme=had | usable)
        if self.kind == "within":
            out = ~finite
            if check.min is not None:
                out |= value < check.min
            if check.max is not None:
                out |= value > check.max
            new["extreme_a"] = jnp.where(usable, jnp.where(had, jnp.minimum(state["extreme_a"], value), value),
                                         state["extreme_a"])
            new["extreme_b"] = jnp.where(usable, jnp.where(had, jnp.maximum(state["extreme_b"], value), value),
                                         state["extreme_b"])
        else:
            above = self.kind == "never_above"
            out = ~finite | ((value > check.bound) if above else (value < check.bound))
            worse = (value > state["extreme_a"]) if above else (value < state["extreme_a"])
            take = usable & (~had | worse)
            new["extreme_a"] = jnp.where(take, value, state["extreme_a"])
            new["extreme_b"] = jnp.where(take, time, state["extreme_b"])
        first_bad = ~state["has_bad"] & window & out
        new["bad_a"] = jnp.where(first_bad, value, state["bad_a"])
        new["bad_b"] = jnp.where(first_bad, time, state["bad_b"])
        new["has_bad"] = state["has_bad"] | first_bad
        return new

    def _read_reach(self, state, time, row, inside):
        check = self.check
        active = ~state["has_reached"]  # the host's Monitor stops reading once the point is reached
        window = inside & (time < check.before) & (time >= check.after - 1e-12)
        position = column(row[None], self.layout, "position")
        distance = jnp.linalg.norm(position - jnp.asarray(check.point), axis=1)[0]
        distance = jnp.where(window & jnp.isfinite(distance), distance, jnp.inf)
        reached = active & (distance <= check.tolerance)
        take = active & jnp.isfinite(distance) & (~state["has_closest"] | (distance < state["closest_a"]))
        return {"seen": state["seen"] | (active & window),
                "has_reached": state["has_reached"] | reached,
                "reached_a": jnp.where(reached, distance, state["reached_a"]),
                "reached_b": jnp.where(reached, time, state["reached_b"]),
                "has_closest": state["has_closest"] | take,
                "closest_a": jnp.where(take, distance, state["closest_a"]),
                "closest_b": jnp.where(take, time, state["closest_b"])}

    def monitor(self, state: dict, member: int) -> Monitor:
        """A host :class:`Monitor` holding member ``member``'s final device state."""
        monitor = Monitor(self.expectation, self.layout, self.rate_hz)

        def pair(name):
            return ((float(state[f"{name}_a"][member]), float(state[f"{name}_b"][member]))
                    if state[f"has_{name}"][member] else None)

        monitor.seen = bool(state["seen"][member])
        if self.kind == "reach":
            monitor.reached, monitor.closest = pair("reached"), pair("closest")
        else:
            monitor.extreme = pair("extreme")
            bad = pair("bad")
            monitor.first_bad = None if bad is None else (bad[1], bad[0])  # the host keeps (time, value)
        return monitor

    def measured(self, state: dict) -> dict[str, np.ndarray]:
        """Per member, the measured number(s) of the CSV: NaN where there is none."""
        def value(name, part="a"):
            return np.where(state[f"has_{name}"], state[f"{name}_{part}"], np.nan)

        if self.kind == "within":
            return {"min": value("extreme", "a"), "max": value("extreme", "b")}
        if self.kind == "reach":
            return {"distance": np.where(state["has_reached"], state["reached_a"], value("closest"))}
        return {"max" if self.kind == "never_above" else "min": value("extreme")}

    def margin(self, state: dict) -> np.ndarray:
        """How far past its bound each member went (positive: failed by that much); NaN values count
        as infinitely far."""
        check, measured = self.check, self.measured(state)
        if self.kind == "within":
            parts = [np.full(measured["min"].shape, -np.inf)]
            if check.min is not None:
                parts.append(check.min - measured["min"])
            if check.max is not None:
                parts.append(measured["max"] - check.max)
            margin = np.max(parts, axis=0)
        elif self.kind == "reach":
            margin = measured["distance"] - check.tolerance
        elif self.kind == "never_above":
            margin = measured["max"] - check.bound
        else:
            margin = check.bound - measured["min"]
        return np.where(np.isnan(margin), np.inf, margin)


# ---- the program ----------------------------------------------------------------------------------

_PROGRAMS: dict = {}  # (structure, parameter layout, ticks, segments, expectations, traces) -> Flight
_EXPORTED: dict = {}  # a segment's cache name (Flight.traced) -> its export, traced once a process
MEMBERS = "members"  # the vmap axis of a device's members
# A chunk flies as this many calls of its program, its state carried from one to the next on the
# device, so that progress shows within a chunk (a chunk of the 20 s hover is seconds of flight).
SEGMENTS = 10


@dataclass(frozen=True)
class Flight:
    """The program one device flies, ``segment(params, carry, first tick) -> (carry, rows)``,
    called ``segments`` times from :meth:`start`'s carry, ``segment_ticks`` ticks a call; each
    call the same executable, so a member's bits do not depend on the number of calls. The carry
    is (tick state, monitor states, each member's last row); ``rows`` (ticks of a segment,
    members, row) with keep_traces, else None. ``identity`` names the program for the
    traced-tick cache (:mod:`hil.tick_cache`), with its arguments' shapes."""

    tick: Tick
    monitors: tuple
    segment: Callable
    segments: int
    segment_ticks: int
    ticks: int
    identity: str
    custom_call: str | None

    def traced(self, specs: tuple) -> Callable:
        """The segment traced for :func:`_arguments`' ``specs`` (whatever their device), through the
        traced-tick cache: a warm start neither traces nor lowers it. The export takes and gives
        lists of arrays (a serialised export names no Python class); the function returned takes
        and gives the trees."""
        params_tree, carry_tree = (jax.tree_util.tree_structure(tree) for tree in specs[:2])  # both follow from identity
        shapes = tuple((leaf.shape, str(leaf.dtype)) for leaf in jax.tree_util.tree_leaves(specs))
        name = tick_cache.key(hashlib.sha256(repr((self.identity, shapes)).encode()).hexdigest())
        if name not in _EXPORTED:
            def on_leaves(params, carry, first_tick):
                carry, rows = self.segment(jax.tree_util.tree_unflatten(params_tree, params),
                                           jax.tree_util.tree_unflatten(carry_tree, carry), first_tick)
                return jax.tree_util.tree_leaves(carry), rows

            flat = [jax.tree_util.tree_leaves(tree) for tree in specs[:2]]
            members = flat[0][0].shape[0]  # the first parameter's member axis
            _EXPORTED[name] = tick_cache.exported(on_leaves, (*flat, specs[2]), name, self.custom_call,
                                                  f"the sweep's program ({members} members a device)")
        exported = _EXPORTED[name]

        def segment(params, carry, first_tick):
            carry, rows = exported.call(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(carry), first_tick)
            return jax.tree_util.tree_unflatten(carry_tree, carry), rows

        return segment

    def start(self, states: SimState) -> tuple:
        """The carry before tick 0 of a device's members, from their states (:func:`stacked_states`)."""
        members = len(states.command)
        judged = [np.zeros((members, len(m.fields))) for m in self.monitors]  # packed: every field starts at 0
        return states, judged, np.zeros((members, self.tick.width))

    def traces(self, rows: list) -> np.ndarray:
        """Each segment's ``rows`` of a device, in order -> (members, ticks, row)."""
        rows = np.concatenate(rows)[:self.ticks]  # (ticks, members, row)
        return np.ascontiguousarray(np.moveaxis(rows, 1, 0))


def _program(structure, treedef, ticks: int, expect: tuple, keep_traces: bool) -> Flight:
    """The :class:`Flight` one device flies.

    One loop over ticks steps all of its members together (``vmap``) with one shared tick
    counter, so the sensors due and tick 0 are branches for the batch, not per-member selects
    (:class:`hil.tick.Tick`), and judges each tick's rows as they are made. The few ticks past
    the run's end (fewer than the segments), flown in the last segment, are neither judged nor
    returned."""
    key = (structure, treedef, ticks, SEGMENTS, expect, keep_traces)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    tick = Tick(structure, batch_axis=MEMBERS)
    monitors = tuple(DeviceMonitor(e, tick.layout, structure.rate) for e in expect)
    segments = min(SEGMENTS, ticks)
    segment_ticks = -(-ticks // segments)
    shared_tick = SimState(tick=None, vehicle=0, wind=0, channels=0, firmware=0, command=0, acceleration=0)
    step = jax.vmap(tick.step, in_axes=(0, shared_tick), out_axes=(shared_tick, 0), axis_name=MEMBERS)
    reads = [jax.vmap(m.read, in_axes=(0, None, 0, None)) for m in monitors]

    def fly_members(params, carry, first_tick):
        def one_tick(carry, number):
            # Judged as each row is made. Kept for a block of ticks and judged then, the rows (150
            # ticks x 512 members x 45 numbers: 28 MB) went through memory, zeroed, written and
            # read: an eighth of a tick's time. The verdicts are the same (minima, maxima, firsts).
            state, judged, last = carry
            state, row = step(params, state)
            judged = [m.packed(read(m.unpacked(j), number, row, number < ticks))
                      for m, read, j in zip(monitors, reads, judged)]
            last = jax.lax.cond(number == ticks - 1, lambda: row, lambda: last)
            return (state, judged, last), (row if keep_traces else None)

        return jax.lax.scan(one_tick, carry, first_tick + jnp.arange(segment_ticks, dtype=jnp.int64))

    flight = Flight(tick, monitors, fly_members, segments, segment_ticks, ticks, repr(("sweep segment", key)),
                    custom_call(structure))
    _PROGRAMS[key] = flight
    return flight


# ---- the sweep ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where a sweep's scenario came from: its file and the ``--set`` changes applied to it, so that
    summary.json says how to rebuild any member (:func:`member_of`)."""
    path: str
    changes: tuple[str, ...] = ()


def fingerprint(scenario: Scenario) -> str:
    """SHA-256 of the scenario's text as swept (its file's, or the text ``with_changes`` wrote)."""
    return hashlib.sha256(scenario.source.encode("utf-8")).hexdigest()


@dataclass
class SweepResult:
    scenario: Scenario
    sweep: Sweep
    seeds: np.ndarray  # (members,) the seed each member flew
    draws: dict  # key -> (members, ...) drawn values
    expectations: list  # of Expectation
    outcomes: list  # per member, its list of Outcome (the scenario's order)
    measured: list  # per expectation, {label: (members,) numbers}
    margins: np.ndarray  # (members, expectations): positive is past the bound
    final_rows: np.ndarray  # (members, width): each member's last row (tick = scenario.ticks)
    layout: dict
    traces: np.ndarray | None = None  # (members, ticks + 1, width) with keep_traces
    wall_seconds: float = 0.0  # building the members and flying them, compilation included
    first_chunk_seconds: float = 0.0  # to the first chunk's results, compilation included
    flight_seconds: float = 0.0  # in the compiled programs: neither building members nor compiling or loading
    chunk: int = 0
    devices: int = 0  # the chunk split evenly over this many devices: a member's bits follow chunk / devices
    platform: str = ""  # theirs: cpu, gpu
    member_ticks: int = 0
    origin: Origin | None = None  # the scenario's file and --set changes, for summary.json
    passed: np.ndarray = field(init=False)  # (members, expectations)

    def __post_init__(self):
        self.passed = np.array([[o.passed for o in member] for member in self.outcomes], dtype=bool).reshape(
            len(self.outcomes), len(self.expectations))

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    def pass_rates(self) -> list[tuple[float, float, float]]:
        """Per expectation: (pass rate, Wilson 95 % interval low, high)."""
        return [(k / self.runs, *wilson(k, self.runs)) for k in self.passed.sum(axis=0).tolist()]

    @property
    def ok(self) -> bool:
        """Every expectation's pass rate reaches ``sweep.require``."""
        return all(rate >= self.sweep.require for rate, _, _ in self.pass_rates())

    def worst(self, expectation: int, count: int = WORST) -> list[int]:
        """The members furthest past (or closest to) the expectation's bound, worst first."""
        order = np.lexsort((np.arange(self.runs), -self.margins[:, expectation]))
        return order[:count].tolist()

    def associated(self, expectation: int) -> list[dict]:
        """The drawn values (a list key element by element) by the strength of their Spearman rank
        correlation with how far members went past the expectation's bound, strongest first;
        positive: larger values fail more. Values the same for every member are left out."""
        margin = _ranks(self.margins[:, expectation])
        found = []
        for name, values in self._draw_columns():
            rho = _correlation(_ranks(np.asarray(values, dtype=float)), margin)
            if rho is not None:
                found.append({"draw": name, "spearman": rho})
        return sorted(found, key=lambda entry: -abs(entry["spearman"]))

    def _draw_columns(self) -> list[tuple[str, list]]:
        """Each drawn value: a list key element by element, ``key[0]``, ``key[1]``, ..."""
        cols = []
        for key, values in self.draws.items():
            values = np.asarray(values)
            if values.ndim == 1:
                cols.append((key, values.tolist()))
            else:
                cols += [(f"{key}[{i}]", values[:, i].tolist()) for i in range(values.shape[1])]
        return cols

    def columns(self) -> list[tuple[str, list]]:
        """The per-member table: (header, values)."""
        cols = [("member", list(range(self.runs))), ("seed", [int(s) for s in self.seeds]), *self._draw_columns()]
        for index, expectation in enumerate(self.expectations):
            cols.append((f"{expectation.name}: passed", self.passed[:, index].astype(int).tolist()))
            for label, values in self.measured[index].items():
                cols.append((f"{expectation.name}: {label}", values.tolist()))
        return cols

    def write_csv(self, path: Path) -> None:
        columns = self.columns()
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow([name for name, _ in columns])
            for row in zip(*(values for _, values in columns)):
                writer.writerow([_cell(v) for v in row])

    def summary(self) -> dict:
        expectations = []
        for index, (expectation, (rate, low, high)) in enumerate(zip(self.expectations, self.pass_rates())):
            worst = []
            for member in self.worst(index):
                outcome = self.outcomes[member][index]
                worst.append({"member": member, "seed": int(self.seeds[member]), "passed": outcome.passed,
                              "measured": outcome.measured, "detail": outcome.detail,
                              "draws": {key: np.asarray(v[member]).tolist() for key, v in self.draws.items()}})
            expectations.append({
                "name": expectation.name, "kind": expectation.kind(), "bound": self.outcomes[0][index].bound,
                "passed": int(self.passed[:, index].sum()), "runs": self.runs, "pass_rate": rate,
                "wilson_95": [low, high], "meets_require": rate >= self.sweep.require, "worst": worst,
                "associated": self.associated(index)})
        origin = self.origin or Origin("")
        return {"scenario": self.scenario.name, "scenario_path": origin.path, "set": list(origin.changes),
                "scenario_sha256": fingerprint(self.scenario), "runs": self.runs, "sweep_seed": self.sweep.seed,
                "vary_seed": self.sweep.vary_seed, "require": self.sweep.require,
                "dispersions": [d.key for d in self.sweep.dispersions], "ticks_per_member": self.scenario.ticks + 1,
                "member_ticks": self.member_ticks, "chunk": self.chunk, "devices": self.devices,
                "platform": self.platform, "wall_seconds": self.wall_seconds,
                "passed": self.ok, "expectations": expectations}

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``members.csv`` and ``summary.json`` in ``folder`` (made if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        table, summary = folder / TABLE, folder / SUMMARY
        self.write_csv(table)
        summary.write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        return table, summary

    def write_traces(self, path: Path) -> Path:
        """The members' rows (flown with ``keep_traces``) as NumPy's ``.npz``: ``rows`` (members,
        ticks, columns), ``columns`` (each column's name, as ``hil export --format csv`` names
        it), ``passed`` (members, expectations), ``expectations``, ``rate_hz``."""
        from hil.export import _columns

        if self.traces is None:
            raise SweepError("the sweep was flown without keep_traces: it has no rows to write")
        names = np.empty(self.traces.shape[-1], dtype=object)
        for name, index in _columns(self.layout):
            names[index] = name
        np.savez(path, rows=self.traces, columns=names.astype(str), passed=self.passed,
                 expectations=np.array([e.name for e in self.expectations], dtype=str),
                 rate_hz=self.scenario.physics.rate_hz)
        return path

    def verdicts(self) -> list[Outcome]:
        """Per expectation, the sweep's verdict as a run's :class:`Outcome`: passed when its pass
        rate reaches ``sweep.require``; measured, the failure rate with its Wilson 95 % interval;
        the detail, the worst members (number, seed, draws, measured value and bound)."""
        found = []
        for index, (expectation, (rate, low, high)) in enumerate(zip(self.expectations, self.pass_rates())):
            failed = self.runs - int(self.passed[:, index].sum())
            worst = []
            for member in self.worst(index):
                outcome = self.outcomes[member][index]
                drawn = {key: values[member] for key, values in self.draws.items()}
                worst.append(f"  member {member} ({'passed' if outcome.passed else 'FAILED'}): seed "
                             f"{int(self.seeds[member])}, {describe(drawn)}; measured {outcome.measured}, "
                             f"bound {outcome.bound}")
            found.append(Outcome(
                expectation.name, expectation.kind(), rate >= self.sweep.require,
                f"failure rate {100 * (1 - rate):.2f} % ({failed}/{self.runs} members; 95 % interval "
                f"{100 * (1 - high):.2f} % to {100 * (1 - low):.2f} %)",
                f"pass rate at least {self.sweep.require:.4g}", "worst members:\n" + "\n".join(worst)))
        return found

    def write_junit(self, path: Path) -> None:
        """JUnit XML by :func:`hil.reports.write_junit`, the writer of ``hil run --junit``: the sweep is
        shown to it as one run whose outcomes are :meth:`verdicts`; its properties are the sweep's
        seed, ``sweep of N members`` and the member-ticks flown."""
        from hil import reports

        reports.write_junit(SimpleNamespace(
            scenario=SimpleNamespace(name=self.scenario.name, seed=self.sweep.seed), outcomes=self.verdicts(),
            failure=None, wall_seconds=self.wall_seconds, runtime=f"sweep of {self.runs} members (in-process)",
            trace=SimpleNamespace(ticks_done=self.member_ticks)), path)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    scale = math.sqrt(float(a @ a) * float(b @ b))
    return None if scale == 0 else float(a @ b) / scale


def _cell(value):
    if isinstance(value, float):
        return repr(value)  # every bit: two sweeps' tables compare as text
    return value


def wilson(passed: int, runs: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion."""
    if runs == 0:
        return 0.0, 1.0
    p = passed / runs
    centre = (p + z * z / (2 * runs)) / (1 + z * z / runs)
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / (1 + z * z / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Chunk:
    """What one chunk of members brings back from its program: only the judged states, unless
    traces are kept."""

    members: range
    shape: tuple  # (structure, parameter layout, leaf shapes): members of one sweep must share it
    judged: list[dict[str, np.ndarray]]  # per expectation, its monitor state per member
    last: np.ndarray  # (members, row) each member's last row
    rows: np.ndarray | None  # (members, ticks, row) with keep_traces
    flight_seconds: float  # from the first call of its programs, their executables ready


@dataclass(frozen=True)
class ChunkPlan:
    """Everything a chunk is flown from: plain data, so an executor can send it elsewhere."""

    scenario: Scenario  # without its sweep section: a member's checks need not check the sweep again
    sweep: Sweep
    chunk: int  # members per program (the last chunk is padded to it)
    keep_traces: bool
    devices: int | None  # local devices to split over; None: all
    build_processes: int = 0  # processes that build a chunk's members in parts (build_chunk); 0: this one


def build_chunk(job: ChunkPlan, members: range, builders: ProcessPoolExecutor | None = None,
                stop: threading.Event | None = None) -> tuple[tuple, dict, SimState]:
    """Host work: the shape of the chunk's program, and its members' parameters and states before
    tick 0 (each as :meth:`hil.tick.Tick.init` makes it for a run alone), stacked. ``builders``
    (:func:`member_builders`): ``job.build_processes`` processes that build the members in equal
    parts, to the same numbers. ``stop``: once set, a thread building the members gives up between
    two of them (:class:`Stopped`): nobody will read them."""
    started = time.perf_counter()
    if builders is None:
        parts = [members]
        built = [_built(job, members, stop)]
    else:
        size = -(-len(members) // job.build_processes)
        parts = [range(first, min(first + size, members.stop)) for first in range(members.start, members.stop, size)]
        try:
            built = list(builders.map(_built, [job] * len(parts), parts))
        except BrokenProcessPool:
            raise SweepError(f"members {members.start}-{members.stop - 1}: a process building them ended abruptly "
                             "(out of memory?); try fewer --build-processes") from None
    reference = built[0][0]
    for part, (shape, _, _) in zip(parts[1:], built[1:]):
        if shape != reference:
            raise _changes_the_tick(f"member {part.start}", shape, reference, f"member {members.start}'s")
    padding = job.chunk - len(members)  # the last chunk padded with its last member: one program per chunk size

    def joined(*leaves):  # the shared tick counter has no member axis: every part's is the same
        if not np.ndim(leaves[0]):
            return leaves[0]
        return np.concatenate([*leaves, np.repeat(leaves[-1][-1:], padding, axis=0)])

    params, states = jax.tree_util.tree_map(joined, *((part_params, part_states) for _, part_params, part_states
                                                      in built))
    seconds = time.perf_counter() - started
    log.info("members %d-%d built on the host in %.1f s (%.2f ms a member%s)", members.start, members.stop - 1,
             seconds, seconds / len(members) * 1e3, f", {len(parts)} processes" if len(parts) > 1 else "")
    return reference, params, states


class Stopped(Exception):
    """A chunk's build given up: the sweep it was for has ended."""


def _built(job: ChunkPlan, members: range, stop: threading.Event | None = None) -> tuple[tuple, dict, SimState]:
    """:func:`build_chunk`'s work for ``members``, unpadded: NumPy, but for the draws (on the CPU)."""
    seeds, drawn = draws(job.scenario, job.sweep, np.array(members))
    built, states, reference = [], [], None
    for index, member in enumerate(members):
        if stop is not None and stop.is_set():
            raise Stopped(f"members {members.start}-{members.stop - 1}")
        picked = {key: values[index] for key, values in drawn.items()}
        structure, params = build(changed(job.scenario, {**picked, "seed": seeds[index]}, member),
                                  in_process_firmware=True)
        shape = _shape(structure, params)
        if reference is None:
            reference, tick = shape, Tick(structure)
        elif shape != reference:
            raise _changes_the_tick(f"member {member} ({describe(picked)})", shape, reference,
                                    f"member {members.start}'s")
        built.append(params)
        states.append(tick.init(params))
    return reference, stacked(built), stacked_states(states)


@contextlib.contextmanager
def member_builders(processes: int) -> Iterator[ProcessPoolExecutor | None]:
    """``processes`` processes that build members (:func:`build_chunk`), or None for fewer than two;
    stopped, their queued work dropped, when the ``with`` ends. Each computes on its CPU alone, with
    hil's JAX settings: it never takes an accelerator's memory. They are started afresh (``spawn``:
    JAX's threads make a fork unsafe), so, as with any such pool, a script of your own that asks
    for them runs its work under ``if __name__ == "__main__":``."""
    if processes < 2:
        yield None
        return
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_builder_started)
    try:
        for _ in range(processes):  # a pool starts its processes as work comes: start them now, to import meanwhile
            pool.submit(os.getpid)
        yield pool
    finally:
        # A process building a part goes on until the part is built (minutes for a large chunk),
        # whoever waits for it: stopped instead. The pool names its processes only privately before
        # Python 3.14's terminate_workers.
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()


def _builder_started() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the pool
    jax.config.update("jax_platforms", "cpu")  # before JAX starts a backend, at this process's first draw
    jaxconfig.configure()


def default_build_processes(firmware: str) -> int:
    """Processes that build members when ``hil sweep`` is not told, for a sweep of ``firmware``: none
    where the members fly on the CPU's cores (a thread builds the next chunk meanwhile), every core
    but one, the driver's, where they fly on accelerators: one core builds about 500 members a
    second, a GPU's chunk of 16,384 in half a minute."""
    if firmware not in FIRMWARES:
        return 0  # fly() says why such a sweep cannot fly
    return 0 if flight_devices(firmware)[0].platform == "cpu" else max(len(os.sched_getaffinity(0)) - 1, 0)


def stacked(trees: list):
    """Members' trees (parameters, states) stacked leaf by leaf on a first axis, the member axis."""
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def stacked_states(states: list[SimState]) -> SimState:
    """Members' states stacked, the tick counter (the same for all) shared."""
    return dataclasses.replace(stacked(states), tick=np.asarray(states[0].tick))


def _shape(structure, params) -> tuple:
    """What a member's program is compiled for: its tick's structure and its parameters' layout."""
    leaves, layout = jax.tree_util.tree_flatten(params)
    # Read off NumPy's leaves directly: np.shape and np.asarray cost a microsecond a leaf, and
    # every member of a sweep is checked.
    return (structure, layout, tuple((x.shape, x.dtype) if isinstance(x, (np.ndarray, np.generic)) else
                                     (np.shape(x), np.asarray(x).dtype) for x in leaves))


def fly_built(job: ChunkPlan, members: range, shape: tuple, stacked, states: SimState,
              flown: Callable[[int], None]) -> Chunk:
    """Fly a built chunk on this host's devices: an equal share on each, each device running the
    same program at once (one thread each). A device's program is the same whatever the number of
    devices, so a member's bits depend only on how many members a device flies at a time.
    ``flown(member_ticks)`` is called from the devices' threads as each segment lands."""
    spread = _spread(job)
    flight = _chunk_program(job, shape)
    share = job.chunk // len(spread)
    def part(tree, index):
        return jax.tree_util.tree_map(lambda leaf: leaf[index * share:(index + 1) * share] if np.ndim(leaf) else leaf,
                                      tree)

    parts = [part(stacked, index) for index in range(len(spread))]
    starts = [flight.start(part(states, index)) for index in range(len(spread))]
    executables = _compiled_for(flight, [_arguments(part, start, device)
                                         for part, start, device in zip(parts, starts, spread)], spread)
    flying = time.perf_counter()
    real = [min(share, max(0, len(members) - index * share)) for index in range(len(spread))]

    def fly_on(index: int):
        device, run = spread[index], executables[index]
        params, carry = jax.device_put((parts[index], starts[index]), device)
        rows = []
        for segment in range(flight.segments):
            first = segment * flight.segment_ticks
            carry, segment_rows = run(params, carry, jax.device_put(np.int64(first), device))
            if job.keep_traces:
                rows.append(np.asarray(segment_rows))
            jax.block_until_ready(carry)
            if real[index]:
                ticks = min(first + flight.segment_ticks, flight.ticks) - min(first, flight.ticks)
                flown(real[index] * ticks)
        _, judged, last = jax.device_get(carry)
        judged = [monitor.unpacked(state) for monitor, state in zip(flight.monitors, judged)]
        return judged, last, flight.traces(rows) if job.keep_traces else None

    with ThreadPoolExecutor(max_workers=len(spread), thread_name_prefix="hil-sweep-device") as devices:
        flown_parts = list(devices.map(fly_on, range(len(spread))))
    judged, last, rows = jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves), *flown_parts)
    seconds = time.perf_counter() - flying
    count = len(members)
    log.info("members %d-%d flown in %.1f s on %d device%s: %.0f k member-ticks/s%s", members.start, members.stop - 1,
             seconds, len(spread), "s" if len(spread) > 1 else "", count * flight.ticks / seconds / 1e3,
             f" (the chunk padded to {job.chunk} members)" if count < job.chunk else "")
    return Chunk(members, shape, [{k: v[:count] for k, v in state.items()} for state in judged], last[:count],
                 rows[:count] if job.keep_traces else None, seconds)


def _arguments(params, carry, device) -> tuple:
    """The shapes of a segment's arguments on ``device``: a leaf's first axis is its member axis
    (the shared tick counter has none)."""
    sharding = jax.sharding.SingleDeviceSharding(device)

    def spec(leaf):
        return jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype, sharding=sharding)

    return (jax.tree_util.tree_map(spec, params), jax.tree_util.tree_map(spec, carry),
            jax.ShapeDtypeStruct((), np.int64, sharding=sharding))


def flight_devices(firmware: str) -> list:
    """The local devices a sweep of ``firmware`` flies on: the default backend's (a GPU host's
    GPUs), or the CPU's, one a core, for a firmware whose code runs on the CPU alone (its
    module's ``PLATFORMS``: quad_pid_c's C code is an FFI call for the CPU)."""
    platforms = getattr(FIRMWARES[firmware], "PLATFORMS", None)
    if platforms is None or jax.default_backend() in platforms:
        return jax.local_devices()
    return jax.local_devices(backend=platforms[0])


def _spread(job: ChunkPlan) -> list:
    """The local devices a chunk's members are shared over."""
    local = flight_devices(job.scenario.firmware.name)
    return local[:job.devices or len(local)]


def _chunk_program(job: ChunkPlan, shape: tuple) -> Flight:
    ticks = job.scenario.ticks + 1  # rows 0 .. ticks, as a run alone has
    return _program(shape[0], shape[1], ticks, tuple(job.scenario.expect), job.keep_traces)


_EXECUTABLES: dict = {}  # (program, its arguments' shapes, device) -> the program compiled for that device


def _compiled_for(flight: Flight, arguments: list[tuple], devices: list) -> list[jax.stages.Compiled]:
    """``flight``'s segment compiled for each device, for its :func:`_arguments`, one device after
    the other: XLA compiles the tick in 5-7 s on both cores, two compilations at once took longer
    than one after the other, and the devices after the first load the first's executable from
    the persistent compilation cache, whose key names no CPU device
    (:func:`hil.jaxconfig.configure`)."""
    compiled = []
    for device, specs in zip(devices, arguments):
        key = (flight.segment, tuple((leaf.shape, leaf.dtype) for leaf in jax.tree_util.tree_leaves(specs)), device)
        if key not in _EXECUTABLES:
            started = time.perf_counter()
            # The carry is donated: each segment's state is written over the one before it.
            _EXECUTABLES[key] = jaxconfig.compiled(jax.jit(flight.traced(specs), donate_argnums=1).lower(*specs))
            log.info("the sweep's program ready on %s in %.1f s (compiled by XLA, or loaded from JAX's compilation "
                     "cache)", device, time.perf_counter() - started)
        compiled.append(_EXECUTABLES[key])
    return compiled


def _compile_ahead(job: ChunkPlan, pool: ThreadPoolExecutor) -> tuple[tuple, Future]:
    """Trace the chunk's program on this thread from the scenario itself, then compile it for the
    first device on ``pool``: XLA's compilation (seconds) leaves Python free for the host to build
    the chunk. Returns the shape it was traced for, which every chunk must have (a dispersion
    changes numbers alone), and the compilation."""
    structure, params = build(job.scenario, in_process_firmware=True)
    shape = _shape(structure, params)
    spread = _spread(job)
    share = job.chunk // len(spread)
    flight = _chunk_program(job, shape)
    carry = flight.start(stacked_states([Tick(structure).init(params)] * share))
    specs = _arguments(stacked([params] * share), carry, spread[0])
    flight.traced(specs)  # traced and exported here (or loaded), before the build takes Python
    return shape, pool.submit(_compiled_for, flight, [specs], spread[:1])


def fly_chunk(job: ChunkPlan, members: range, flown: Callable[[int], None]) -> Chunk:
    """Build and fly one chunk: what a remote executor runs (``flown``: as :func:`fly_built`)."""
    with member_builders(job.build_processes) as builders:
        built = build_chunk(job, members, builders)
    return fly_built(job, members, *built, flown=flown)


def fly_locally(job: ChunkPlan, chunks: list[range], flown: Callable[[int], None]) -> Iterator[Chunk]:
    """The chunks in order on this host: the first chunk built on a thread while the program is
    compiled (:func:`_compile_ahead`); each next chunk built while the one before it flies."""
    background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hil-sweep-build")
    # Set when the sweep ends early (an error, Ctrl-C): a chunk being built for it is given up, so
    # that the interpreter, which waits for the pool's threads at exit, is not held for minutes.
    stopping = threading.Event()
    try:
        with member_builders(job.build_processes) as builders:  # started now: they import while the program is traced
            # Tracing is Python, as building is: built while it traced, both took longer. XLA's
            # compilation leaves Python to the build.
            traced, compiling = _compile_ahead(job, background)
            following = background.submit(build_chunk, job, chunks[0], builders, stopping)
            wait([following, compiling], return_when=FIRST_EXCEPTION)  # a member that cannot fly says so at once
            built = following.result()
            compiling.result()
            for index, members in enumerate(chunks):
                if built[0] != traced:
                    raise _changes_the_tick(f"member {members.start}", built[0], traced, "the scenario's")
                following = background.submit(build_chunk, job, chunks[index + 1], builders, stopping) \
                    if index + 1 < len(chunks) else None
                yield fly_built(job, members, *built, flown=flown)
                built = following and following.result()
    finally:
        stopping.set()
        background.shutdown(wait=False, cancel_futures=True)


def _ray_executor(job: ChunkPlan, chunks: list[range], flown: Callable[[int], None]) -> Iterator[Chunk]:
    from hil import sweep_ray  # an optional extra: hil[ray]

    return sweep_ray.fly(job, chunks, flown)


# (the job, its chunks, flown(member_ticks) as the flight goes) -> the chunks flown
Executor = Callable[[ChunkPlan, list[range], Callable[[int], None]], Iterator[Chunk]]
EXECUTORS: dict[str, Executor] = {"local": fly_locally, "ray": _ray_executor}


def fly(scenario: Scenario, runs: int | None = None, chunk: int | None = None, progress: Progress | None = None,
        keep_traces: bool = False, devices: int | None = None,
        executor: str = "local", build_processes: int = 0) -> SweepResult:
    """Fly ``runs`` members of ``scenario``'s sweep (its ``sweep.runs`` by default), ``chunk`` at a
    time through one compiled program, split over ``devices`` local devices (default: all of
    them), the chunks flown by ``executor`` (:data:`EXECUTORS`), their members built by
    ``build_processes`` processes (:func:`member_builders`; default: by a thread of this one);
    raises :class:`SweepError` for a sweep that cannot fly."""
    started = time.perf_counter()
    sweep = plan(scenario, runs)
    runs = sweep.runs
    if scenario.firmware.name not in FIRMWARES:
        raise SweepError(f"firmware {scenario.firmware.name} cannot fly inside the compiled tick; a sweep flies "
                         f"{' or '.join(FIRMWARES)}")
    if executor not in EXECUTORS:
        raise SweepError(f"--executor {executor}: not one of {', '.join(EXECUTORS)}")
    local = flight_devices(scenario.firmware.name)
    if devices is not None and not 1 <= devices <= len(local):
        raise SweepError(f"--devices {devices}: this host has {len(local)} {local[0].platform.upper()} device"
                         f"{'s' if len(local) > 1 else ''}")
    if chunk is not None and chunk < 1:
        raise SweepError(f"--chunk {chunk}: give at least one member per chunk")
    share = devices or len(local)
    chunk = min(chunk or default_chunk(local[0].platform, share), runs)
    chunk = -(-chunk // share) * share  # an equal share for every device
    ticks = scenario.ticks + 1
    if keep_traces:
        _traces_fit(scenario, runs, ticks)
    chunk_plan = ChunkPlan(dataclasses.replace(scenario, sweep=None), sweep, chunk, keep_traces, devices,
                           min(build_processes, chunk))  # a process builds at least one member
    expect = tuple(scenario.expect)
    flown, first_chunk, flight = [], 0.0, 0.0
    told = _Told(progress, runs * ticks, started)
    chunks = [range(s, min(s + chunk, runs)) for s in range(0, runs, chunk)]
    for result in EXECUTORS[executor](chunk_plan, chunks, told.flown):
        if flown and result.shape != flown[0].shape:
            raise _changes_the_tick(f"member {result.members.start}", result.shape, flown[0].shape,
                                    f"member {flown[0].members.start}'s")
        flown.append(result)
        flight += result.flight_seconds
        if not first_chunk:
            first_chunk = time.perf_counter() - started
        told.landed(len(result.members) * ticks)
    seeds, drawn = draws(scenario, sweep, np.arange(runs))  # after the flight: the first chunk is built sooner
    wall = time.perf_counter() - started
    flown.sort(key=lambda c: c.members.start)
    structure = flown[0].shape[0]
    layout = Tick(structure).layout
    monitors = [DeviceMonitor(e, layout, structure.rate) for e in expect]
    final = [{k: np.concatenate([c.judged[i][k] for c in flown]) for k in flown[0].judged[i]}
             for i in range(len(expect))]
    outcomes = [[m.monitor(state, member).outcome() for m, state in zip(monitors, final)] for member in range(runs)]
    measured = [m.measured(state) for m, state in zip(monitors, final)]
    margins = np.stack([m.margin(state) for m, state in zip(monitors, final)], axis=1) if expect else \
        np.zeros((runs, 0))
    return SweepResult(scenario, sweep, seeds, drawn, list(expect), outcomes, measured, margins,
                       np.concatenate([c.last for c in flown]), layout,
                       np.concatenate([c.rows for c in flown]) if keep_traces else None,
                       wall, first_chunk, flight, chunk, share, local[0].platform, runs * ticks)


def _traces_fit(scenario: Scenario, runs: int, ticks: int) -> None:
    """Kept traces are every member's rows in this process's memory, twice while the chunks' rows
    are joined: refuse, before anything flies, a sweep whose rows this machine cannot hold."""
    width = Tick(build(scenario, in_process_firmware=True)[0]).width
    size = runs * ticks * width * np.dtype(np.float64).itemsize
    available = _available_memory()
    if available is not None and 2 * size > available:
        raise SweepError(f"--keep-traces: {runs:,} members x {ticks:,} ticks x {width} columns are {size / 1e9:,.1f} GB "
                         f"of rows, held twice while they are joined, and {available / 1e9:,.1f} GB of memory is "
                         "available here: keep the traces of fewer members (--runs), or sweep without --keep-traces "
                         "(the verdicts and measured values need no rows)")


def _available_memory() -> int | None:
    """Bytes of memory the kernel says are available to start new work (Linux); None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Told:
    """What :class:`Progress` has been told: member-ticks flown, as the devices' threads report
    segments (the local executor) or as chunks land (any executor), never counted twice."""

    def __init__(self, progress: Progress | None, total: int, started: float):
        self.progress, self.total, self.started = progress, total, started
        self.segments = self.chunks = 0
        self.lock = threading.Lock()

    def flown(self, member_ticks: int) -> None:
        with self.lock:
            self.segments += member_ticks
            self._tell()

    def landed(self, member_ticks: int) -> None:
        with self.lock:
            self.chunks += member_ticks
            self._tell()

    def _tell(self) -> None:
        if self.progress is not None:
            self.progress(max(self.segments, self.chunks), self.total, time.perf_counter() - self.started)


def default_chunk(platform: str, devices: int) -> int:
    """Members a chunk holds when ``--chunk`` is not given, for ``devices`` devices of ``platform``."""
    return MEMBERS_PER_DEVICE.get(platform, MEMBERS_PER_ACCELERATOR) * devices


def _changes_the_tick(who: str, shape, reference, whose: str) -> SweepError:
    return SweepError(f"{who} changes the compiled tick (its {_difference(shape, reference)} differs from {whose}); "
                      "a sweep flies one program: disperse only numbers")


def _difference(shape, reference) -> str:
    if shape[0] != reference[0]:
        return "structure (sensors, rates, firmware)"
    if shape[1] != reference[1]:
        return "parameter layout (faults, gusts)"
    return "parameter shapes"
