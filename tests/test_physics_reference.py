"""The physics against references that are not the project itself: SciPy's DOP853 and closed forms."""

import jax
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from hil.models import quadrotor, quaternion, rigid_body
from hil.models.environment import GRAVITY, SEA_LEVEL_DENSITY
from hil.models.integrators import rk4
from hil.models.quadrotor import Air, QuadrotorParams, QuadrotorState
from hil.models.rigid_body import RigidBodyParams, RigidBodyState

DT = 1e-3
MASS, INERTIA = 1.5, np.diag([0.029, 0.031, 0.055])
ARM, KF, KM, OMEGA_MAX, TAU = 0.23, 8.5e-6, 1.4e-7, 1100.0, 0.03
DRAG_LIN, DRAG_QUAD, ANG_DRAG = np.array([0.25, 0.3, 0.4]), np.array([0.05, 0.06, 0.1]), 0.003


def params(drag=True):
    return QuadrotorParams(
        body=RigidBodyParams.of(MASS, INERTIA), arm_length=ARM, thrust_coefficient=KF, torque_coefficient=KM,
        max_rotor_speed=OMEGA_MAX, motor_time_constant=TAU,
        drag_linear=DRAG_LIN if drag else np.zeros(3), drag_quadratic=DRAG_QUAD if drag else np.zeros(3),
        angular_drag=ANG_DRAG if drag else 0.0, gear=None)


def reference_derivative(t, y, throttle, wind):
    """The same equations written independently with NumPy: state [p v q w omega_rotor]."""
    p, v, q, w, rotor = y[0:3], y[3:6], y[6:10], y[10:13], y[13:17]
    qw, qx, qy, qz = q / np.linalg.norm(q)
    R = np.array([
        [1 - 2 * (qy**2 + qz**2), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)],
        [2 * (qx * qy + qw * qz), 1 - 2 * (qx**2 + qz**2), 2 * (qy * qz - qw * qx)],
        [2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx**2 + qy**2)]])
    thrust = KF * rotor**2
    d = ARM / np.sqrt(2)
    # Motors: front-right CCW, rear-left CCW, front-left CW, rear-right CW (FRD body).
    xs, ys, spin = np.array([d, -d, d, -d]), np.array([d, -d, -d, d]), np.array([1, 1, -1, -1])
    torque = np.array([-(ys * thrust).sum(), (xs * thrust).sum(), (spin * KM * rotor**2).sum()])
    air = R.T @ (v - wind)
    force_body = np.array([0, 0, -thrust.sum()]) - DRAG_LIN * air - DRAG_QUAD * np.abs(air) * air
    torque = torque - ANG_DRAG * w
    acc = R @ force_body / MASS + np.array([0, 0, GRAVITY])
    qdot = 0.5 * np.array([-qx * w[0] - qy * w[1] - qz * w[2], qw * w[0] + qy * w[2] - qz * w[1],
                           qw * w[1] - qx * w[2] + qz * w[0], qw * w[2] + qx * w[1] - qy * w[0]])
    wdot = np.linalg.solve(INERTIA, torque - np.cross(w, INERTIA @ w))
    return np.concatenate([v, acc, qdot, wdot, (throttle * OMEGA_MAX - rotor) / TAU])


def fly(p, state, throttle, wind, seconds):
    air = Air(np.float64(SEA_LEVEL_DENSITY), np.asarray(wind))

    @jax.jit
    def run(s):
        def body(s, _):
            s = quadrotor.step(p, s, throttle, air, DT)
            return s, (s.body.position, s.body.attitude)
        return jax.lax.scan(body, s, None, length=round(seconds / DT))

    return run(state)


def test_open_loop_trajectory_matches_dop853():
    throttle = np.array([0.64, 0.61, 0.60, 0.63])
    wind = np.array([1.0, -0.5, 0.2])
    q0 = quaternion.from_euler(0.1, -0.05, 0.3)
    y0 = np.concatenate([[0, 0, -100.0], [0.5, 0, 0], q0, [0.1, -0.2, 0.05], np.full(4, 600.0)])
    start = QuadrotorState(RigidBodyState(y0[0:3], y0[3:6], y0[6:10], y0[10:13]), y0[13:17])
    _, (positions, attitudes) = fly(params(), start, throttle, wind, 5.0)
    reference = solve_ivp(reference_derivative, (0, 5.0), y0, method="DOP853", rtol=1e-10, atol=1e-12,
                          t_eval=np.arange(1, 5001) * DT, args=(throttle, wind))
    ref_q = reference.y[6:10].T / np.linalg.norm(reference.y[6:10].T, axis=1, keepdims=True)
    position_error = np.abs(np.asarray(positions) - reference.y[0:3].T).max()
    # Angle between the two attitudes: 2 acos |<q1, q2>|.
    dots = np.abs(np.sum(np.asarray(attitudes) * ref_q, axis=1)).clip(max=1.0)
    angle_error = (2 * np.arccos(dots)).max()
    travelled = np.linalg.norm(reference.y[0:3, -1] - y0[0:3])
    assert travelled > 1.0  # the trajectory actually goes somewhere
    assert position_error < 1e-6, position_error
    assert angle_error < 1e-6, angle_error


def test_torque_free_tumbling_conserves_energy_and_momentum():
    body = RigidBodyParams.of(1.0, np.diag([0.02, 0.035, 0.05]))
    # Near the intermediate axis: the tumbling is violent, a hard case for an integrator.
    state = RigidBodyState(np.zeros(3), np.zeros(3), np.array([1.0, 0, 0, 0]), np.array([0.05, 1.5, 0.08]))

    def energy_momentum(s):
        w = np.asarray(s.angular_rate)
        R = np.asarray(quaternion.to_matrix(s.attitude))
        return 0.5 * w @ body.inertia @ w, np.linalg.norm(R @ body.inertia @ w)

    @jax.jit
    def run(s):
        def step(s, _):
            s = rk4(lambda x: rigid_body.derivative(body, x, np.zeros(3), np.zeros(3)), s, DT)
            return rigid_body.renormalize(s), None
        return jax.lax.scan(step, s, None, length=60_000)[0]

    final = run(state)
    e0, l0 = energy_momentum(state)
    e1, l1 = energy_momentum(final)
    assert abs(e1 - e0) / e0 < 1e-9
    assert abs(l1 - l0) / l0 < 1e-9
    assert not np.allclose(final.angular_rate, state.angular_rate, atol=1e-3)  # it did tumble


def test_free_fall_matches_half_g_t_squared():
    state = QuadrotorState(RigidBodyState(np.zeros(3), np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3)), np.zeros(4))
    final, (positions, _) = fly(params(drag=False), state, np.zeros(4), np.zeros(3), 3.0)
    t = np.arange(1, 3001) * DT
    np.testing.assert_allclose(np.asarray(positions)[:, 2], 0.5 * GRAVITY * t**2, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.asarray(positions)[:, :2], 0.0, atol=1e-12)


def test_hover_at_the_analytic_rotor_speed_stays_put():
    p = params()
    hover = float(quadrotor.hover_rotor_speed(p))
    assert hover == pytest.approx(np.sqrt(MASS * GRAVITY / (4 * KF)))
    state = QuadrotorState(RigidBodyState(np.array([0, 0, -10.0]), np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3)),
                           np.full(4, hover))
    final, _ = fly(p, state, np.full(4, hover / OMEGA_MAX), np.zeros(3), 10.0)
    np.testing.assert_allclose(final.body.position, [0, 0, -10.0], atol=1e-9)
    np.testing.assert_allclose(final.body.attitude, [1, 0, 0, 0], atol=1e-12)
