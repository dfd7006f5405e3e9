"""hil sweep --executor ray: chunks flown as tasks of a real Ray cluster on loopback give the local
executor's table, bit for bit (the workers fly each chunk over as many devices as the driver,
with the same jax on the same processor: docs/sweep.md)."""

import logging
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from hil import scenario, sweep
from support import RAY_CLUSTER, ROOT, SPLITTING_EXPECT, dispersed_hover, hil_command

NOT_INSTALLED = "Ray is an optional extra: pip install 'hil[ray]'"
pytestmark = RAY_CLUSTER
RUNS, CHUNK = 48, 16  # three chunks, so that the tasks can finish out of order


@pytest.fixture(scope="module")
def cluster():
    """A Ray of this machine with two CPUs, on loopback, for the module: hil.sweep_ray uses it."""
    ray = pytest.importorskip("ray", reason=NOT_INSTALLED)
    from hil import sweep_ray

    assert not ray.is_initialized()
    sweep_ray.start_local(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def base():
    return dispersed_hover(SPLITTING_EXPECT, runs=RUNS, seed=11)


@pytest.fixture(scope="module")
def local(base):
    return sweep.fly(base, runs=RUNS, chunk=CHUNK)


@pytest.mark.slow
def test_the_ray_cluster_listens_on_loopback_only(cluster):
    assert [node["NodeManagerAddress"] for node in cluster.nodes()] == ["127.0.0.1"]


@pytest.mark.slow
def test_the_ray_executor_gives_the_same_table_as_the_local_one(cluster, base, local, tmp_path, caplog):
    seen = []
    with caplog.at_level(logging.INFO, logger="hil"):
        remote = sweep.fly(base, runs=RUNS, chunk=CHUNK, executor="ray", progress=lambda done, *_: seen.append(done))
    landed = sorted(r.getMessage().split(" landed")[0] for r in caplog.records if "landed from a Ray worker" in
                    r.getMessage())  # what hil sweep -v shows of each chunk
    assert landed == sorted(f"members {s}-{min(s + CHUNK, RUNS) - 1}" for s in range(0, RUNS, CHUNK)), landed
    member_ticks = base.ticks + 1
    # Each device's segments told from the workers (a chunk of 16 on two devices: 8 members a report).
    assert seen == sorted(seen) and seen[-1] == RUNS * member_ticks, seen
    within_chunks = [done for done in seen if done % (CHUNK * member_ticks)]
    assert len(set(within_chunks)) >= RUNS // CHUNK * (sweep.SEGMENTS - 1), seen
    assert np.array_equal(remote.seeds, local.seeds)
    assert all(np.array_equal(remote.draws[key], values) for key, values in local.draws.items())
    assert np.array_equal(remote.passed, local.passed)
    assert remote.outcomes == local.outcomes
    for theirs, ours in zip(remote.measured, local.measured):
        assert theirs.keys() == ours.keys()
        assert all(np.array_equal(theirs[label], ours[label]) for label in ours)  # every bit
    assert np.array_equal(remote.final_rows, local.final_rows)
    remote.write_csv(tmp_path / "ray.csv")
    local.write_csv(tmp_path / "local.csv")
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    failed = RUNS - local.passed.sum(axis=0)  # the verdicts tell the members apart: the comparison could fail
    assert all(0 < count < RUNS for count in failed[1:]), failed


def dying_tally():
    """A progress tally whose process dies at its fourth report, as a lost node or the OOM killer would end it."""
    from hil import sweep_ray

    class DyingTally(sweep_ray.Tally):
        def __init__(self):
            super().__init__()
            self.received = 0

        def report(self, chunk, member_ticks):
            self.received += 1
            if self.received > 3:
                os._exit(1)
            super().report(chunk, member_ticks)

    return DyingTally


@pytest.mark.slow
def test_a_lost_progress_tally_loses_no_chunk_and_no_progress(cluster, base, local, monkeypatch):
    from hil import sweep_ray

    monkeypatch.setattr(sweep_ray, "Tally", dying_tally())
    seen = []
    remote = sweep.fly(base, runs=RUNS, chunk=CHUNK, executor="ray", progress=lambda done, *_: seen.append(done))
    member_ticks = base.ticks + 1
    assert len([done for done in seen if done % (CHUNK * member_ticks)]) <= 3  # the tally did die
    assert seen == sorted(seen) and seen[-1] == RUNS * member_ticks  # the chunks' landings told the rest
    assert remote.outcomes == local.outcomes and np.array_equal(remote.final_rows, local.final_rows)


@pytest.mark.slow
def test_a_chunk_that_fails_on_a_worker_names_its_members_and_the_reason(cluster, base):
    heavy = scenario.with_changes(base, {"sweep.dispersions": [{"key": "vehicle.mass",
                                                                "uniform": {"low": 40, "high": 50}}]})
    with pytest.raises(sweep.SweepError) as caught:
        sweep.fly(heavy, runs=32, chunk=CHUNK, executor="ray")
    message = str(caught.value)
    found = re.match(r"members (\d+)-(\d+) failed on a Ray worker: member (\d+) \(vehicle\.mass=[\d.]+, "
                     r"seed=[\de.+]+\) is not a valid scenario: vehicle\.max_rotor_speed: .* cannot lift", message)
    assert found, message
    first, last, member = map(int, found.groups())
    assert (first, last) in ((0, 15), (16, 31)) and first <= member <= last
    assert "Traceback" not in message and "RayTaskError" not in message


@pytest.mark.slow
def test_hil_sweep_executor_ray_on_the_command_line(base, local, tmp_path):
    """The command starts its own Ray on loopback (no RAY_ADDRESS) and writes the local table."""
    pytest.importorskip("ray", reason=NOT_INSTALLED)
    path = tmp_path / "sweep.yaml"
    path.write_text(base.source)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    arguments = ("sweep", path, "--runs", RUNS, "--chunk", CHUNK, "--executor", "ray", "--out", tmp_path / "out", "-q")
    done = subprocess.run(hil_command(*map(str, arguments)),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == (0 if local.ok else 1), done.stderr
    assert "Traceback" not in done.stderr and "os.fork()" not in done.stderr, done.stderr
    local.write_csv(tmp_path / "local.csv")
    assert (tmp_path / "out" / sweep.TABLE).read_text() == (tmp_path / "local.csv").read_text()


def test_a_ray_address_where_nothing_listens_is_named(base, tmp_path):
    pytest.importorskip("ray", reason=NOT_INSTALLED)
    path = tmp_path / "sweep.yaml"
    path.write_text(base.source)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    done = subprocess.run(hil_command("sweep", str(path), "--runs", "4", "--executor", "ray", "--out",
                                      str(tmp_path / "out")),
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": address},
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"error: --executor ray: nothing answers at RAY_ADDRESS={address} (Connection refused)" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_ray_the_executor_says_how_to_install_it(base, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(base.source)
    program = ("import sys; sys.modules['ray'] = None; from hil.cli import main; "
               "sys.argv = ['hil'] + sys.argv[1:]; main()")
    done = subprocess.run([sys.executable, "-c", program, "sweep", str(path), "--runs", "4", "--executor", "ray",
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "error: --executor ray needs Ray, which is not installed: pip install 'hil[ray]'" in done.stderr
    assert "Traceback" not in done.stderr
