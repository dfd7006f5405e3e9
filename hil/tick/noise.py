"""The tick's random numbers: consumer ``s`` at tick ``k`` draws from ``fold_in(fold_in(key, k), s)``.

Each consumer has its own fixed stream id (a sensor kind's ``stream``, :data:`WIND_STREAM`, a
fault's :data:`hil.faults.FAULT_STREAM_BASE` + its index), so adding one never shifts another's
noise, and a draw is made only where it is used: a sensor's on the ticks it is due. Draws are
counter-based (threefry, partitionable), so the first n normals of a longer draw are the n drawn
alone.
"""

import jax

WIND_STREAM = 1


def tick_key(key, tick):
    """The key every consumer's draws at ``tick`` derive from."""
    return jax.random.fold_in(key, tick)


def normals(tick_key, stream: int, count: int):
    """``count`` standard-normal draws of consumer ``stream`` at the tick of ``tick_key``."""
    return jax.random.normal(jax.random.fold_in(tick_key, stream), (count,))
