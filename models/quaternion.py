"""Unit quaternions, scalar first ``[w, x, y, z]``, rotating body (FRD) vectors into the world (NED)."""

import jax.numpy as jnp
import numpy as np

from hil.models.small import computed_once, norm


def multiply(a, b):
    aw, ax, ay, az = a[0], a[1], a[2], a[3]
    bw, bx, by, bz = b[0], b[1], b[2], b[3]
    return jnp.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def normalize(q):
    # A reduction, not norm()'s unrolled sum: XLA gives it a kernel of its own, so q is computed
    # once. Fused into q's own kernel, the norm made each of the four elements recompute all four
    # (the sines and cosines of integrate() included).
    return q / jnp.sqrt(jnp.sum(q * q, axis=-1))


def to_matrix(q):
    """Rotation matrix R with ``v_world = R @ v_body``."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    return jnp.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def from_euler(roll, pitch, yaw):
    """Quaternion from intrinsic Z-Y-X (yaw, pitch, roll) angles in radians; host-side, NumPy."""
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.stack([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def integrate(q, angular_rate, dt, once):
    """Rotate ``q`` by a constant body rate over ``dt`` (exact exponential map), renormalised.

    ``once``: :func:`~hil.models.small.computed_once`'s predicate (true whenever this runs, the
    same for a whole batch), which keeps the increment in a buffer: fused into the product, each
    of its four elements computed the increment's cosine again."""
    def increment():
        angle = norm(angular_rate) * dt
        half = 0.5 * angle
        # sin(x)/x written so that it stays finite and exact to first order at zero rate.
        scale = jnp.where(angle > 1e-12, jnp.sin(half) / jnp.where(angle > 1e-12, angle, 1.0), 0.5) * dt
        return jnp.concatenate([jnp.cos(half)[None], angular_rate * scale])

    return normalize(multiply(q, computed_once(increment, once)))
