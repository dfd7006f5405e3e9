"""The tick's random numbers: consumer ``s`` at tick ``k`` draws from ``fold_in(fold_in(key, k), s)``.

Each consumer has its own fixed stream id (a sensor kind's ``stream``, :data:`WIND_STREAM`, a
fault's :data:`hil.faults.FAULT_STREAM_BASE` + its index), so adding one never shifts another's
noise, and a draw is made only where it is used: a sensor's on the ticks it is due. Draws are
counter-based (threefry, partitionable), so the first n normals of a longer draw are the n drawn
alone.

The normals are drawn in float32 and widened to float64: a float64 normal hashes twice the bits
and evaluates its inverse error function with a logarithm that XLA on CPU calls from the C
library one number at a time (docs/sweep.md has the figures). A float32 normal comes from a
uniform number in steps of 2^-23, its tails cut beyond about 5.2 sigma: far finer than any sensor's
noise model needs.
"""

import jax
import jax.numpy as jnp

from hil.models.small import computed_once

WIND_STREAM = 1
# Numbers a draw is rounded up to in a batch: the kernels that read the widened normals load four
# doubles at a time (AVX2). Eight, AVX-512's width, measured slower with float64 draws and no
# faster with float32 ones.
LANES = 4


def tick_key(key, tick):
    """The key every consumer's draws at ``tick`` derive from."""
    return jax.random.fold_in(key, tick)


def stream_key(tick_key, stream: int):
    """The key of consumer ``stream``'s draws at the tick of ``tick_key``."""
    return jax.random.fold_in(tick_key, stream)


def normals(tick_key, stream: int, count: int):
    """``count`` standard-normal draws of consumer ``stream`` at the tick of ``tick_key``."""
    return _standard_normals(stream_key(tick_key, stream), count)


def _standard_normals(key, count: int):
    return jax.random.normal(key, (count,), dtype=jnp.float32).astype(jnp.float64)


class TickNoise:
    """The draws of one tick, ``normals(stream, count)``: :func:`normals` of :func:`tick_key`.

    ``batched``: the tick is stepped for a batch of members that share ``tick`` (a sweep). XLA on
    CPU fuses a draw's threefry rounds and inverse error function into every kernel that reads
    one of its numbers and recomputes them there, element by element, the tick's and the
    stream's keys included: the IMU's draw was computed in five kernels of the sweep's program.
    In a batch the tick's key, each stream's key and each draw are therefore
    :func:`~hil.models.small.computed_once`, on the shared tick (the tick reached is never
    negative). The numbers are the same; a single run draws as before (its compiled tick is
    unchanged).
    """

    def __init__(self, key, tick, batched: bool = False):
        self.batched = batched
        self.reached = tick >= 0  # always true: the branch predicate of what is computed once
        self.key = self._key(lambda: tick_key(key, tick))

    def normals(self, stream: int, count: int):
        if not self.batched:
            return normals(self.key, stream, count)
        # XLA on CPU vectorises a kernel along its last axis, LANES numbers at a time: (members, 3)
        # normals are computed one by one, (members, 4) four at once, and their first 3 are the 3.
        drawn = -(-count // LANES) * LANES
        key = self._key(lambda: stream_key(self.key, stream))
        return computed_once(lambda: _standard_normals(key, drawn), self.reached)[:count]

    def _key(self, derive):
        if not self.batched:
            return derive()
        return jax.random.wrap_key_data(computed_once(lambda: jax.random.key_data(derive()), self.reached))
