"""quad_pid's C code inside the compiled tick (hil.firmware_stubs.quad_pid_c: quad_pid.c stepped by
an XLA FFI call over the batch):

- on the same readings, a batch of members with different gains gives the JAX twin's throttles
  to rounding, and each member what it gives flown alone, bit for bit;
- a sweep flying it gives, member by member, the commands the C firmware process sends when that
  member is flown alone in lockstep, to 1e-9, and the verdicts the JAX twin's sweep gives.
"""

import subprocess
import sys

import jax
import numpy as np
import pytest
from support import SPLITTING_EXPECT, dispersed_hover

from hil import runner, scenario, sweep
from hil.firmware_stubs import quad_pid, quad_pid_c
from hil.models.pytree import replace


def _unavailable() -> str | None:
    try:
        quad_pid_c.load()
    except (RuntimeError, OSError) as error:
        return str(error)
    return None


pytestmark = [pytest.mark.skipif(_unavailable() is not None, reason=f"no C controller in the tick: {_unavailable()}"),
              pytest.mark.slow]  # sweeps of the JAX and the C controller, some 50 s in all

MEMBERS = 16
EXPECT = SPLITTING_EXPECT[:3]  # each splits the members: a member flown differently by C would change its verdict


@pytest.fixture(scope="module")
def base():
    return dispersed_hover(EXPECT, runs=MEMBERS, seed=14)


def flying_c(loaded):
    """``loaded`` with the C controller in the tick, as a file saying ``firmware: {name: quad_pid_c}``."""
    return scenario.with_changes(loaded, {"firmware.name": "quad_pid_c"})


@pytest.fixture(scope="module")
def c_sweep(base):
    return sweep.fly(flying_c(base), chunk=MEMBERS, keep_traces=True)


def columns(flown, name):
    offset, size = flown.layout[name]
    return flown.traces[..., offset:offset + size]


def test_the_c_controller_gives_the_twins_throttles_member_by_member(base, c_sweep):
    """Both controllers over the readings of the C sweep's flights, each member with gains of its
    own: the same throttles to 1e-9 at every tick (the C and Python arithmetic differ only in
    rounding), and the C member in the batch exactly as flown alone."""
    rng = np.random.default_rng(3)
    plain = quad_pid.params_from_scenario(base)
    members = [replace(plain, **{name: np.asarray(getattr(plain, name)) * rng.uniform(0.6, 1.4, 3)
                                 for name in ("gain_velocity", "gain_attitude", "gain_rate", "gain_rate_integral")})
               for _ in range(MEMBERS)]
    params = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *members)
    sensors = [name.split(".", 1)[1] for name in c_sweep.layout if name.startswith("reading.")]
    readings = {name: columns(c_sweep, f"reading.{name}") for name in sensors}
    fresh = {name: columns(c_sweep, "fresh")[..., index] != 0 for index, name in enumerate(sensors)}
    ticks = c_sweep.traces.shape[1]
    times = np.broadcast_to(np.arange(ticks) / base.physics.rate_hz, (MEMBERS, ticks))

    def flight(module, step):
        def member(p, readings, fresh, times):
            def one(state, tick):
                r, f, t = tick
                return step(p, state, r, f, t)
            return jax.lax.scan(one, module.init(p), (readings, fresh, times))[1]
        return member

    twin = jax.jit(jax.vmap(flight(quad_pid, quad_pid.step)))(params, readings, fresh, times)
    c_member = flight(quad_pid_c, quad_pid_c.controller)
    c = jax.jit(jax.vmap(c_member))(params, readings, fresh, times)
    largest = float(np.max(np.abs(np.asarray(c) - np.asarray(twin))))
    assert largest <= 1e-9, largest
    alone = jax.jit(c_member)(members[5], *(jax.tree_util.tree_map(lambda x: x[5], (readings, fresh, times))))
    assert np.array_equal(alone, c[5])  # members share nothing
    c = np.asarray(c)
    arm, mission = round(0.2 * base.physics.rate_hz), round(1.2 * base.physics.rate_hz)
    assert not c[:, :arm].any() and np.all(c[:, arm:mission] == plain.idle_throttle)  # waiting, spinning up
    assert (c[:, mission:] > plain.idle_throttle).any(axis=(1, 2)).all()  # the mission flown by every member
    assert len({c[m, -1].tobytes() for m in range(MEMBERS)}) == MEMBERS  # each member its own gains
    print(f"C against the twin over {MEMBERS} members x {ticks} ticks: largest difference {largest:.3g}")


def test_a_member_flies_the_commands_of_the_c_firmware_process_flown_alone(base, c_sweep):
    ticks = base.ticks + 1
    commands = columns(c_sweep, "command")
    wind = np.linalg.norm(c_sweep.draws["environment.wind.steady"], axis=1)
    for member in (int(np.argmax(wind)), int(np.argmin(wind))):
        drawn = {key: values[member] for key, values in c_sweep.draws.items()}
        alone = runner.run(sweep.member_scenario(base, c_sweep.sweep, member, c_sweep.seeds[member], drawn),
                           runtime="c")
        assert alone.failure is None and alone.runtime == "c"
        largest = float(np.max(np.abs(alone.trace.column("command")[:ticks] - commands[member])))
        assert largest <= 1e-9, (member, largest)
        assert [o.passed for o in alone.outcomes] == c_sweep.passed[member].tolist(), member
        path = float(np.max(np.abs(alone.trace.rows[:ticks] - c_sweep.traces[member])))
        print(f"member {member}: commands within {largest:.3g} of the C process's, rows within {path:.3g}")


def test_a_sweep_flying_the_c_controller_gives_the_jax_sweeps_verdicts(base, c_sweep):
    twin = sweep.fly(base, chunk=MEMBERS)
    assert np.array_equal(c_sweep.passed, twin.passed)
    for index, expectation in enumerate(EXPECT):  # the verdicts tell the members apart: the comparison could fail
        assert 0 < c_sweep.passed[:, index].sum() < MEMBERS, expectation["name"]


def test_a_run_alone_flies_the_c_controller_in_process_and_its_log_replays(base, c_sweep, tmp_path):
    member = 3
    drawn = {key: values[member] for key, values in c_sweep.draws.items()}
    alone = runner.run(sweep.member_scenario(flying_c(base), c_sweep.sweep, member, c_sweep.seeds[member], drawn),
                       log_path=tmp_path / "alone.hillog")
    assert alone.failure is None and alone.runtime == "in-process"
    assert [o.passed for o in alone.outcomes] == c_sweep.passed[member].tolist()
    largest = float(np.max(np.abs(alone.trace.rows[:base.ticks + 1] - c_sweep.traces[member])))
    assert largest <= 1e-9, largest
    replayed = subprocess.run([sys.executable, "-m", "hil", "replay", str(tmp_path / "alone.hillog")],
                              capture_output=True, text=True)
    assert replayed.returncode == 0 and "bit-identical" in replayed.stdout, replayed.stdout + replayed.stderr
