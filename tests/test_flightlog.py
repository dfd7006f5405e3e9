"""The flight log survives any crash: every complete record reads back, damage is located exactly."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import SCENARIOS

from hil import flightlog


@pytest.fixture(scope="module")
def whole_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "hover.hillog"
    completed = subprocess.run([sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--duration", "10",
                                "--firmware", "c", "--out", str(path), "-q"], capture_output=True, text=True, timeout=300)
    assert completed.returncode in (0, 1), completed.stderr
    return path


def test_a_finished_run_leaves_a_complete_log(whole_log):
    log = flightlog.read(whole_log)
    assert log.complete and log.damage is None
    assert [t[0] for t in log.ticks] == list(range(10001))
    assert log.header["scenario"] == "hover" and "hover" in log.header["scenario_text"]
    assert set(log.header["versions"]) == {"jax", "jaxlib", "numpy", "python", "platform", "device"}
    directions = {p[0] for p in log.packets}
    assert directions == {0, 1}  # hil's SENSORS out, the firmware's ACTUATORS in, as raw frames
    assert len(log.snapshots) == 11
    assert log.footer["ticks"] == 10001


def test_bytes_appended_to_a_log_are_located_and_everything_before_reads(whole_log, tmp_path):
    data = whole_log.read_bytes()
    damaged = tmp_path / "appended.hillog"
    damaged.write_bytes(data + np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    log = flightlog.read(damaged)
    assert log.damage.startswith(f"byte {len(data)}:")
    assert log.footer is not None and len(log.ticks) == 10001


def test_a_flipped_byte_names_the_damaged_record_and_keeps_the_ones_before(whole_log, tmp_path):
    data = bytearray(whole_log.read_bytes())
    whole = flightlog.read(whole_log)
    offset = len(data) // 2
    data[offset] ^= 0x40
    damaged = tmp_path / "flipped.hillog"
    damaged.write_bytes(bytes(data))
    log = flightlog.read(damaged)
    where = int(log.damage.split()[1].rstrip(":"))
    assert where <= offset < where + 70_000 and ("CRC mismatch" in log.damage or "length" in log.damage)
    assert 0 < log.records < whole.records
    assert log.ticks == whole.ticks[: len(log.ticks)]


def test_a_run_killed_at_random_instants_leaves_logs_that_read_to_their_last_record(tmp_path):
    rng = np.random.default_rng(20)
    outcomes = []
    for attempt, delay in enumerate(rng.uniform(1.0, 4.0, 20)):
        path = tmp_path / f"killed-{attempt}.hillog"
        process = subprocess.Popen([sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--duration", "60",
                                    "--firmware", "in-process", "--out", str(path), "-q"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if not path.exists():
            outcomes.append("not started")
            continue
        log = flightlog.read(path)
        assert log.footer is None
        assert log.damage is None or log.damage.split(": ", 1)[1].startswith("cut inside"), log.damage
        ticks = [t[0] for t in log.ticks]
        assert ticks == list(range(len(ticks)))  # every tick up to the cut, none missing
        outcomes.append(len(ticks))
    assert sum(isinstance(n, int) and n > 0 for n in outcomes) >= 10, outcomes
