"""A state pytree as a few small float64 vectors, and inputs the host writes in place: how hil
hands state and commands to a compiled function for the least cost per call."""

from dataclasses import dataclass
from typing import Any

import jax
import jax.dlpack
import jax.numpy as jnp
import numpy as np

# Float64s per state page: 512 bytes. XLA's CPU runtime runs a program's kernels one after
# another on the calling thread only while no buffer it touches is larger than that; with a
# larger one it spreads them over its thread pool, and the hand-offs cost more than the kernels
# (and take a core from a firmware process running beside hil).
PAGE_SIZE = 64


@dataclass(frozen=True)
class StatePages:
    """A state pytree as a tuple of float64 vectors ("pages") of at most :data:`PAGE_SIZE` each.

    Leaves keep their order and are never split, so the pages end to end are the flat state (a
    log's SNAPSHOT); a leaf larger than a page has a page of its own. Concrete states pack with
    NumPy and traced ones with JAX; unpacking works on either. Integer and boolean leaves
    round-trip exactly: ticks stay far below 2**53.
    """

    structure: Any
    shapes: tuple
    dtypes: tuple
    places: tuple  # (page, offset) of each leaf
    pages: tuple  # the leaves of each page

    @classmethod
    def of(cls, state) -> "StatePages":
        leaves, structure = jax.tree_util.tree_flatten(state)
        shapes = tuple(np.shape(leaf) for leaf in leaves)
        places, pages, fill = [], [], 0
        for index, shape in enumerate(shapes):
            size = int(np.prod(shape))
            if not pages or fill + size > PAGE_SIZE:
                pages.append([])
                fill = 0
            places.append((len(pages) - 1, fill))
            pages[-1].append(index)
            fill += size
        return cls(structure, shapes, tuple(np.asarray(leaf).dtype for leaf in leaves), tuple(places),
                   tuple(tuple(page) for page in pages))

    def pack(self, state) -> tuple:
        leaves = jax.tree_util.tree_leaves(state)
        # Concrete values pack on the host: a JAX operation here would be one more executable
        # to compile or fetch from the cache at start-up, tens of milliseconds each.
        xp = jnp if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves) else np
        return tuple(xp.concatenate([xp.ravel(xp.asarray(leaves[i], dtype=np.float64)) for i in page])
                     for page in self.pages)

    def unpack(self, pages):
        parts = []
        for (page, offset), shape, dtype in zip(self.places, self.shapes, self.dtypes):
            size = int(np.prod(shape))
            parts.append(pages[page][offset: offset + size].reshape(shape).astype(dtype))
        return jax.tree_util.tree_unflatten(self.structure, parts)


class SharedInput:
    """A float64 vector the host writes in place and the compiled tick reads without a transfer.

    Passing a new NumPy array to a compiled call copies it to the device first, which costs
    about 6 µs, a fifth of a link tick. On the CPU a device array can instead sit on NumPy's
    memory (DLPack, no copy): the host writes the command there and the next call reads it.
    A call has finished reading by the time its results reach the host, before the next write.
    Whether the memory is really shared is checked once; where it is not (another backend, or
    a JAX that copies), :attr:`device` is None and each call gets a copy of the vector: JAX
    may keep a NumPy argument's memory instead of copying it, and must not see it change.
    """

    def __init__(self, size: int):
        raw = np.zeros(size + 8)
        first = (-raw.ctypes.data % 64) // 8  # XLA wants its buffers 64-byte aligned
        self.host = raw[first: first + size]
        self.device = None
        if jax.default_backend() != "cpu":
            return
        try:
            device = jax.dlpack.from_dlpack(self.host)
        except (TypeError, ValueError, RuntimeError, BufferError):
            return
        self.host[:] = np.arange(1.0, size + 1.0)
        if np.array_equal(np.asarray(device), self.host):
            self.device = device
        self.host[:] = 0.0

    def write(self, values):
        """Set the vector; returns what to pass to the compiled call."""
        self.host[:] = values
        return self.argument()

    def argument(self):
        """What to pass to the compiled call for the vector as :attr:`host` holds it now."""
        return self.device if self.device is not None else self.host.copy()
