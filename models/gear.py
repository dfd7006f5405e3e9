"""The landing gear seen from the host: where the feet are, and the longest RK4 step its contact allows.

NumPy only, so that scenario validation can use it without starting JAX.

The contact of :func:`hil.models.quadrotor.contact_wrench` is stiff: each foot is a spring and a
damper, and its regularised friction is a damper of ``friction * load / slip_speed`` at low slip.
An explicit integrator gains energy from such a system once its step is too long. Linearised
about the vehicle standing still on its feet, the contact is ``M q'' + C q' + K q = 0`` over the
displacements ``q = (north, east, down, roll, pitch, yaw)``; RK4 is stable for a step h when
``|R(h λ)| <= 1`` for every eigenvalue λ of that system, with
``R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24``.
"""

import numpy as np

from hil.models.standard import GRAVITY

SLIP_SPEED = 0.05  # m/s, below which friction is regularised (linear in slip speed)
_STABILITY_RADIUS = 3.0  # RK4's stability region lies within |z| < 3 (2.83 on the imaginary axis)


def feet(spread: float, depth: float) -> np.ndarray:
    """The four contact points (body frame, m): ``spread`` forward/back and left/right, ``depth`` below."""
    return np.array([[spread, spread, depth], [spread, -spread, depth], [-spread, spread, depth],
                     [-spread, -spread, depth]])


def rk4_amplification(z):
    """RK4's stability function: one step multiplies the mode ``exp(λ t)`` by ``R(h λ)``, z = h λ."""
    return 1 + z * (1 + z / 2 * (1 + z / 3 * (1 + z / 4)))


def _bracket(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along each unit complex ``direction``, radii ``low < high`` 0.01 apart between which ``|R(z)| <= 1``
    first fails: ``|R|`` stays within 1 from 0 to ``low``."""
    radii = np.linspace(0.0, _STABILITY_RADIUS, 301)[1:]  # finer than any lobe of RK4's region
    unstable = np.abs(rk4_amplification(radii[None, :] * directions[:, None])) > 1.0 + 1e-9
    first = np.argmax(unstable, axis=1)
    return np.where(first > 0, radii[first - 1], 0.0), radii[first]


def _stable_radii(directions: np.ndarray) -> np.ndarray:
    """Along each unit complex ``direction``, how far z can go from 0 with ``|R(z)| <= 1`` all the way."""
    low, high = _bracket(directions)
    for _ in range(48):  # a bracket of 0.01 halved to below a double's resolution
        middle = 0.5 * (low + high)
        stable = np.abs(rk4_amplification(middle * directions)) <= 1.0 + 1e-9
        low, high = np.where(stable, middle, low), np.where(stable, high, middle)
    return low


_REAL_RADIUS = float(_stable_radii(np.array([-1.0 + 0.0j]))[0])  # a decaying mode: RK4's limit on the real axis


def _limiting(eigenvalues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The eigenvalues that can limit a step: their unit directions, sizes, and which decay along the real axis."""
    eigenvalues = np.asarray(eigenvalues, dtype=complex).ravel()
    size = np.abs(eigenvalues)
    eigenvalues, size = eigenvalues[size >= 1e-9], size[size >= 1e-9]  # free motion never limits it
    directions = eigenvalues / size
    return directions, size, (directions.imag == 0.0) & (directions.real < 0.0)


def rk4_stable_step(eigenvalues) -> float:
    """The longest step h with ``|R(h' λ)| <= 1`` for every h' up to h and every eigenvalue λ (s).

    Eigenvalues at zero (free motion) never limit the step; with none left the step is unbounded.
    All eigenvalues are searched at once, real decaying ones not at all.
    """
    directions, size, decaying = _limiting(eigenvalues)
    if not size.size:
        return float(np.inf)
    radii = np.full(len(directions), _REAL_RADIUS)
    if not decaying.all():
        radii[~decaying] = _stable_radii(directions[~decaying])
    return float(np.min(radii / size))


def rk4_stable_at(step: float, eigenvalues) -> bool:
    """``step <= rk4_stable_step(eigenvalues)``, searched only as far as it takes to tell: a sweep checks
    this for every member, whose step is nearly always well inside the bound or well outside it."""
    directions, size, decaying = _limiting(eigenvalues)
    if not size.size:
        return True
    low, high = np.full(len(directions), _REAL_RADIUS), np.full(len(directions), _REAL_RADIUS)
    if not decaying.all():
        low[~decaying], high[~decaying] = _bracket(directions[~decaying])
    if np.all(step <= low / size):
        return True
    if np.any(step > high / size):  # beyond a radius the search found unstable; at it, rounding could tie
        return False
    return step <= rk4_stable_step(eigenvalues)


def _outer(rows: np.ndarray) -> np.ndarray:
    """Each row's outer product with itself, to be summed foot by foot in order: a matrix product
    would sum in BLAS's order and with its FMAs, moving the bound by roundings between machines."""
    return rows[:, :, None] * rows[:, None, :]


def contact_eigenvalues(mass, inertia, foot_points, stiffness, damping, friction, slip_speed=SLIP_SPEED):
    """Eigenvalues (1/s) of the contact linearised about standing still, each foot carrying its share.

    ``inertia``: the principal moments (kg m^2); ``foot_points``: (F, 3) body-frame feet (m);
    ``stiffness`` (N/m), ``damping`` (N s/m) per foot, ``friction`` the Coulomb coefficient.
    """
    x, y, z = np.asarray(foot_points, dtype=float).T
    one, nil = np.ones_like(x), np.zeros_like(x)
    # Row f of each maps (velocity, body rate) to one component of foot f's velocity, v + w x r.
    along_x = np.stack([one, nil, nil, nil, z, -y], axis=1)
    along_y = np.stack([nil, one, nil, -z, nil, x], axis=1)
    along_z = np.stack([nil, nil, one, y, -x, nil], axis=1)
    normal, tangential = _outer(along_z).sum(axis=0), (_outer(along_x) + _outer(along_y)).sum(axis=0)
    load = mass * GRAVITY / len(x)
    inverse_mass = 1.0 / np.concatenate([np.full(3, float(mass)), np.asarray(inertia, dtype=float)])
    system = np.zeros((12, 12))
    system[:6, 6:] = np.eye(6)
    system[6:, :6] = -inverse_mass[:, None] * (stiffness * normal)
    system[6:, 6:] = -inverse_mass[:, None] * (damping * normal + friction * load / slip_speed * tangential)
    return np.linalg.eigvals(system)


def stable_step(mass, inertia, foot_points, stiffness, damping, friction, slip_speed=SLIP_SPEED) -> float:
    """The longest RK4 step (s) that does not feed energy into the vehicle standing on its gear."""
    return rk4_stable_step(contact_eigenvalues(mass, inertia, foot_points, stiffness, damping, friction, slip_speed))
