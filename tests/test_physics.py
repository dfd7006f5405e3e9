"""The landing gear: its stable RK4 step against the integrator itself, validation's use of it, and its defaults."""

import jax
import numpy as np
import pytest
import yaml
from support import SCENARIOS, scenario_problems

from hil import scenario
from hil.models import gear, quadrotor, quaternion
from hil.models.environment import GRAVITY, SEA_LEVEL_DENSITY
from hil.models.quadrotor import Air, LandingGear, QuadrotorParams, QuadrotorState
from hil.models.rigid_body import RigidBodyParams, RigidBodyState
from hil.sim import Simulation

# The gear and inertia hil shipped before: overdamped (damping ratio 2.28 at 23 Hz), Gazebo Iris's inertia.
STIFF = {"inertia": (0.029, 0.029, 0.055), "stiffness": 8000.0, "damping": 250.0}
DEFAULT = {"inertia": scenario.Vehicle().inertia, "stiffness": scenario.LandingGear().stiffness,
           "damping": scenario.LandingGear().damping}
MASS, SPREAD, DEPTH, FRICTION = 1.5, 0.15, 0.08, 0.6


def params(inertia, stiffness, damping):
    feet = gear.feet(SPREAD, DEPTH)
    return QuadrotorParams(
        body=RigidBodyParams.of(MASS, np.diag(inertia)), arm_length=0.23, thrust_coefficient=8.5e-6,
        torque_coefficient=1.4e-7, max_rotor_speed=1100.0, motor_time_constant=0.03, drag_linear=np.zeros(3),
        drag_quadratic=np.zeros(3), angular_drag=0.0,
        gear=LandingGear(feet, stiffness, damping, FRICTION, gear.SLIP_SPEED))


def stable_step(inertia, stiffness, damping):
    return gear.stable_step(MASS, inertia, gear.feet(SPREAD, DEPTH), stiffness, damping, FRICTION)


def resting(p, velocity=(0.0, 0.0, 0.0), rate=(0.0, 0.0, 0.0)):
    sag = MASS * GRAVITY / (4 * p.gear.stiffness)
    body = RigidBodyState(np.array([0.0, 0.0, -DEPTH + sag]), np.array(velocity), np.array([1.0, 0, 0, 0]),
                          np.array(rate))
    return QuadrotorState(body, np.zeros(4))


def energy(p, state):
    """Kinetic, gravitational and spring energy (J), each foot a spring while it is below the ground."""
    body = state.body
    rotation = np.asarray(quaternion.to_matrix(body.attitude))
    depth = (np.asarray(body.position) + (rotation @ np.asarray(p.gear.feet).T).T)[:, 2]
    rate = np.asarray(body.angular_rate)
    return (0.5 * MASS * np.dot(body.velocity, body.velocity) + 0.5 * rate @ np.asarray(p.body.inertia) @ rate
            - MASS * GRAVITY * float(body.position[2]) + 0.5 * p.gear.stiffness * np.sum(np.maximum(depth, 0.0) ** 2))


@jax.jit
def _settle(body, stiffness, damping, state, dt):
    p = params((1.0, 1.0, 1.0), stiffness, damping).replace(body=body)  # the feet stay concrete: contact needs them
    air = Air(np.float64(SEA_LEVEL_DENSITY), np.zeros(3))

    def one(s, _):
        return quadrotor.step(p, s, np.zeros(4), air, dt), None

    return jax.lax.scan(one, state, None, length=2000)[0]


def settle(p, state, dt):
    """Two thousand RK4 steps of ``dt`` with the rotors stopped."""
    return _settle(p.body, p.gear.stiffness, p.gear.damping, state, dt)


# Nudges from standing still, one direction the gear holds at a time.
NUDGES = {"down": ((0.0, 0.0, 0.01), (0.0, 0.0, 0.0)), "sideways": ((0.004, 0.0, 0.0), (0.0, 0.0, 0.0)),
          "roll": ((0.0, 0.0, 0.0), (0.03, 0.0, 0.0)), "pitch": ((0.0, 0.0, 0.0), (0.0, 0.03, 0.0)),
          "yaw": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.05))}


@pytest.mark.parametrize("gear_", [STIFF, DEFAULT], ids=["stiff", "default"])
def test_the_stable_step_separates_decay_from_growth_in_the_integrator(gear_):
    """A brute-force energy check of quadrotor.step itself, contact's clipping and all, at 5 % either side."""
    p = params(**gear_)
    step = stable_step(**gear_)
    rest = energy(p, resting(p))
    growth = {}
    for factor in (0.95, 1.05):
        for name, (velocity, rate) in NUDGES.items():
            start = resting(p, velocity, rate)
            growth[factor, name] = (energy(p, settle(p, start, factor * step)) - rest) / (energy(p, start) - rest)
    assert max(growth[0.95, name] for name in NUDGES) < 0.5, growth  # every nudge dies away
    assert not max(growth[1.05, name] for name in NUDGES) < 1.5, growth  # one grows (or stops being finite)


def test_the_stable_step_of_a_single_spring_damper_is_rk4s_real_and_imaginary_limits():
    # Overdamped: the fast real eigenvalue sets it, RK4's real-axis limit 2.7853 / |lambda|.
    k, c, m = 8000.0, 250.0, 1.5
    fast = (c + np.sqrt(c * c - 4 * k * m)) / (2 * m)
    assert gear.rk4_stable_step(np.roots([m, c, k])) == pytest.approx(2.7852935634 / fast, rel=1e-9)
    # Undamped: on the imaginary axis RK4 holds |R| <= 1 up to |z| = 2 sqrt 2.
    assert gear.rk4_stable_step(np.roots([m, 0.0, k])) == pytest.approx(2 * np.sqrt(2) / np.sqrt(k / m), rel=1e-9)
    assert gear.rk4_stable_step([0.0]) == np.inf


def test_telling_whether_a_step_is_stable_agrees_with_the_stable_step_even_at_the_bound():
    """Validation asks only whether a step is stable (``rk4_stable_at``); it must answer exactly as
    comparing the step with ``rk4_stable_step`` does, at the bound itself and a rounding either side."""
    rng = np.random.default_rng(4)
    cases = [gear.contact_eigenvalues(mass, (inertia, inertia, 2 * inertia), gear.feet(SPREAD, DEPTH), stiffness,
                                      damping, FRICTION)
             for mass, inertia, stiffness, damping in zip(rng.uniform(0.2, 5.0, 40), rng.uniform(1e-3, 0.1, 40),
                                                          rng.uniform(1e3, 1e5, 40), rng.uniform(5.0, 500.0, 40))]
    cases += [np.roots([1.5, 250.0, 8000.0]), np.roots([1.5, 0.0, 8000.0]), np.array([0.0]), np.array([1.0 + 2.0j]),
              # its radius is the double just below a point of the coarse search: divided, the two tie
              np.array([-623.6648383497009 + 1056.8623036010308j, -623.6648383497009 - 1056.8623036010308j])]
    for eigenvalues in cases:
        stable = gear.rk4_stable_step(eigenvalues)
        bound = stable if np.isfinite(stable) else 1.0
        for step in (bound * 0.5, np.nextafter(bound, 0.0), bound, np.nextafter(bound, np.inf), bound * 1.001,
                     bound * 2):
            assert gear.rk4_stable_at(step, eigenvalues) == (step <= stable), (eigenvalues, step, stable)


def test_validation_refuses_a_substep_longer_than_the_gears_stable_step_and_names_the_fix():
    data = yaml.safe_load((SCENARIOS / "hover.yaml").read_text())
    data["physics"]["rate_hz"] = 250
    data["sensors"].update(imu={"rate_hz": 250}, mag={"rate_hz": 50})
    data["vehicle"].update(inertia=list(STIFF["inertia"]),
                           landing_gear={"stiffness": STIFF["stiffness"], "damping": STIFF["damping"]})
    problems = scenario_problems(yaml.safe_dump(data))
    assert len(problems) == 1 and ": physics.substeps: " in problems[0], problems
    assert "stable step, 3.52 ms" in problems[0] and "set substeps to 2 or more" in problems[0], problems
    data["physics"]["substeps"] = 2
    scenario.parse_text(yaml.safe_dump(data))
    # Without the ground there is no contact to destabilise.
    data["physics"]["substeps"], data["environment"] = 1, {"ground": False}
    scenario.parse_text(yaml.safe_dump(data))
    # A gear no substep count can integrate says so rather than asking for the impossible.
    data["environment"], data["vehicle"]["landing_gear"]["stiffness"] = {"ground": True}, 1e12
    problems = scenario_problems(yaml.safe_dump(data))
    assert len(problems) == 1 and "it needs more than 1000 substeps: raise rate_hz, or give" in problems[0], problems


def touchdown(speed: float, seconds: float = 1.0):
    """The rows of a default vehicle, rotors stopped, whose feet meet the ground at ``speed`` (m/s) at tick 0."""
    depth = scenario.LandingGear().foot_depth
    text = yaml.safe_dump({
        "version": 1, "name": "touchdown", "duration": seconds,
        "initial": {"position": [0.0, 0.0, -depth - 1e-9], "velocity": [0.0, 0.0, speed]},
        "sensors": {"imu": {"rate_hz": 1000, "gyro_noise_density": 0, "gyro_bias_random_walk": 0,
                            "accel_noise_density": 0, "accel_bias_random_walk": 0}},
        "firmware": {"name": "open_loop", "runs": "in-process"}})
    simulation = Simulation(scenario.parse_text(text))
    ticks = round(seconds * simulation.rate)
    batch = simulation.compile_batch(ticks)
    _, rows = batch.advance_many(batch.initial, np.int32(ticks))
    rows = np.asarray(rows)
    return {name: rows[:, offset:offset + size] for name, (offset, size) in simulation.layout.items()}


def test_a_1_m_s_touchdown_on_the_default_gear_peaks_at_a_few_g_and_settles():
    rows = touchdown(1.0)
    g = GRAVITY
    peak = np.abs(rows["reading.imu"][:, 5]).max() / g
    assert 2.0 < peak < 8.0, peak  # the gear of hil 0.x: 68 g, the accelerometer pinned at its 16 g range
    rest = -scenario.LandingGear().foot_depth + MASS * g / (4 * scenario.LandingGear().stiffness)
    last = slice(-100, None)  # the last 0.1 s
    np.testing.assert_allclose(rows["position"][last, 2], rest, atol=1e-4)
    np.testing.assert_allclose(rows["velocity"][last], 0.0, atol=1e-3)
    np.testing.assert_allclose(rows["reading.imu"][last, 3:], [[0.0, 0.0, -g]] * 100, atol=1e-2)
