"""Faults do what the scenario says, only while active, with draws from the scenario key."""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml
from support import SCENARIOS

from hil import flightlog, runner, scenario, wire
from hil.bridges.impairment import ImpairedLink
from hil.bridges.link import Undelivered
from hil.bridges.udp import UdpLink
from hil.faults import FAULT_STREAM_BASE, LinkFaultPlan
from hil.trace import Trace

RATE = 1000
SENSOR_FAULTS = [
    {"start": 0.2, "duration": 0.6, "sensor": {"name": "imu", "mode": "noise", "std": [0.01] * 6}},
    {"start": 0.3, "duration": 0.3, "sensor": {"name": "baro", "mode": "bias", "offset": [25.0, -1.5]}},
    {"start": 0.3, "duration": 0.3, "sensor": {"name": "mag", "mode": "stuck"}},
    {"start": 0.2, "duration": 0.7, "gps_loss": True},
    {"start": 1.5, "motor": {"index": 2, "efficiency": 0.25}},
]
# The vehicle sits on its feet at constant throttle: nothing reacts to the faults, so a run with
# them and one without differ by the faults alone.
ON_THE_GROUND = {"firmware": {"name": "open_loop", "runs": "in-process", "throttle": [0.5] * 4}, "duration": 2.0,
                 "expect": []}


@pytest.fixture(scope="module")
def faulty_and_clean(tmp_path_factory):
    base = scenario.load(SCENARIOS / "hover.yaml")
    runs = []
    for faults in (SENSOR_FAULTS, []):
        path = tmp_path_factory.mktemp("faults") / "s.yaml"
        data = yaml.safe_load(base.source)
        data.update(ON_THE_GROUND, faults=faults)
        path.write_text(yaml.safe_dump(data))
        runs.append(runner.run(scenario.load(path)).trace)
    return runs


def ticks(start, end):
    return slice(round(start * RATE), round(end * RATE))


def test_outside_every_sensor_window_the_readings_are_untouched(faulty_and_clean):
    faulty, clean = faulty_and_clean
    before = ticks(0, 0.2)
    assert faulty.rows[before].tobytes() == clean.rows[before].tobytes()
    after = ticks(1.0, 1.5)  # every sensor fault over, the motor one not begun
    assert np.array_equal(faulty.column("reading.imu")[after], clean.column("reading.imu")[after])
    assert np.array_equal(faulty.column("fresh")[after], clean.column("fresh")[after])


def test_noise_fault_adds_the_given_deviation_drawn_from_its_own_stream(faulty_and_clean):
    faulty, clean = faulty_and_clean
    extra = faulty.column("reading.imu")[ticks(0.2, 0.8)] - clean.column("reading.imu")[ticks(0.2, 0.8)]
    assert 0.009 < extra.std() < 0.011 and abs(extra.mean()) < 0.002
    tick = 500
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), tick), FAULT_STREAM_BASE + 0)
    expected = 0.01 * np.asarray(jax.random.normal(key, (12,), dtype=np.float32)).astype(float)[:6]
    np.testing.assert_allclose(extra[tick - 200], expected, rtol=0, atol=1e-12)


def test_bias_fault_offsets_each_field_by_the_step(faulty_and_clean):
    faulty, clean = faulty_and_clean
    fresh = faulty.column("fresh")[:, 1].astype(bool)  # sensors in order imu, baro, mag, gps
    window = np.zeros(len(fresh), bool)
    window[ticks(0.3, 0.6)] = True
    difference = faulty.column("reading.baro") - clean.column("reading.baro")
    np.testing.assert_allclose(difference[fresh & window], [[25.0, -1.5]] * int((fresh & window).sum()), atol=1e-9)
    assert np.all(difference[fresh & ~window & (np.arange(len(fresh)) < 1500)] == 0.0)


def test_stuck_sensor_keeps_delivering_its_last_good_value(faulty_and_clean):
    faulty, _ = faulty_and_clean
    mag, fresh = faulty.column("reading.mag"), faulty.column("fresh")[:, 2]
    stuck = mag[ticks(0.3, 0.6)]
    assert np.all(stuck == mag[299]) and fresh[ticks(0.3, 0.6)].sum() == 30  # still 100 Hz, same value
    assert np.any(mag[600] != mag[299])


def test_gps_loss_delivers_no_fix_and_fixes_resume_after(faulty_and_clean):
    faulty, clean = faulty_and_clean
    fresh, clean_fresh = faulty.column("fresh")[:, 3], clean.column("fresh")[:, 3]
    assert fresh[ticks(0.2, 0.9)].sum() == 0 and clean_fresh[ticks(0.2, 0.9)].sum() == 7
    assert np.array_equal(fresh[ticks(0.9, 1.5)], clean_fresh[ticks(0.9, 1.5)])


def test_a_weak_motor_spins_to_the_square_root_of_its_efficiency(faulty_and_clean):
    faulty, clean = faulty_and_clean
    speed = faulty.column("rotor_speed")[-1]
    np.testing.assert_allclose(speed[2], np.sqrt(0.25) * 0.5 * 1100.0, rtol=1e-6)
    np.testing.assert_array_equal(speed[[0, 1, 3]], clean.column("rotor_speed")[-1][[0, 1, 3]])
    assert np.array_equal(faulty.column("command")[-1], [0.5] * 4)  # the log keeps what the firmware asked for


@pytest.mark.parametrize("fault, where, words", [
    ({"start": 1}, "faults[0]", "needs exactly one of motor, sensor, gps_loss, link"),
    ({"start": 1, "gps_loss": True, "motor": {"index": 0, "efficiency": 0.5}}, "faults[0]", "it has motor, gps_loss"),
    ({"start": 1, "sensor": {"name": "baro", "mode": "bias", "offset": [1.0]}}, "faults[0].sensor.offset",
     "baro readings have 2 fields"),
    ({"start": 1, "sensor": {"name": "imu", "mode": "noise"}}, "faults[0].sensor.std", "needs `std`"),
    ({"start": 1, "motor": {"index": 4, "efficiency": 0.5}}, "faults[0].motor.index", "at most 3"),
    ({"start": 99, "gps_loss": True}, "faults[0].start", "not before the end of the run"),
    ({"start": 1, "sensor": {"name": "baro", "mode": "stuk"}}, "faults[0].sensor.mode", "did you mean 'stuck'"),
])
def test_bad_faults_are_refused_naming_the_key(scenario_file, fault, where, words):
    path = scenario_file("hover.yaml", faults=[fault])
    completed = subprocess.run([sys.executable, "-m", "hil", "validate", str(path)], capture_output=True, text=True)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert f": {where}: " in completed.stderr and words in completed.stderr, completed.stderr


def test_link_faults_need_a_link(scenario_file):
    path = scenario_file("hover.yaml", firmware__runs="in-process", faults=[{"start": 0, "link": {"loss": 0.1}}])
    completed = subprocess.run([sys.executable, "-m", "hil", "validate", str(path)], capture_output=True, text=True)
    assert completed.returncode == 2 and "faults[0].link: firmware.runs is in-process" in completed.stderr


def test_impaired_udp_link_loses_duplicates_and_corrupts_frames_as_planned(scenario_file):
    """hil's side of a real UDP pair: what arrives at the peer is what the plan says, bit for bit."""
    faults = [{"start": 0, "link": {"loss": 0.1, "duplicate": 0.1, "corrupt": 0.1}}]
    plan = LinkFaultPlan(scenario.load(scenario_file("hover.yaml", faults=faults)))
    peer = UdpLink(None)
    link = ImpairedLink(UdpLink(peer.socket.getsockname()), plan)
    received = []
    for tick in range(2000):
        link.send(wire.Sensors(tick + 1, tick, 1, (float(tick),) * 6))
        decision = plan.decision(tick, outbound=True)
        expected = 0 if decision.lost else 2 if decision.duplicated else 1
        for _ in range(expected):
            data, _ = peer.socket.recvfrom(1024)
            received.append((tick, data))
        if decision.lost or decision.corrupted:  # hil knows this tick's reply cannot come
            notice = link.receive(0.0)
            assert isinstance(notice, Undelivered) and notice.tick == tick
    lost = sum(plan.decision(t, True).lost for t in range(2000))
    corrupted = [t for t, data in received if plan.decision(t, True).corrupted]
    assert 150 < lost < 250 and len(received) == 2000 - lost + sum(
        plan.decision(t, True).duplicated and not plan.decision(t, True).lost for t in range(2000))
    for tick, data in received:
        if tick in corrupted:
            with pytest.raises(wire.FrameError):
                wire.decode(data[:-1])
        else:
            assert wire.decode(data[:-1]).tick == tick
    assert link.counters.injected["outbound lost"] == lost
    link.close()
    peer.close()


@pytest.mark.slow
def test_lossy_lockstep_runs_write_identical_logs_and_really_were_lossy(scenario_file, tmp_path):
    lossy = scenario_file("lossy_link.yaml", duration=6.0, expect=[])
    paths = [tmp_path / f"run{i}.hillog" for i in range(2)]
    for path in paths:
        completed = subprocess.run([sys.executable, "-m", "hil", "run", str(lossy), "--out", str(path), "-q"],
                                   capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stdout + completed.stderr
    first, second = (flightlog.read(p) for p in paths)
    assert [t[::2] for t in first.ticks] == [t[::2] for t in second.ticks]
    assert all(np.array_equal(a, b) for a, b in zip(first.rows, second.rows))

    def exchanged(log, direction):
        # Each direction's messages in order, decoded. How the two directions interleave in the log
        # (a duplicated reply landing before or after the next SENSORS) follows the wall clock, as
        # a HEARTBEAT does (sent after 200 ms of silence, docs/protocol.md) and the frame counter it
        # advances; the run itself does not.
        messages = [_decoded(p[3]) for p in log.packets if p[0] == direction]
        return [dataclasses.replace(message, seq=0) for message in messages
                if message is not None and not isinstance(message, (wire.Hello, wire.Heartbeat))]
    for direction in (0, 1):  # sent, received
        assert exchanged(first, direction) == exchanged(second, direction), direction
    link = dict(map(tuple, first.footer["link"]))
    assert "outbound lost" in link["injected faults"] and "inbound corrupted" in link["injected faults"]
    assert "crc" in link["bad frames"]  # corrupted replies were really decoded and rejected
    # The firmware met corrupted frames on the wire and kept flying: hil sent more than it got back.
    sent = [p for p in first.packets if p[0] == 0 and _decoded(p[3]) is None]
    assert len(sent) > 200


def _decoded(frame: bytes):
    try:
        return wire.decode(frame[:-1])
    except wire.FrameError:
        return None


def test_link_delay_applies_each_reply_a_fixed_number_of_ticks_late(scenario_file, tmp_path):
    path = scenario_file("hover.yaml", duration=5.0, expect=[],
                         faults=[{"start": 2.5, "duration": 1.5, "link": {"delay": 0.02}}])
    log_path = tmp_path / "delayed.hillog"
    completed = subprocess.run([sys.executable, "-m", "hil", "run", str(path), "--out", str(log_path), "-q"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    log = flightlog.read(log_path)
    replies = {m.tick: m.values for m in map(_decoded, (p[3] for p in log.packets if p[0] == 1))
               if isinstance(m, wire.Actuators)}
    command = Trace(np.array(log.rows), log.header["layout"], RATE, len(log.rows)).column("command")
    for tick in (2400, 2600, 3500, 4500):  # before, inside (replies from 20 ticks back), inside, after
        answered = tick - 20 if 2520 <= tick < 4000 else tick
        np.testing.assert_array_equal(command[tick], replies[answered])
        assert np.any(command[tick] != replies[tick - 1])  # climbing: every reply differs from the one before
