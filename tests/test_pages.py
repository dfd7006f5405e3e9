"""The compiled tick's state as pages, and the command input shared with NumPy."""

import dataclasses

import jax
import numpy as np
import pytest
from support import SCENARIOS

from hil import scenario
from hil.pages import PAGE_SIZE, SharedInput, StatePages
from hil.sim import MOTORS, Simulation

# Every shipped scenario's tick, with its firmware inside it where it can run there (Betaflight cannot).
TICKS = [(path, in_process) for path in sorted(SCENARIOS.glob("*.yaml")) for in_process in (False, True)
         if not (in_process and scenario.load(path).firmware.runtime == "sitl")]


@pytest.mark.parametrize("path, in_process", TICKS, ids=lambda v: v.stem if hasattr(v, "stem") else
                         ("in-process" if v else "link"))
def test_every_shipped_state_fits_pages_and_round_trips_exactly(path, in_process):
    loaded = scenario.load(path)
    state = Simulation(loaded, in_process_firmware=in_process).initial_state()
    layout = StatePages.of(state)
    pages = layout.pack(state)
    # Larger pages would bring back XLA's thread hand-offs: every page stays within 512 bytes.
    assert all(page.size <= PAGE_SIZE for page in pages), [page.size for page in pages]
    back = layout.unpack(pages)
    for before, after in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back)):
        assert np.asarray(before).dtype == after.dtype
        assert np.array_equal(np.asarray(before), after)
    # End to end, the pages are the flat state in leaf order (what a log's SNAPSHOT holds).
    flat = np.concatenate([np.ravel(np.asarray(leaf, dtype=np.float64)) for leaf in jax.tree_util.tree_leaves(state)])
    assert np.array_equal(np.concatenate(pages), flat)


def test_a_leaf_larger_than_a_page_gets_a_page_of_its_own():
    state = {"a": np.zeros(10), "big": np.arange(100.0), "c": np.array(3, dtype=np.int64), "empty": np.zeros(0)}
    layout = StatePages.of(state)
    pages = layout.pack(state)
    assert [page.size for page in pages] == [10, 100, 1]
    back = layout.unpack(pages)
    assert np.array_equal(back["big"], state["big"]) and back["c"].dtype == np.int64 and back["empty"].size == 0


def test_the_shared_command_input_flies_what_a_copied_one_does():
    loaded = dataclasses.replace(scenario.load(SCENARIOS / "hover.yaml"), duration=0.2)
    simulation = Simulation(loaded, in_process_firmware=False)
    tick = simulation.compile()
    assert tick.command_input.device is not None, "on the CPU the command should reach the tick without a copy"
    copied = SharedInput(MOTORS)
    copied.device = None
    commands = np.random.default_rng(1).uniform(0.0, 1.0, (200, MOTORS))
    rows = {}
    for name, variant in (("shared", tick), ("copied", dataclasses.replace(tick, command_input=copied))):
        state = tuple(jax.numpy.array(page) for page in simulation.compile().initial)
        flown = []
        for command in commands:
            state, row = variant.advance(state, command)
            flown.append(row.copy())
        rows[name] = np.array(flown)
    assert np.array_equal(rows["shared"], rows["copied"])
    offset, size = simulation.layout["command"]
    assert np.array_equal(rows["shared"][:, offset:offset + size], commands)  # each tick flew the command just written
