"""hil sweep: dispersed members of a scenario flown as one compiled program, judged on the device.

The rule these tests hold (docs/sweep.md): a member's numbers are bit-identical whatever the
number of members, the chunking and the number of devices when each device flies as many members
at a time; otherwise they agree within 1e-12; flown alone (``hil.runner.run``, in-process) a member has the same verdicts and its
trajectory within 1e-9.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from hil import runner, scenario, sweep
from hil.expectations import Judge, Outcome
from hil.tick.params import build
from hil.trace import Trace
from support import HOVER_DISPERSIONS, SCENARIOS, SPLITTING_EXPECT, dispersed_hover, hil_command, jax_platforms

EXPECT = SPLITTING_EXPECT


@pytest.fixture(scope="module")
def base():
    return dispersed_hover(EXPECT, runs=64, seed=11)


@pytest.fixture(scope="module")
def flown(base):
    return sweep.fly(base, runs=64, chunk=32, keep_traces=True)


@pytest.mark.slow
def test_member_i_is_the_same_whatever_the_number_of_members_and_the_chunking(base, flown):
    more = sweep.fly(base, runs=96, chunk=32, keep_traces=True)
    wider = sweep.fly(base, runs=128, chunk=64, keep_traces=True)
    for other in (more, wider):
        assert np.array_equal(other.seeds[:64], flown.seeds)
        assert all(np.array_equal(other.draws[key][:64], values) for key, values in flown.draws.items())
        assert np.array_equal(other.passed[:64], flown.passed)
    assert np.array_equal(more.traces[:64], flown.traces)  # same chunk size: every bit
    assert more.outcomes[:64] == flown.outcomes
    largest = float(np.max(np.abs(wider.traces[:64] - flown.traces)))
    assert largest <= 1e-12, largest
    for index in range(len(EXPECT)):  # the verdicts tell the members apart: the comparison could fail
        assert 0 < flown.passed[:, index].sum() < 64 or index == 0, (EXPECT[index]["name"], flown.passed[:, index].sum())
    assert not np.array_equal(flown.traces[0], flown.traces[1])
    print(f"members 0-63 at chunk 64 against chunk 32: largest difference {largest:.3g}")


@pytest.mark.slow
def test_a_256_member_sweep_agrees_with_512_members_and_with_chunks_of_64_and_256():
    """Issue 14's sizes: 256 members of hover (mass within 10 %, wind, IMU bias), in chunks of 64,
    against the first 256 of 512 in chunks of 64 (every bit) and 256 in one chunk (1e-12)."""
    members = dispersed_hover(EXPECT, runs=256, seed=11)
    by_64 = sweep.fly(members, runs=256, chunk=64, keep_traces=True)
    more = sweep.fly(members, runs=512, chunk=64, keep_traces=True)
    whole = sweep.fly(members, runs=256, chunk=256, keep_traces=True)
    assert np.array_equal(more.traces[:256], by_64.traces) and more.outcomes[:256] == by_64.outcomes
    assert np.array_equal(whole.passed, by_64.passed)
    largest = float(np.max(np.abs(whole.traces - by_64.traces)))
    assert largest <= 1e-12, largest
    assert all(0 < by_64.passed[:, index].sum() < 256 for index in range(1, len(EXPECT)))  # verdicts that can differ
    print(f"256 members, one chunk against chunks of 64: largest difference {largest:.3g}")


@pytest.mark.slow
def test_member_i_is_the_same_on_one_device_and_on_two(base, flown):
    import jax
    assert len(jax.local_devices()) == 2  # jaxconfig: one CPU device per core, and the suite runs on two
    alone = sweep.fly(base, runs=64, chunk=16, devices=1, keep_traces=True)  # 16 members a device, as flown's
    wider = sweep.fly(base, runs=64, chunk=32, devices=1, keep_traces=True)  # 32 a device
    assert np.array_equal(alone.traces, flown.traces)
    assert alone.outcomes == flown.outcomes
    assert np.array_equal(wider.passed, flown.passed)
    largest = float(np.max(np.abs(wider.traces - flown.traces)))
    assert largest <= 1e-12, largest
    print(f"one device, 32 members a device, against two devices, 16 each: largest difference {largest:.3g}")


def test_without_chunk_each_device_flies_its_platforms_share(base, flown, monkeypatch):
    """--chunk left out: so many members a device (256 a CPU core), the chunk that many times the
    devices; made flown's share here (32 members over this host's devices), a sweep over every
    device and one over a single device both fly flown's members a device, so its bits."""
    import jax
    devices = len(jax.local_devices())
    if 32 % devices:
        pytest.skip(f"flown's 32 members do not split evenly over {devices} devices")
    assert sweep.default_chunk("cpu", 2) == 512 and sweep.default_chunk("gpu", 1) == sweep.MEMBERS_PER_ACCELERATOR
    share = 32 // devices
    monkeypatch.setitem(sweep.MEMBERS_PER_DEVICE, "cpu", share)
    every, one = sweep.fly(base, runs=64, keep_traces=True), sweep.fly(base, runs=64, devices=1, keep_traces=True)
    assert (every.chunk, one.chunk) == (32, share) and (every.devices, one.devices) == (devices, 1)
    assert {key: every.summary()[key] for key in ("chunk", "devices", "platform")} == {
        "chunk": 32, "devices": devices, "platform": "cpu"}
    assert np.array_equal(every.traces, flown.traces) and np.array_equal(one.traces, flown.traces)


def test_a_member_in_still_air_flies_the_same_bits_beside_turbulent_members(flown):
    """A batch steps its turbulence only while some member's wind is turbulent (hil.tick.physics):
    a member in still air flies the same bits beside turbulent members as in a batch with none,
    and a turbulent member's wind moves. The same chunk shape as flown's: its program."""
    key = "environment.wind.turbulence.intensity"

    def swept(intensities):
        dispersions = [*HOVER_DISPERSIONS, {"key": key, "choice": intensities}]
        return sweep.fly(dispersed_hover(EXPECT, runs=32, seed=5, dispersions=dispersions), chunk=32,
                         keep_traces=True)

    mixed, still = swept([[0, 0, 0], [0.8, 0.8, 0.3]]), swept([[0, 0, 0], [0, 0, 0]])
    calm = ~np.asarray(mixed.draws[key]).any(axis=1)
    assert calm.any() and not calm.all() and not np.asarray(still.draws[key]).any()
    assert np.array_equal(mixed.traces[calm], still.traces[calm])
    offset, size = mixed.layout["wind"]
    wind = mixed.traces[:, :, offset:offset + size]
    assert np.all(wind[calm] == wind[calm][:, :1])  # the steady wind alone, tick after tick
    assert np.all(np.ptp(wind[~calm], axis=1).max(axis=1) > 0.05)


def test_members_built_in_processes_fly_the_members_built_here(base, flown):
    """On a host whose cores do not fly (a GPU's), processes build each chunk's members in parts
    (hil.sweep.member_builders): the same parameters and states, so the same flight; a member
    that cannot fly is named from its process."""
    import dataclasses

    job = sweep.ChunkPlan(dataclasses.replace(base, sweep=None), sweep.plan(base, 64), 16, False,
                          None, build_processes=3)
    with sweep.member_builders(3) as builders:
        assert builders.submit(jax_platforms).result() == "cpu"  # beside a GPU, they leave it to the flight
        apart = sweep.build_chunk(job, range(40, 51), builders)  # 11 members in parts of 4, 4, 3; 5 of padding
        here = sweep.build_chunk(job, range(40, 51))
        assert apart[0] == here[0]
        assert jax.tree_util.tree_structure(apart[1:]) == jax.tree_util.tree_structure(here[1:])
        for theirs, ours in zip(jax.tree_util.tree_leaves(apart[1:]), jax.tree_util.tree_leaves(here[1:])):
            assert np.shape(theirs) == np.shape(ours) and np.array_equal(theirs, ours)
        assert len(jax.tree_util.tree_leaves(here[1])[0]) == 16
        # Motors too quick for the substep: every member's checks fail, the first part's first.
        quick = dataclasses.replace(job.scenario.vehicle, motor_time_constant=1e-5)
        failing = dataclasses.replace(job, scenario=dataclasses.replace(job.scenario, vehicle=quick))
        with pytest.raises(sweep.SweepError, match=r"^member 44 \(.*motor_time_constant: rotor speeds decay"):
            sweep.build_chunk(failing, range(44, 48), builders)
    built_apart = sweep.fly(base, runs=64, chunk=32, keep_traces=True, build_processes=2)
    assert np.array_equal(built_apart.traces, flown.traces) and built_apart.outcomes == flown.outcomes
    cores_fly = jax.default_backend() == "cpu"  # then a thread builds; beside accelerators, every core but one
    assert sweep.default_build_processes("quad_pid") == (0 if cores_fly else len(os.sched_getaffinity(0)) - 1)


@pytest.mark.slow
def test_a_chunk_flies_in_segments_that_tell_progress_and_change_no_bit(base, flown, monkeypatch):
    """A chunk flies as sweep.SEGMENTS calls of one program, its state carried on the device from
    one to the next: progress is told as each call lands, within the chunk, and a member's bits
    are those of the chunk flown in one call."""
    ticks, told = base.ticks + 1, []
    segmented = sweep.fly(base, runs=32, chunk=32, keep_traces=True, progress=lambda *said: told.append(said))
    assert np.array_equal(segmented.traces, flown.traces[:32])  # flown's first chunk
    member_ticks = [said[0] for said in told]
    assert member_ticks == sorted(member_ticks) and member_ticks[-1] == told[-1][1] == 32 * ticks
    assert len([m for m in member_ticks if 0 < m < 32 * ticks]) >= sweep.SEGMENTS - 1  # one chunk, told in parts
    monkeypatch.setattr(sweep, "SEGMENTS", 1)
    whole = sweep.fly(base, runs=32, chunk=32, keep_traces=True)
    assert np.array_equal(whole.traces, segmented.traces) and whole.outcomes == segmented.outcomes


def test_on_a_gpu_host_the_jax_controller_flies_on_the_gpus_and_the_c_one_on_the_cpu_cores(monkeypatch):
    """The choice alone (no GPU here): quad_pid_c's FFI call is built for the CPU."""
    import jax
    cores, gpus = jax.local_devices(backend="cpu"), ["gpu 0", "gpu 1"]
    every = jax.local_devices
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "local_devices", lambda backend=None: gpus if backend in (None, "gpu") else every(backend=backend))
    assert sweep.flight_devices("quad_pid") == gpus and sweep.flight_devices("open_loop") == gpus
    assert sweep.flight_devices("quad_pid_c") == cores and len(cores) == len(os.sched_getaffinity(0))


def test_the_sweeps_program_lowers_for_a_gpu_with_nothing_only_a_cpu_runs(base):
    """No GPU here, but JAX lowers a program for a platform it does not have: the sweep's program of
    the JAX controller, exported for CUDA, calls no custom target (no C library routine, no host
    callback), so a GPU host compiles the very program the CPU cores fly."""
    job = sweep.ChunkPlan(dataclasses.replace(base, sweep=None), base.sweep, 4, False, 1, 0)
    shape, params, states = sweep.build_chunk(job, range(4))
    flight = sweep._chunk_program(job, shape)
    lowered = jax.export.export(jax.jit(flight.segment), platforms=("cuda",))(params, flight.start(states),
                                                                              np.int64(0))
    assert lowered.platforms == ("cuda",) and flight.custom_call is None
    module = lowered.mlir_module()
    assert "stablehlo.while" in module and "custom_call" not in module


_COMPILES_ONCE = """
import json, logging, sys
from hil import jaxconfig
jaxconfig.configure()
import numpy as np
from hil import sweep
from support import SPLITTING_EXPECT, dispersed_hover

said = []
class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
compiler = logging.getLogger("jax._src.compiler")
compiler.setLevel(logging.DEBUG)
compiler.addHandler(Keep())
base = dispersed_hover(SPLITTING_EXPECT, runs=8, seed=11)
two = sweep.fly(base, runs=8, chunk=8, keep_traces=True)
one = sweep.fly(base, runs=8, chunk=4, devices=1, keep_traces=True)
program = [line.split(" for ")[0].lower() for line in said
           if "jit_segment" in line and "persistent compilation cache" in line.lower()]
print(json.dumps({"program": program, "same": bool(np.array_equal(one.traces, two.traces))}))
"""


@pytest.mark.slow
def test_two_devices_compile_the_program_once_and_fly_the_bits_of_one(tmp_path):
    """With an empty cache, the second device loads the first's compilation from the persistent
    cache (the cache's key names no CPU device, hil.jaxconfig) instead of compiling again."""
    from support import ROOT

    done = subprocess.run([sys.executable, "-c", _COMPILES_ONCE], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "HIL_CACHE_DIR": str(tmp_path / "cache"),
                                             "PYTHONPATH": str(ROOT / "tests")})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["program"] == ["persistent compilation cache miss", "persistent compilation cache hit"], found
    assert found["same"]  # members 4-7 flew on the second device in the first sweep, on the first in the second


_FLIES_TRACED_OR_NOT = """
import json, sys
from hil import jaxconfig
jaxconfig.configure()
from hil import sweep
from hil.tick import Tick
from support import SPLITTING_EXPECT, dispersed_hover

if sys.argv[1] == "without tracing":
    def traced(*arguments):
        raise AssertionError("the tick was traced")
    Tick.step = traced
flown = sweep.fly(dispersed_hover(SPLITTING_EXPECT, runs=8, seed=11), runs=8, chunk=8)
print(json.dumps([flown.final_rows.tolist(), flown.passed.tolist()]))
"""


@pytest.mark.slow
def test_a_warm_start_flies_the_cached_program_without_tracing_the_tick(tmp_path):
    """The sweep's program is kept in the traced-tick cache (hil.tick_cache): a second process
    flies it with the tick's Python unusable, and its members fly the same bits."""
    from support import ROOT

    def sweep_in_a_process(how: str) -> list:
        done = subprocess.run([sys.executable, "-c", _FLIES_TRACED_OR_NOT, how], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env={**os.environ, "HIL_CACHE_DIR": str(tmp_path / "cache"),
                                                              "PYTHONPATH": str(ROOT / "tests")})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.splitlines()[-1])

    cold = sweep_in_a_process("traced")
    assert len(list((tmp_path / "cache" / "ticks").glob("*.jaxexport"))) == 1
    assert sweep_in_a_process("without tracing") == cold
    (next((tmp_path / "cache" / "ticks").glob("*.jaxexport"))).unlink()
    with pytest.raises(AssertionError, match="the tick was traced"):  # the check can fail: without the cache it traces
        sweep_in_a_process("without tracing")


def test_a_member_flown_alone_has_the_same_verdicts_and_trajectory(base, flown):
    ticks = base.ticks + 1
    picked = [int(np.argmin(flown.passed.sum(axis=1))), int(np.argmax(flown.passed.sum(axis=1))), 37]
    for member in picked:
        drawn = {key: values[member] for key, values in flown.draws.items()}
        alone_scenario = sweep.member_scenario(base, flown.sweep, member, flown.seeds[member], drawn)
        # The sweep builds members by the fast path; it gives the scenario with_changes gives.
        assert sweep.changed(base, {**drawn, "seed": flown.seeds[member]}) == alone_scenario
        assert build(alone_scenario, True)[0] == build(base, True)[0]
        alone = runner.run(alone_scenario, runtime="in-process")
        rows = alone.trace.rows[:ticks]
        largest = float(np.max(np.abs(rows - flown.traces[member])))
        assert largest <= 1e-9, (member, largest)
        assert [o.passed for o in alone.outcomes] == [o.passed for o in flown.outcomes[member]], member
        assert [o.bound for o in alone.outcomes] == [o.bound for o in flown.outcomes[member]]
        trace = Trace.for_run(ticks, alone.trace.layout, alone.trace.rate_hz)
        judge = Judge(alone_scenario, trace)
        trace.span(0, ticks)[:] = rows
        trace.ticks_done = ticks
        judge.outcomes()
        for index, monitor in enumerate(judge.monitors):  # the measured numbers, as the host measures them
            host = (monitor.extreme if monitor.kind != "reach" else monitor.reached or monitor.closest)[0]
            device = next(iter(flown.measured[index].values()))[member]
            assert abs(host - device) <= 1e-9, (member, EXPECT[index]["name"], host, device)
    assert not all(flown.passed[picked[0]]) and all(flown.passed[picked[1]])


@pytest.mark.slow
def test_two_sweeps_give_identical_tables_and_the_cli_gives_the_same(base, tmp_path):
    first, second = sweep.fly(base, runs=64, chunk=32), sweep.fly(base, runs=64, chunk=32)
    first.write(tmp_path / "first")
    second.write(tmp_path / "second")
    table = (tmp_path / "first" / "members.csv").read_bytes()
    assert table == (tmp_path / "second" / "members.csv").read_bytes()
    assert table.count(b"\n") == 65
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    rates = [e["pass_rate"] for e in summary["expectations"]]
    assert [e["passed"] for e in summary["expectations"]] == first.passed.sum(axis=0).tolist()
    for index, entry in enumerate(summary["expectations"]):
        low, high = entry["wilson_95"]
        assert low <= entry["pass_rate"] <= high
        worst = [w["member"] for w in entry["worst"]]
        assert len(worst) == sweep.WORST
        # the worst listed are as far past the bound as any member
        assert min(first.margins[worst, index]) >= np.delete(first.margins[:, index], worst).max()
        if entry["passed"] < 64:
            assert not entry["worst"][0]["passed"]
    assert summary["passed"] is False and min(rates) < 0.9

    path = tmp_path / "sweep.yaml"
    path.write_text(base.source)

    def hil_sweep(*options):
        return subprocess.run([sys.executable, "-m", "hil", "sweep", str(path), "--chunk", "32", *options],
                              capture_output=True, text=True, timeout=600)

    failed = hil_sweep("--out", str(tmp_path / "cli"))
    assert failed.returncode == 1, failed.stderr
    assert (tmp_path / "cli" / "members.csv").read_bytes() == table
    assert "0/64 members   preparing the compiled program" in failed.stderr  # before the seconds of compiling
    assert "64/64 members" in failed.stderr and "member-ticks/s" in failed.stderr
    assert "FAILED" in failed.stdout and "stays low" in failed.stdout
    passed = hil_sweep("--out", str(tmp_path / "cli2"), "--set", f"sweep.require={min(rates)}", "-q", "-v")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASSED" in passed.stdout
    # -v: each stage's time; the program, traced by the sweep before, now comes from the traced-tick cache
    stages = [line.split("] ", 1)[1] for line in passed.stderr.splitlines() if line.startswith("  [")]
    assert any(re.fullmatch(r"the sweep's program \(\d+ members a device\): loaded from the traced-tick cache "
                            r"in [\d.]+ s", stage) for stage in stages), stages
    assert any(stage.startswith("the sweep's program ready on cpu:0 in ") for stage in stages), stages
    for first, last in ((0, 31), (32, 63)):
        assert any(re.fullmatch(rf"members {first}-{last} built on the host in [\d.]+ s \([\d.]+ ms a member\)",
                                stage) for stage in stages), stages
        assert any(re.fullmatch(rf"members {first}-{last} flown in [\d.]+ s on \d devices?: \d+ k member-ticks/s",
                                stage) for stage in stages), stages
    assert "/64 members" not in passed.stderr  # -q: no progress line


def test_draws_depend_on_the_member_alone_and_grids_form_a_product(base):
    plan = sweep.plan(base)
    seeds, drawn = sweep.draws(base, plan, range(200))
    some_seeds, some = sweep.draws(base, plan, [5, 170, 3])
    assert np.array_equal(some_seeds, seeds[[5, 170, 3]])
    assert all(np.array_equal(some[key], drawn[key][[5, 170, 3]]) for key in drawn)
    assert len(set(seeds.tolist())) == 200
    masses = drawn["vehicle.mass"]
    assert 1.35 <= masses.min() and masses.max() < 1.65 and 1.45 < masses.mean() < 1.55
    assert drawn["sensors.imu.gyro_bias_random_walk"].min() >= 0
    assert abs(np.std(drawn["environment.wind.steady"][:, 0]) - 1.0) < 0.2
    gridded = scenario.with_changes(base, {"sweep.dispersions": [
        {"key": "firmware.gains.rate", "grid": [[30, 30, 10], [40, 40, 12]]},
        {"key": "vehicle.mass", "grid": [1.4, 1.5, 1.6]}], "sweep.vary_seed": False})
    seeds, drawn = sweep.draws(gridded, gridded.sweep, range(7))
    assert seeds.tolist() == [gridded.seed] * 7
    assert drawn["firmware.gains.rate"][:, 0].tolist() == [30, 40, 30, 40, 30, 40, 30]
    assert drawn["vehicle.mass"].tolist() == [1.4, 1.4, 1.5, 1.5, 1.6, 1.6, 1.4]


SCHEMA_ERRORS = """\
version: 1
name: sweep errors
duration: 5
firmware: {name: open_loop}
faults:
  - {start: 2, motor: {index: 0, efficiency: 0.5}}
sweep:
  runs: 100
  dispersions:
    - key: vehicle.mas
      uniform: {low: 1.4, high: 1.6}
    - key: environment.wind.steady
      normal: {mean: [0, 0, 0], sigma: [1, 1]}
    - key: physics.substeps
      choice: [1, 2]
    - key: faults.1.start
      uniform: {low: 1, high: 2}
    - key: duration
      choice: [5, 6]
    - key: vehicle.mass
      normal: {mean: 1.5, sigma: 0.1}
    - key: firmware.gains.rate
      grid: [[30, 30, 10], [40, 40, -1]]
    - key: environment.wind.gusts
      choice: [[]]
    - key: sensors.gps.position_noise
      uniform: {low: [0, 0, 0], high: [1, 1, 1]}
    - key: faults.0.start
      uniform: {low: 3, high: 1}
    - key: vehicle.mass
      normal: {mean: 1.5, sigma: 0.01, min: 3.0, max: 3.1}
    - key: environment.wind.steady
      normal: {mean: [0, 0, 0], sigma: [1, 0.2, 1], max: [20, -1.3, 20]}
    - key: vehicle.arm_length
      normal: {mean: 0.2, sigma: 0.01, min: 0.25}
    - key: faults.0.start
      choice: [2, 5]
    - key: faults.0.start
      normal: {mean: 3, sigma: 0.5, min: 1}
    - key: faults.0.start
      uniform: {low: 1, high: 6}
    - key: faults.0.start
      uniform: {low: 1, high: 5}
    - key: faults.0.start
      normal: {mean: 5, sigma: 0}
"""


def test_a_grid_whose_combinations_do_not_divide_the_members_is_told():
    grids = [scenario.Dispersion("vehicle.mass", grid=[1.4, 1.5, 1.6]),
             scenario.Dispersion("firmware.gains.rate", grid=[[30, 30, 10], [40, 40, 12]]),
             scenario.Dispersion("environment.wind.steady", normal=scenario.Normal([0, 0, 0], [1, 1, 1]))]
    assert sweep.grid_note(scenario.Sweep(runs=12, dispersions=grids)) is None
    assert sweep.grid_note(scenario.Sweep(runs=100, dispersions=grids[2:])) is None
    note = sweep.grid_note(scenario.Sweep(runs=100, dispersions=grids))
    assert "6 combinations, which 100 members do not divide: the first 4 are flown 17 times, the others 16" in note


def test_sweep_schema_errors_name_the_line_and_the_key():
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.parse_text(SCHEMA_ERRORS, "errors.yaml")
    found = {(p.line, p.path): p.message for p in caught.value.problems}
    expected = {
        (10, "sweep.dispersions[0].key"): "vehicle has no key 'mas' (did you mean 'mass'?)",
        (13, "sweep.dispersions[1].normal.sigma"): "[1, 1] is not a list of 3 numbers, the shape of "
                                                    "environment.wind.steady",
        (14, "sweep.dispersions[2].key"): "shapes the compiled tick",
        (16, "sweep.dispersions[3].key"): "faults is a list of 1; give an index from 0 to 0",
        (18, "sweep.dispersions[4].key"): "shapes the compiled tick or the run",
        (21, "sweep.dispersions[5].normal"): "give `min` to truncate the draws",
        (23, "sweep.dispersions[6].grid[1][2]"): "firmware.gains.rate: must be at least 0",
        (24, "sweep.dispersions[7].key"): "is a list, not a number",
        (26, "sweep.dispersions[8].key"): "sensors.gps is not in the scenario",
        (29, "sweep.dispersions[9].uniform.low"): "low 3 is above high 1",
        # Beyond 6 sigma a truncated normal's draws pile up at its bounds: every member at 3.1.
        (31, "sweep.dispersions[10].normal.min"): "min 3.0 is 150 sigma above the mean 1.5",
        (33, "sweep.dispersions[11].normal.max"): "max [20, -1.3, 20] is 6.5 sigma below the mean [0, 0, 0]",
        # A fault's start drawn at or past the end would never start: refused at the draw's line, not
        # when the member that draws it is built. A uniform's draws stay below its high.
        (37, "sweep.dispersions[13].choice[1]"): "5 s is not before the end of the run (5 s)",
        (39, "sweep.dispersions[14].normal"): "give `max` to truncate the draws",
        (41, "sweep.dispersions[15].uniform.high"): "high 6 s is past the end of the run (5 s)",
        (45, "sweep.dispersions[17].normal.mean"): "mean 5 s is not before the end of the run (5 s)",
    }
    assert set(found) == set(expected), sorted(found)
    for where, words in expected.items():
        assert words in found[where], (where, found[where])


def test_a_sweep_that_cannot_fly_exits_2_with_the_member_and_why(base, tmp_path):
    heavy = scenario.with_changes(base, {"sweep.dispersions": [{"key": "vehicle.mass",
                                                                 "uniform": {"low": 1.5, "high": 40}}]})
    path = tmp_path / "heavy.yaml"
    path.write_text(heavy.source)
    completed = subprocess.run([sys.executable, "-m", "hil", "sweep", str(path), "--runs", "8",
                                "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr
    assert "error: member 0 (vehicle.mass=" in completed.stderr
    assert "cannot lift the weight" in completed.stderr and "Traceback" not in completed.stderr
    path.write_text(heavy.source.replace("key: vehicle.mass", "key: vehicle.mas"))
    completed = subprocess.run([sys.executable, "-m", "hil", "sweep", str(path)], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert f"{path}:" in completed.stderr and "sweep.dispersions[0].key: 'vehicle.mas'" in completed.stderr


def test_the_summary_ranks_the_draws_most_associated_with_failure(base):
    """Spearman's rank correlation of each drawn value with how far members went past the bound."""
    members = 200
    rng = np.random.default_rng(3)
    wind = rng.normal(size=(members, 3))
    mass = rng.uniform(1.35, 1.65, members)
    margin = 10.0 * (mass - 1.5) + 0.3 * wind[:, 1] + 0.05 * rng.normal(size=members)  # heavier fails more
    expectation = base.expect[1]
    outcomes = [[Outcome(expectation.name, expectation.kind(), bool(m <= 0), "", "")] for m in margin]
    result = sweep.SweepResult(base, base.sweep, np.arange(members), {"vehicle.mass": mass,
                                                                      "environment.wind.steady": wind},
                               [expectation], outcomes, [{"max": margin}], margin[:, None],
                               np.zeros((members, 1)), {})
    ranked = result.summary()["expectations"][0]["associated"]
    assert [entry["draw"] for entry in ranked[:2]] == ["vehicle.mass", "environment.wind.steady[1]"]
    assert ranked[0]["spearman"] > 0.85 and 0.1 < ranked[1]["spearman"] < 0.5
    assert all(abs(entry["spearman"]) < 0.2 for entry in ranked[2:])
    assert sweep._ranks(np.array([3.0, 1.0, 3.0, np.inf])).tolist() == [2.5, 1.0, 2.5, 4.0]


def interrupted_while_building(command: list[str], tmp_path) -> tuple[int, str]:
    """Start ``command``, a sweep whose first chunk of 200,000 members is minutes of building, with
    hil's log shown; Ctrl-C once its program is compiled (the build going on): its exit status and
    what it printed after. A process not ended 120 s after the signal fails the test."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, HIL_CACHE_DIR=str(tmp_path / "cache")))
    for line in process.stderr:  # ready: the program compiled while the chunk's build goes on
        if "the sweep's program ready on" in line:
            break
    process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, rest


def test_ctrl_c_while_members_are_built_stops_at_once(tmp_path):
    """Ctrl-C stops the sweep while a chunk is being built, in processes: exit 130, nothing left
    behind (the folder it made, processes)."""
    out = tmp_path / "out"
    code, rest = interrupted_while_building(
        hil_command("sweep", str(SCENARIOS / "hover_sweep.yaml"), "--runs", "200000", "--chunk", "200000",
                    "--build-processes", "2", "--out", str(out), "-v"), tmp_path)
    assert code == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not out.exists()


def test_keep_traces_that_cannot_fit_in_memory_are_refused_before_flying(tmp_path):
    completed = subprocess.run(hil_command("sweep", str(SCENARIOS / "hover_sweep.yaml"), "--runs", "10000000",
                                           "--keep-traces", "--out", str(tmp_path / "out")),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr
    assert "--keep-traces: 10,000,000 members x 20,001 ticks x 45 columns are 72,003.6 GB of rows" in completed.stderr
    assert "Traceback" not in completed.stderr and not (tmp_path / "out").exists()


INTERRUPTED_SCRIPT = """
import logging, sys
from hil import jaxconfig, scenario, sweep
jaxconfig.configure()
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
sweep.fly(scenario.load(sys.argv[1]), runs=200_000, chunk=200_000)
"""


def test_a_script_interrupted_while_a_chunk_is_built_ends_without_waiting_for_the_build(tmp_path):
    """hil.sweep.fly from a user's script: Ctrl-C while its first chunk is built gives the script
    its KeyboardInterrupt, and the process ends; the build is given up."""
    code, rest = interrupted_while_building([sys.executable, "-c", INTERRUPTED_SCRIPT,
                                             str(SCENARIOS / "hover_sweep.yaml")], tmp_path)
    assert "KeyboardInterrupt" in rest and code != 0, rest
