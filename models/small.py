"""Arithmetic on 3- and 4-vectors written as elementwise operations.

XLA on CPU fuses chains of elementwise operations into one kernel, but every dot product or
reduction of a tiny vector becomes a kernel of its own (~70 ns each). A physics tick built
from ``@`` and ``jnp.sum`` runs a few hundred kernels; written with these helpers it runs a
few dozen.
"""


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
    return dot(a, a) ** 0.5


def sum_rows(rows):
    """Sum over the first axis of a small array."""
    result = rows[0]
    for i in range(1, rows.shape[0]):
        result = result + rows[i]
    return result
