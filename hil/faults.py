"""The scenario's faults, turned into what the compiled tick and the link layer apply.

A fault is active over whole ticks, ``[start, start + duration)`` in ticks. Motor and sensor
faults act inside the compiled tick (:mod:`hil.tick.fault_effects`); link faults act on frames in the
link layer (:class:`LinkFaultPlan`, used by :class:`hil.bridges.impairment.ImpairedLink`).
Every random choice is drawn from ``fold_in(fold_in(key(seed), tick), stream)`` with a fixed
stream per fault, as the sensor noise is, so a fault's draws do not depend on the others'.
"""

from dataclasses import dataclass

import jax
import numpy as np

from hil.scenario import Fault, LinkFault, Scenario

FAULT_STREAM_BASE = 64  # stream id of the scenario's fault i is FAULT_STREAM_BASE + i
LINK_DRAWS = 8  # per tick: lost, duplicated, corrupted, where, for hil -> firmware then firmware -> hil


def window_ticks(fault: Fault, scenario: Scenario) -> tuple[int, int]:
    """Ticks ``[first, end)`` in which ``fault`` is active; unset duration: to the end of the run."""
    rate = scenario.physics.rate_hz
    end = scenario.ticks + 1 if fault.duration is None else round((fault.start + fault.duration) * rate)
    return round(fault.start * rate), end


@dataclass(frozen=True)
class LinkDecision:
    """What the link does to one tick's frame in one direction."""

    lost: bool
    duplicated: bool
    corrupted: bool
    where: float  # in [0, 1): the position of the flipped bit in the frame
    delay: int  # ticks the frame is held back (replies only)


class LinkFaultPlan:
    """Per tick, what happens to the SENSORS frame going out and the ACTUATORS frame coming back.

    The draws are made a block of ticks at a time, on the host, from the scenario key, so the
    same scenario and seed lose, duplicate and corrupt the same frames on every run.
    """

    BLOCK = 4096

    def __init__(self, scenario: Scenario):
        self.rate = scenario.physics.rate_hz
        self.faults = [(window_ticks(f, scenario), f.link, FAULT_STREAM_BASE + i)
                       for i, f in enumerate(scenario.faults) if f.link is not None]
        self.key = jax.random.key(scenario.seed)
        self._blocks: dict[tuple[int, int], np.ndarray] = {}
        self._draw = jax.jit(jax.vmap(_link_draws, in_axes=(None, 0, None)))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def _active(self, tick: int) -> list[tuple[LinkFault, int]]:
        return [(link, stream) for (first, end), link, stream in self.faults if first <= tick < end]

    def _uniforms(self, tick: int, stream: int) -> np.ndarray:
        first = tick - tick % self.BLOCK
        block = self._blocks.get((first, stream))
        if block is None:
            if len(self._blocks) > 8:
                self._blocks.clear()
            ticks = np.arange(first, first + self.BLOCK, dtype=np.uint32)
            block = self._blocks[(first, stream)] = np.asarray(self._draw(self.key, ticks, np.uint32(stream)))
        return block[tick - first]

    def decision(self, tick: int, outbound: bool) -> LinkDecision | None:
        """None when no link fault is active at ``tick``."""
        active = self._active(tick)
        if not active:
            return None
        lost = duplicated = corrupted = False
        where, delay = 0.0, 0
        first = 0 if outbound else LINK_DRAWS // 2
        for link, stream in active:
            u_lost, u_duplicated, u_corrupted, u_where = self._uniforms(tick, stream)[first:first + LINK_DRAWS // 2]
            lost |= bool(u_lost < link.loss)
            duplicated |= bool(u_duplicated < link.duplicate)
            if u_corrupted < link.corrupt:
                corrupted, where = True, float(u_where)
            delay = max(delay, round(link.delay * self.rate))
        return LinkDecision(lost, duplicated, corrupted, where, 0 if outbound else delay)


def _link_draws(key, tick, stream):
    return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, tick), stream), (LINK_DRAWS,))


def flip_bit(frame: bytes, where: float) -> bytes:
    """``frame`` with one bit flipped at fraction ``where`` of its length, delimiter excluded."""
    body = bytearray(frame[:-1])
    bit = min(int(where * len(body) * 8), len(body) * 8 - 1)
    body[bit // 8] ^= 1 << (bit % 8)
    return bytes(body) + frame[-1:]
