"""The tick as a pure function of its parameters: new numbers fly without compiling, and
``jax.grad`` and ``jax.vmap`` go through it."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hil import flightlog, replay, runner, scenario
from hil.expectations import Judge
from hil.sim import Simulation
from hil.tick import Tick, noise
from hil.tick.params import build, key_data
from hil.trace import Trace
from support import SCENARIOS

BASE_CHANGES = {
    "duration": 2.5, "expect": [{"name": "level", "never_above": {"quantity": "tilt_deg", "bound": 20}}],
    "environment.wind.turbulence.intensity": [0.3, 0.3, 0.1],
    "faults": [{"start": 1.2, "duration": 0.4, "sensor": {"name": "baro", "mode": "noise", "std": [20.0, 0.0]}}],
}
# Each changes one number the issue names; none changes a shape.
VARIANTS = {
    "seed 2": {"seed": 2}, "seed 3": {"seed": 3}, "mass": {"vehicle.mass": 1.6},
    "thrust coefficient": {"vehicle.thrust_coefficient": 9.0e-6}, "wind": {"environment.wind.steady": [1.0, -0.5, 0.0]},
    "sensor noise": {"sensors.baro.noise": 6.0}, "fault start": {"faults.0.start": 1.5},
    "controller gain": {"firmware.gains.rate": [40.0, 40.0, 12.0]},
}


@pytest.fixture(scope="module")
def base():
    return scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {**BASE_CHANGES, "seed": 1})


@pytest.mark.slow
def test_seeds_and_changed_numbers_fly_one_compiled_program_and_replay_bit_identically(base, tmp_path):
    flown = {"seed 1": (base, runner.run(base, log_path=tmp_path / "base.hillog"))}
    compilations = {}
    for name, changes in VARIANTS.items():
        changed = scenario.with_changes(base, changes)
        before = runner.compilations()
        flown[name] = (changed, runner.run(changed, log_path=tmp_path / f"{name.replace(' ', '_')}.hillog"))
        compilations[name] = runner.compilations() - before
    assert compilations == dict.fromkeys(VARIANTS, 0)
    rows = {name: result.trace.rows[:result.trace.ticks_done] for name, (_, result) in flown.items()}
    for name in VARIANTS:  # the new number reached the compiled tick
        assert not np.array_equal(rows[name], rows["seed 1"]), name
    replays = {}
    for name in flown:
        before = runner.compilations()
        result = replay.replay(flightlog.read(tmp_path / f"{name.replace(' ', '_') if name != 'seed 1' else 'base'}.hillog"))
        replays[name] = (result.identical, result.ticks, runner.compilations() - before)
    first = next(iter(replays))
    assert replays[first][:2] == (True, base.ticks + 1)
    assert all(identical and ticks == base.ticks + 1 and (name == first or compiled == 0)
               for name, (identical, ticks, compiled) in replays.items()), replays


def test_the_program_is_named_by_structure_not_by_numbers(base):
    name = Simulation(base).program_name("batch256")
    for changes in VARIANTS.values():
        assert Simulation(scenario.with_changes(base, changes)).program_name("batch256") == name
    gust = {"environment.wind.gusts": [{"start": 1.0, "duration": 0.5, "peak": [2.0, 0.0, 0.0]}]}
    for changes in (gust, {"sensors.rangefinder": {"rate_hz": 50.0}}, {"physics.substeps": 2}, {"faults": []}):
        assert Simulation(scenario.with_changes(base, changes)).program_name("batch256") != name, changes
    assert Simulation(base, in_process_firmware=False).program_name("batch256") != name


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32 - 1, 2**32, 2**63 - 1])
def test_the_key_data_is_jaxs_own(seed):
    assert np.array_equal(key_data(seed), np.asarray(jax.random.key_data(jax.random.key(seed))))


def test_a_batch_draws_the_noise_a_run_alone_draws_bit_for_bit():
    """A sweep's tick computes each draw once for the batch, rounded up to whole vectors of four
    (hil.tick.noise.TickNoise); a member's normals must still be those of the run alone."""
    streams = [(noise.WIND_STREAM, 3), (16, 12), (17, 1), (18, 3), (19, 6), (1 << 20, 2)]
    keys = np.stack([key_data(seed) for seed in (1, 2, 2**40 + 7, 2**63 - 1)])

    def batch(key, tick):
        draws = noise.TickNoise(jax.random.wrap_key_data(key), tick, batched=True)
        return [draws.normals(stream, count) for stream, count in streams]

    flown = jax.jit(jax.vmap(batch, in_axes=(0, None), axis_name="members"))
    for tick in (0, 1, 4321):
        together = [np.asarray(x) for x in flown(keys, jnp.int64(tick))]
        for member, key in enumerate(keys):
            alone = noise.TickNoise(jax.random.wrap_key_data(key), tick)
            for (stream, count), drawn in zip(streams, together):
                assert drawn.shape == (len(keys), count)
                np.testing.assert_array_equal(drawn[member], np.asarray(alone.normals(stream, count)))


# ---- gradients -------------------------------------------------------------------------------------

def _open_loop(duration: float):
    """A free-flying vehicle at 10 m with its rotors at speed and a constant throttle."""
    loaded = scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {
        "duration": duration, "expect": [], "environment.ground": False, "initial.position": [0.0, 0.0, -10.0],
        "initial.rotor_speed": 650.0})
    structure, params = build(loaded, in_process_firmware=False)
    return loaded, Tick(structure), params


@pytest.mark.slow
def test_the_gradient_of_altitude_by_mass_and_thrust_coefficient_matches_finite_differences():
    loaded, tick, params = _open_loop(1.0)
    throttle = jnp.full(4, 0.62)

    def altitude(mass, thrust_coefficient):
        vehicle = params.vehicle
        changed = dataclasses.replace(params, vehicle=dataclasses.replace(
            vehicle, body=dataclasses.replace(vehicle.body, mass=mass), thrust_coefficient=thrust_coefficient))
        state = tick.init(changed)
        state, _ = jax.lax.scan(lambda s, _: (tick.step(changed, s, throttle)[0], None), state, None,
                                length=loaded.ticks + 1)
        return -state.vehicle.body.position[2]

    mass, kt = float(params.vehicle.body.mass), float(params.vehicle.thrust_coefficient)
    gradient = jax.jit(jax.grad(altitude, argnums=(0, 1)))(mass, kt)
    value = jax.jit(altitude)
    for index, (x, step) in enumerate(((mass, 1e-4 * mass), (kt, 1e-4 * kt))):
        args = [mass, kt]
        args[index] = x + step
        up = float(value(*args))
        args[index] = x - step
        down = float(value(*args))
        central = (up - down) / (2 * step)
        assert abs(float(gradient[index]) - central) <= 1e-6 * abs(central), (index, gradient[index], central)
    assert float(gradient[0]) < 0 < float(gradient[1])  # heavier sinks, more thrust climbs



@pytest.mark.slow
def test_the_gradient_through_the_closed_loop_by_a_controller_gain_matches_finite_differences():
    """Tuning a gain by gradient: the in-process quad_pid inside the tick, with its sensors' noise,
    the ground under it and its branches (a value computed once, hil.models.small.computed_once)."""
    loaded = scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {"duration": 3.0, "expect": []})
    structure, params = build(loaded, in_process_firmware=True)
    tick = Tick(structure)

    def altitude(vertical_gain):
        firmware = params.firmware
        gains = jnp.asarray(firmware.gain_velocity).at[2].set(vertical_gain)
        changed = dataclasses.replace(params, firmware=dataclasses.replace(firmware, gain_velocity=gains))
        state, _ = jax.lax.scan(lambda s, _: (tick.step(changed, s)[0], None), tick.init(changed), None,
                                length=loaded.ticks + 1)
        return -state.vehicle.body.position[2]

    gain = float(np.asarray(params.firmware.gain_velocity)[2])
    gradient = float(jax.jit(jax.grad(altitude))(gain))
    value, step = jax.jit(altitude), 1e-4 * gain
    central = (float(value(gain + step)) - float(value(gain - step))) / (2 * step)
    assert abs(gradient - central) <= 1e-6 * abs(central), (gradient, central)
    assert gradient > 0  # a stiffer vertical velocity loop has climbed further towards 2 m by 3 s

# ---- batches ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_vmapped_batch_of_64_members_flies_each_as_it_flies_alone(base):
    members = 64
    masses = np.linspace(1.3, 1.9, members)
    scenarios = [scenario.with_changes(base, {"seed": 100 + i, "vehicle.mass": float(masses[i])}) for i in range(members)]
    structure, _ = build(scenarios[0], in_process_firmware=True)
    built = [build(s, in_process_firmware=True) for s in scenarios]
    assert all(s == structure for s, _ in built)
    stacked = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *(p for _, p in built))
    tick = Tick(structure)
    ticks = scenarios[0].ticks + 1

    def fly(params):
        _, rows = jax.lax.scan(lambda s, _: tick.step(params, s), tick.init(params), None, length=ticks)
        return rows

    batch = np.asarray(jax.jit(jax.vmap(fly))(stacked))
    # A bound in the middle of the members' highest points: about half of them pass, so a member
    # flown differently in the batch would change its verdict.
    offset = tick.layout["position"][0] + 2
    bound = float(np.median(-batch[:, :, offset].min(axis=1)))
    expect = [{"name": "level", "never_above": {"quantity": "tilt_deg", "bound": 20}},
              {"name": "stays low", "never_above": {"quantity": "altitude", "bound": bound}}]
    largest, identical, verdicts = 0.0, 0, []
    for member, flown in enumerate(scenarios):
        flown = scenario.with_changes(flown, {"expect": expect})
        alone = runner.run(flown, runtime="in-process")
        rows = alone.trace.rows[:ticks]
        largest = max(largest, float(np.max(np.abs(batch[member] - rows))))
        identical += np.array_equal(batch[member], rows)
        trace = Trace.for_run(ticks, tick.layout, structure.rate)
        judge = Judge(flown, trace)
        trace.span(0, ticks)[:] = batch[member]
        trace.ticks_done = ticks
        batched = [o.passed for o in judge.outcomes()]
        assert batched == [o.passed for o in alone.outcomes], member
        verdicts.append(batched[1])
    assert largest <= 1e-9, largest
    assert 0 < sum(verdicts) < members  # the expectations tell the members apart: the comparison can fail
    print(f"64 members: largest difference to the member flown alone {largest:.3g}; {identical} of 64 bit-identical")


@pytest.mark.slow
def test_hil_run_says_when_it_compiles_and_a_changed_number_does_not(tmp_path):
    environment = dict(os.environ, HIL_CACHE_DIR=str(tmp_path / "cache"))

    def hil_run(*options):
        completed = subprocess.run(
            [sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--firmware", "in-process",
             "--duration", "9", "--out", str(tmp_path / "run.hillog"), *options],
            capture_output=True, text=True, env=environment, timeout=600)
        assert completed.returncode == 0, completed.stderr
        return "compiling the tick" in completed.stderr

    assert hil_run()
    assert not hil_run("--seed", "5", "--set", "vehicle.mass=1.6", "--set", "firmware.gains.rate=[40,40,12]")
    assert hil_run("--set", "physics.substeps=2")
