"""Arithmetic on 3- and 4-vectors written as elementwise operations.

XLA on CPU fuses chains of elementwise operations into one kernel, but every dot product or
reduction of a tiny vector becomes a kernel of its own (~70 ns each). A physics tick built
from ``@`` and ``jnp.sum`` runs a few hundred kernels; written with these helpers it runs a
few dozen. The other side of that fusion, a value recomputed in every kernel that reads it, is
what :func:`computed_once` avoids.
"""

import jax
import jax.numpy as jnp


def matvec(matrix, vector):
    """``matrix @ vector`` for a small matrix, column by column."""
    result = matrix[:, 0] * vector[0]
    for j in range(1, matrix.shape[1]):
        result = result + matrix[:, j] * vector[j]
    return result


def matvec_t(matrix, vector):
    """``matrix.T @ vector`` for a small matrix, row by row."""
    result = matrix[0] * vector[0]
    for i in range(1, matrix.shape[0]):
        result = result + matrix[i] * vector[i]
    return result


def dot(a, b):
    result = a[0] * b[0]
    for i in range(1, a.shape[0]):
        result = result + a[i] * b[i]
    return result


def norm(a):
    return jnp.sqrt(dot(a, a))  # not ** 0.5: XLA keeps that a general power, several times the cost


def sum_rows(rows):
    """Sum over the first axis of a small array."""
    result = rows[0]
    for i in range(1, rows.shape[0]):
        result = result + rows[i]
    return result


def computed_once(compute, when):
    """``compute()``, kept in a buffer rather than recomputed where it is read; ``when``: a scalar
    that is true whenever this runs (a branch predicate XLA cannot see through).

    XLA on CPU fuses a value into each kernel that reads it, and a kernel that builds a small
    vector (a ``stack``, a cross product) computes each element on its own path: a sine or an
    arctangent shared by the three elements is computed three times, for every member of a
    batch. The result of a branch is a buffer: computed inside one, the value is computed once.
    ``when`` must not vary over a ``vmap`` (a batched predicate turns the branch into a select,
    which XLA fuses again).
    """
    return jax.lax.cond(when, compute, lambda: jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(compute)))
