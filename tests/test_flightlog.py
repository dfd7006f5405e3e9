"""The flight log survives any crash: every complete record reads back, damage is located exactly."""

import concurrent.futures
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import SCENARIOS

from hil import flightlog, replay, wire
from hil.trace import Trace


@pytest.fixture(scope="module")
def whole_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "hover.hillog"
    completed = subprocess.run([sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--duration", "10",
                                "--firmware", "c", "--out", str(path), "-q"], capture_output=True, text=True, timeout=300)
    assert completed.returncode in (0, 1), completed.stderr
    return path


def test_runs_started_in_the_same_second_each_claim_their_own_log_and_sweep_folder(tmp_path):
    stem = "hover-20261203T101500Z"  # the default name of two runs of hover.yaml started at that second
    # forkserver: JAX's threads are running in this process, and a fork of it warns of deadlocks
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("forkserver")) as pool:
        logs = list(pool.map(flightlog.claim, [tmp_path / "runs"] * 16, [stem] * 16))
    assert sorted(log.name for log in logs) == sorted([f"{stem}.hillog"] + [f"{stem}-{n}.hillog" for n in range(2, 17)])
    assert all(log.is_file() for log in logs)
    folders = [flightlog.claim(tmp_path / "sweeps", "hover_sweep-20261203-101500", "", folder=True) for _ in range(2)]
    assert [f.name for f in folders] == ["hover_sweep-20261203-101500", "hover_sweep-20261203-101500-2"]
    assert all(f.is_dir() for f in folders)


def test_a_finished_run_leaves_a_complete_log(whole_log):
    log = flightlog.read(whole_log)
    assert log.complete and log.damage == []
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
    assert [(d.offset, d.length, d.ticks_lost) for d in log.damage] == [(len(data), 300, None)]
    assert log.footer is not None and len(log.ticks) == 10001


def test_a_flipped_byte_names_the_damaged_record_and_costs_only_that_record(whole_log, tmp_path):
    data = bytearray(whole_log.read_bytes())
    whole = flightlog.read(whole_log)
    offset = len(data) // 2
    data[offset] ^= 0x40
    damaged = tmp_path / "flipped.hillog"
    damaged.write_bytes(bytes(data))
    log = flightlog.read(damaged)
    (damage,) = log.damage
    assert damage.offset <= offset < damage.offset + damage.length <= damage.offset + 70_000
    assert "CRC mismatch" in damage.reason or "no record hil writes starts here" in damage.reason
    assert log.records == whole.records - 1 and log.footer == whole.footer
    lost = damage.ticks_lost and range(damage.ticks_lost[0], damage.ticks_lost[1] + 1)
    assert log.ticks == [t for t in whole.ticks if not lost or t[0] not in lost]


@pytest.mark.slow
def test_a_run_killed_at_random_instants_leaves_logs_that_read_to_their_last_record(tmp_path):
    rng = np.random.default_rng(20)
    lengths = []

    def fly_and_kill(attempt, delay):
        path = tmp_path / f"killed-{attempt}.hillog"
        process = subprocess.Popen([sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--duration", "120",
                                    "--firmware", "in-process", "--out", str(path), "-q"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waited = time.monotonic()
        while not path.exists() and time.monotonic() - waited < 120:  # the log opens when the tick is compiled
            time.sleep(0.01)
        time.sleep(delay)  # then a random instant of the 120 s flight, which takes about 3 s to fly
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return path

    # Two runs at a time: most of each run's life is its start-up, which two cores share well.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(fly_and_kill, range(20), rng.uniform(0.0, 1.5, 20)))
    for path in paths:
        log = flightlog.read(path)
        assert log.footer is None and log.header is not None
        assert all(d.reason.startswith("cut inside") for d in log.damage), log.damage
        ticks = [t[0] for t in log.ticks]
        assert ticks == list(range(len(ticks)))  # every tick up to the cut, none missing
        if ticks and sum(n > 0 for n in lengths) < 3:
            assert replay.replay(log).identical  # and the physics replays bit for bit that far
        lengths.append(len(ticks))
    assert sum(n > 0 for n in lengths) >= 15, lengths


def test_replay_against_a_changed_model_parameter_names_the_first_differing_tick_and_field(whole_log):
    completed = subprocess.run([sys.executable, "-m", "hil", "replay", str(whole_log), "--set",
                                "vehicle.drag_linear=[0.3, 0.25, 0.4]"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    first = completed.stdout.splitlines()[0]
    tick = int(first.split("tick ")[1].split()[0])
    assert first.startswith("DIFFERENT from tick") and tick > 1000  # drag only matters once it has taken off
    assert "velocity[0]" in completed.stdout and "→" in completed.stdout


@pytest.mark.slow
def test_two_lockstep_runs_write_the_same_log_apart_from_wall_clock_fields(tmp_path):
    paths = [tmp_path / f"run{i}.hillog" for i in range(2)]
    for path in paths:
        completed = subprocess.run([sys.executable, "-m", "hil", "run", str(SCENARIOS / "hover.yaml"), "--duration", "10",
                                    "--firmware", "c", "--out", str(path), "-q"], capture_output=True, timeout=300)
        assert completed.returncode in (0, 1)
    first, second = (flightlog.read(p) for p in paths)
    masked = lambda header: {k: v for k, v in header.items() if k != "started_utc"}
    assert masked(first.header) == masked(second.header)
    assert [t[::2] for t in first.ticks] == [t[::2] for t in second.ticks]  # tick and digest; [1] is wall time
    assert all(np.array_equal(a, b) for a, b in zip(first.rows, second.rows))
    # HELLO is resent until answered: how many it took is a wall-clock matter, like the timestamps.
    def exchanged(log):
        return [(p[0], p[1], p[3]) for p in log.packets if not isinstance(wire.decode(p[3][:-1]), wire.Hello)]
    assert exchanged(first) == exchanged(second) and len(exchanged(first)) >= 2 * 10001
    assert [(t, s.tobytes()) for t, s in first.snapshots] == [(t, s.tobytes()) for t, s in second.snapshots]
    assert first.footer["outcomes"] == second.footer["outcomes"]


def test_csv_export_has_a_row_per_tick_and_every_column(whole_log, tmp_path):
    import csv
    completed = subprocess.run([sys.executable, "-m", "hil", "export", str(whole_log), "--format", "csv", "-o",
                                str(tmp_path / "run.csv")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    with open(tmp_path / "run.csv") as handle:
        rows = list(csv.DictReader(handle))
    log = flightlog.read(whole_log)
    assert len(rows) == len(log.rows) == 10001
    assert float(rows[500]["position.2"]) == log.rows[500][2]  # exact: repr round-trips a float64
    assert {"reading.imu.gyro_x", "reading.gps.north", "command.3", "time_s"} <= set(rows[0])


def test_mcap_export_reads_back_with_a_channel_per_stream(whole_log, tmp_path):
    import json
    from collections import Counter

    from mcap.reader import make_reader
    completed = subprocess.run([sys.executable, "-m", "hil", "export", str(whole_log), "--format", "mcap", "-o",
                                str(tmp_path / "run.mcap")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    counts, schemas = Counter(), {}
    with open(tmp_path / "run.mcap", "rb") as handle:
        for schema, channel, message in make_reader(handle).iter_messages():
            counts[channel.topic] += 1
            schemas[channel.topic] = (schema.encoding, channel.message_encoding)
            if channel.topic == "/sensors/gps" and counts[channel.topic] == 1:
                assert set(json.loads(message.data)) >= {"tick", "time", "north", "velocity_down"}
    ticks = 10001
    # At 1 kHz ticks: IMU every tick, baro at 50 Hz, mag at 100 Hz, GPS at 10 Hz delivered 50 ms late.
    assert counts == {"/state": ticks, "/actuators": ticks, "/sensors/imu": ticks, "/sensors/baro": 501,
                      "/sensors/mag": 1001, "/sensors/gps": 100}
    assert set(schemas.values()) == {("jsonschema", "json")}


def test_plot_writes_a_real_png(whole_log, tmp_path):
    import matplotlib.image
    completed = subprocess.run([sys.executable, "-m", "hil", "plot", str(whole_log), "-o", str(tmp_path / "run.png")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    data = (tmp_path / "run.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
    pixels = matplotlib.image.imread(tmp_path / "run.png")
    assert pixels.shape[0] > 800 and pixels.shape[1] > 1000
    assert pixels[..., :3].std() > 0.05  # lines and text, not a blank canvas


def test_refly_against_an_equivalent_firmware_stays_within_tolerance(whole_log):
    completed = subprocess.run([sys.executable, "-m", "hil", "replay", str(whole_log), "--firmware", "in-process"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "re-flew 10001 ticks of hover against quad_pid (in-process); logged run: c" in completed.stdout
    # The C and JAX controllers agree to about 1e-12: the flights part, but by nanometres.
    assert "stays within 0.1 m" in completed.stdout or "bit-identical" in completed.stdout


def test_refly_against_a_changed_firmware_names_where_it_strays(whole_log):
    import shlex

    from hil import firmware_process, replay as replay_module
    from hil.firmware_stubs import command_line, quad_pid

    logged = replay_module.scenario_of(flightlog.read(whole_log))
    given = quad_pid.wire_parameters(quad_pid.params_from_scenario(logged))
    assert ("gain_position", (1.0, 1.0, 1.2)) in given
    changed = [(name, (3.0, 3.0, 1.2) if name == "gain_position" else values) for name, values in given]
    # configured on its command line, the firmware asks for nothing and flies the changed gains
    argv = [*firmware_process.command(logged, "c", "{udp}"), *command_line(changed)]
    completed = subprocess.run([sys.executable, "-m", "hil", "replay", str(whole_log), "--firmware-cmd",
                                shlex.join(argv), "--tolerance", "0.05"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    line = next(l for l in completed.stdout.splitlines() if "strays beyond 0.05 m" in l)
    assert int(line.split("strays beyond 0.05 m at tick ")[1].split()[0]) > 2000  # after arming and spin-up
    assert "position (m)" in completed.stdout and "motor command (throttle)" in completed.stdout


def test_tick_records_built_as_one_array_are_the_records_the_format_describes(tmp_path):
    layout = {"position": (0, 3), "command": (3, 4), "reading.imu": (7, 6)}
    rows = np.random.default_rng(3).normal(size=(70, 13))
    header = {"format": 1, "hil": "0", "scenario": "rows", "scenario_text": "", "seed": 0, "duration": 0.07,
              "rate_hz": 1000.0, "runtime": "c", "layout": {name: list(span) for name, span in layout.items()},
              "versions": {}, "started_utc": ""}
    recorder = flightlog.Recorder(tmp_path / "a.hillog", header, Trace(rows, layout, 1000.0, len(rows)))
    for tick in range(len(rows)):
        recorder.tick(tick, (np.zeros(2),))
    recorder.close({"passed": True})
    log = flightlog.read(tmp_path / "a.hillog")
    assert log.complete and len(log.ticks) == 70
    for tick, row in enumerate(rows):
        # One by one, as the format describes them: prefix (tick, wall, digest) and the row.
        digest = hashlib.blake2b(row[:3].tobytes() + row[7:].tobytes(), digest_size=8).digest()
        assert log.ticks[tick][0] == tick and log.ticks[tick][2] == digest
        assert np.array_equal(log.rows[tick], row)
