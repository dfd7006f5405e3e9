"""Firmware processes that hil starts: dying, going silent, stopping, flooding, outliving hil, and
the signals that end a run. Real `hil run` subprocesses, real firmware processes and real sockets."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT, SCENARIOS, SITL_PORTS, betaflight_missing, hil_command, scenario_problems

from hil import flightlog, runner, scenario, wire
from hil.firmware_process import FirmwareProcess

FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_firmware.py'} --udp {{udp}}"
GONE_WITHIN = 60.0  # s: generous, for a loaded machine
SITL_MISSING = betaflight_missing()


def short(seconds, **link):
    base = dataclasses.replace(scenario.load(SCENARIOS / "hover.yaml"), duration=seconds, expect=[])
    return dataclasses.replace(base, link=dataclasses.replace(base.link, **link))


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(group: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN
    while group_alive(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_pid(path, bound=300.0) -> int:
    """The process id a firmware command wrote to ``path`` once it started (after hil compiled)."""
    deadline = time.monotonic() + bound
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"the firmware never started ({path})"
        time.sleep(0.05)
    return int(path.read_text())


# A firmware in a few lines, for what fake_firmware.py does not do: it sleeps (idle, not
# computing) for LATE s before replying to tick TICK (every tick with "all"), sends an info
# STATUS with each reply up to tick INFO_UNTIL and a warning at tick WARN_AT (-1: none), and
# prints the code of the GOODBYE that ends it.
LATE_FIRMWARE = """
import socket, sys, time
from hil import wire

address, late, late_tick, info_until, warn_at = sys.argv[1], float(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:6])
host, port = address.rsplit(":", 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((host, int(port)))
print("ready", flush=True)
seq = 0
while True:
    data, peer = sock.recvfrom(2048)
    message = wire.decode(data[:-1])
    if isinstance(message, wire.Goodbye):
        print(f"goodbye, code {message.code}", flush=True)
        sys.exit(0)
    if isinstance(message, wire.Hello):
        sock.sendto(wire.encode(wire.Hello(0, wire.PROTOCOL_VERSION, "firmware", "quadrotor", 4, 0, ())), peer)
    elif isinstance(message, wire.Sensors):
        if late_tick == "all" or message.tick == int(late_tick):
            time.sleep(late)
        for severity, wanted in ((1, message.tick <= info_until), (2, message.tick == warn_at)):
            if wanted:
                seq += 1
                sock.sendto(wire.encode(wire.Status(seq, message.tick, severity, f"note at tick {message.tick}")), peer)
        seq += 1
        sock.sendto(wire.encode(wire.Actuators(seq, message.tick, (0.0,) * 4)), peer)
"""


def late_firmware(tmp_path, late: float, tick="all", info_until: int = -1, warn_at: int = -1) -> str:
    """A --firmware-cmd for LATE_FIRMWARE."""
    script = tmp_path / "late_firmware.py"
    script.write_text(LATE_FIRMWARE)
    return f"{sys.executable} {script} {{udp}} {late} {tick} {info_until} {warn_at}"


def in_shell(tmp_path, firmware: str, after: str = "true") -> str:
    """A --firmware-cmd that starts ``firmware`` under `sh -c` (which forks it, and then runs
    ``after``), writing the shell's process id, the group's, to pid.txt first."""
    script = f"echo $$ > {tmp_path / 'pid.txt'}; {firmware}; {after}"
    return f"sh -c {shlex.quote(script)}"


# ---- a firmware that dies or goes silent --------------------------------------------------

def test_a_firmware_silent_under_hold_fails_the_run_after_the_silence_limit():
    result = runner.run(short(2.0, timeout=0.02, on_timeout="hold", silence=0.5),
                        firmware_command=FAKE + " --silent-after 100")
    assert result.failure is not None and "link.silence" in result.failure and "at tick" in result.failure
    assert not result.passed
    assert result.trace.ticks_done < 200  # it did not hold the last command to the end


def test_a_firmware_that_dies_behind_a_shell_that_lives_on_fails_the_run_under_hold(tmp_path):
    # The process hil started (the shell) is alive: only the silence tells that the firmware died.
    result = runner.run(short(2.0, timeout=0.02, on_timeout="hold", silence=0.5),
                        firmware_command=in_shell(tmp_path, FAKE + " --crash-after 100", after="sleep 600"))
    assert result.failure is not None and "link.silence" in result.failure
    assert "fake firmware: giving up at tick 100" in result.firmware_output
    assert wait_until_gone(int((tmp_path / "pid.txt").read_text()))


def test_a_silent_firmware_in_real_time_fails_the_run_after_the_silence_limit():
    result = runner.run(short(3.0, timeout=0.05, on_timeout="hold", silence=0.5),
                        firmware_command=FAKE + " --silent-after 200", realtime=True)
    assert result.failure is not None and "link.silence" in result.failure
    assert result.trace.ticks_done < 2000


def test_a_firmware_that_answers_every_tick_late_is_not_silent(tmp_path):
    # Every reply comes after the timeout (and later and later), none after a silence: hold applies
    # to each tick, and the run flies to its end, in lockstep as in real time.
    result = runner.run(short(0.05, timeout=0.05, on_timeout="hold", silence=0.5),
                        firmware_command=late_firmware(tmp_path, 0.075))
    assert result.failure is None, result.failure
    assert result.link_stats.policy_applied.get("hold", 0) > 0 and result.link_stats.late_replies > 0


def test_a_firmware_asleep_past_the_timeout_is_not_waited_for_as_busy(tmp_path):
    # It used CPU time before, but not since its reply became late: under abort the run ends
    # at that tick, within the timeout, not one timeout later.
    result = runner.run(short(0.1, timeout=0.2, on_timeout="abort"),
                        firmware_command=late_firmware(tmp_path, 0.3, tick=50))
    assert result.failure is not None and "no reply for tick 50" in result.failure
    assert "policy is to abort" in result.failure
    assert result.link_stats.policy_applied == {"abort": 1}


def test_a_silence_no_longer_than_the_timeout_is_refused():
    text = (SCENARIOS / "hover.yaml").read_text() + "link:\n  timeout: 0.5\n  silence: 0.5\n"
    problems = scenario_problems(text)
    assert len(problems) == 1 and problems[0].startswith("s.yaml:")
    assert "link.silence: 0.5 s is not longer than timeout (0.5 s)" in problems[0]


def test_a_hold_policy_run_says_it_is_not_reproducible_in_summary_footer_and_json(scenario_file, tmp_path):
    path = scenario_file("hover.yaml", duration=0.3, expect=[], link__timeout=0.02, link__on_timeout="hold")
    log, report = tmp_path / "hold.hillog", tmp_path / "hold.json"
    done = subprocess.run(hil_command("run", str(path), "--firmware-cmd", FAKE + " --silent-after 250",
                                      "--out", str(log), "--json", str(report)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT REPRODUCIBLE" in done.stderr and "timeout policy was applied (hold" in done.stderr
    assert "reproducible" in done.stdout and "no: the timeout policy" in done.stdout
    summary = json.loads(report.read_text())
    assert summary["reproducible"] is False and "hold" in summary["not_reproducible"]
    footer = flightlog.read(log).footer
    assert footer["reproducible"] is False and "hold" in footer["not_reproducible"]
    shown = subprocess.run(hil_command("log", str(log)), capture_output=True, text=True, timeout=300)
    assert "no: the timeout policy was applied" in shown.stdout


def test_a_clean_run_is_reproducible_in_json(tmp_path):
    result = runner.run(short(0.2), firmware_command=FAKE)
    assert result.failure is None and result.not_reproducible is None
    assert "reproducible" not in dict(result.link_stats.summary())


# ---- lockstep that stops being deterministic ---------------------------------------------

def test_a_slow_firmware_in_lockstep_is_waited_for_not_held():
    # The reply to tick 50 takes 0.6 s of computing, twelve times the timeout: hil waits, since the
    # firmware is working, and the run stays what the seed makes it.
    result = runner.run(short(0.2, timeout=0.05, on_timeout="hold"), firmware_command=FAKE + " --busy-at 50:0.6")
    assert result.failure is None
    assert result.link_stats.policy_applied == {} and result.link_stats.lost_replies == 0
    assert result.not_reproducible is None


def test_a_stopped_firmware_ends_a_lockstep_run_at_once():
    started = time.monotonic()
    result = runner.run(short(2.0, timeout=0.05, on_timeout="hold", silence=120.0),
                        firmware_command=FAKE + " --stop-at 100")
    assert result.failure is not None and "stopped (SIGSTOP" in result.failure and "tick 100" in result.failure
    assert result.link_stats.policy_applied == {}
    assert time.monotonic() - started < 120.0  # long before the silence limit


# ---- firmware that outlives hil ----------------------------------------------------------

def test_a_firmware_started_through_a_shell_is_gone_after_a_normal_run(tmp_path):
    # The shell forks the firmware and, after it said goodbye, runs on: the whole group must go.
    result = runner.run(short(0.2), firmware_command=in_shell(tmp_path, FAKE, after="sleep 600"))
    assert result.failure is None
    assert wait_until_gone(int((tmp_path / "pid.txt").read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_hil_run_stops_its_firmware_and_a_term_or_int_leaves_a_footer(scenario_file, tmp_path, sig):
    path = scenario_file("hover.yaml", duration=600.0, expect=[])
    log = tmp_path / "signalled.hillog"
    # The shell runs on after the firmware, as a wrapper script might: only stopping the whole
    # group ends it.
    hil = subprocess.Popen(hil_command("run", str(path), "-q", "--out", str(log), "--firmware-cmd",
                                       in_shell(tmp_path, FAKE, after="sleep 600")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        group = read_pid(tmp_path / "pid.txt")
        time.sleep(3.0)  # flying by now, or still saying HELLO on a loaded machine: either is a run to end
        assert hil.poll() is None
        hil.send_signal(sig)
        out, err = hil.communicate(timeout=120)
    finally:
        if hil.poll() is None:
            hil.kill()
            hil.wait()
    assert wait_until_gone(group), "the firmware's process group outlived hil"
    if sig == signal.SIGKILL:
        return
    assert hil.returncode == 128 + sig, out + err
    assert "Traceback" not in out + err and f"INTERRUPTED by {signal.Signals(sig).name}" in err
    shown = subprocess.run(hil_command("log", str(log)), capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stdout  # a whole log, footer included
    assert f"interrupted by {signal.Signals(sig).name}" in shown.stdout
    assert flightlog.read(log).footer["interrupted"] == signal.Signals(sig).name


@pytest.mark.slow
def test_a_signal_while_the_firmware_is_slow_to_stop_still_closes_the_log_with_a_footer(scenario_file, tmp_path):
    path = scenario_file("hover.yaml", duration=0.3, expect=[])
    log, stopping = tmp_path / "slow.hillog", tmp_path / "stopping"
    # The firmware leaves on GOODBYE; its shell then ignores SIGTERM and runs on, so that hil's stop
    # waits out its grace times; the shell marks that it is there.
    firmware = in_shell(tmp_path, "trap '' TERM; " + FAKE, after=f"touch {stopping}; sleep 600")
    hil = subprocess.Popen(hil_command("run", str(path), "-q", "--out", str(log), "--firmware-cmd", firmware),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not stopping.exists():
            assert hil.poll() is None and time.monotonic() < deadline, "the run never reached its end"
            time.sleep(0.02)
        hil.send_signal(signal.SIGTERM)
        out, err = hil.communicate(timeout=120)
    finally:
        if hil.poll() is None:
            hil.kill()
            hil.wait()
    assert wait_until_gone(read_pid(tmp_path / "pid.txt"))
    assert hil.returncode == 128 + signal.SIGTERM, out + err
    assert "Traceback" not in out + err and "INTERRUPTED by SIGTERM" in err
    shown = subprocess.run(hil_command("log", str(log)), capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stdout  # a whole log, footer included
    assert flightlog.read(log).footer["interrupted"] == "SIGTERM"


@pytest.mark.parametrize("runtime", ["in-process", "custom"])
def test_an_interrupted_run_writes_the_same_footer_as_any_run(tmp_path, runtime):
    log = tmp_path / "interrupted.hillog"
    whole = runner.run(short(0.1), runtime="in-process", log_path=tmp_path / "whole.hillog")
    assert whole.failure is None

    def interrupt(tick, last, elapsed):
        if tick >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(short(2.0), runtime="in-process" if runtime == "in-process" else None,
                   firmware_command=late_firmware(tmp_path, 0.0, tick=-1) if runtime == "custom" else None,
                   log_path=log, progress=interrupt, progress_interval=0.0)
    footer = flightlog.read(log).footer
    assert set(footer) == set(flightlog.read(tmp_path / "whole.hillog").footer)
    assert footer["interrupted"] == "SIGINT" and footer["failure"] == "interrupted by SIGINT"
    assert footer["passed"] is False and footer["ticks"] > 0
    if runtime == "custom":  # the firmware is told the run did not reach its end (docs/protocol.md §4)
        assert f"goodbye, code {wire.GOODBYE_ERROR}" in footer["firmware_output"]


@SITL_PORTS
@pytest.mark.skipif(SITL_MISSING is not None, reason=f"{SITL_MISSING}")
def test_betaflight_s_output_is_reported_once_when_its_boot_stalls(monkeypatch):
    from hil.bridges import betaflight

    # Betaflight's SITL starts for real; each boot is taken as stalled (a PID loop that never starts).
    # Two boots, not one: the same count lets a boot whose CLI sits silent (a SITL quirk hil meets by
    # booting again) be followed by another, so the stall below is the one under test.
    monkeypatch.setattr(betaflight, "BOOT_ATTEMPTS", 2)
    monkeypatch.setattr(betaflight.BetaflightSession, "_preflight", lambda session: False)
    result = runner.run(dataclasses.replace(scenario.load(SCENARIOS / "betaflight_hover.yaml"), duration=1.0,
                                            expect=[]))
    assert "PID loop did not start in 2 boots" in result.failure, (result.failure, result.firmware_output)
    assert result.firmware_output.strip()
    assert all(line not in result.failure for line in result.firmware_output.splitlines() if line.strip())


def test_a_firmware_process_group_dies_with_the_process_that_started_it(tmp_path):
    # A Python process that starts a firmware through a shell and is then killed outright.
    starter = (f"import time\n"
               f"from hil.firmware_process import FirmwareProcess\n"
               f"f = FirmwareProcess(['sh', '-c', 'echo $$ > {tmp_path / 'pid.txt'}; sleep 600; true'], 'sleeper')\n"
               f"time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", starter])
    try:
        group = read_pid(tmp_path / "pid.txt", bound=60)
        parent.kill()
    finally:
        parent.wait()
    assert wait_until_gone(group)


# ---- a STATUS flood --------------------------------------------------------------------------

def test_a_status_flood_reaches_the_terminal_bounded_and_the_log_whole(scenario_file, tmp_path):
    path = scenario_file("hover.yaml", duration=0.5, expect=[])
    log = tmp_path / "flood.hillog"
    done = subprocess.run(hil_command("run", str(path), "--out", str(log), "--firmware-cmd",
                                      FAKE + " --status-flood 8"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = 8 * 501
    printed = [line for line in done.stderr.splitlines() if line.startswith("  firmware [warning]")]
    assert 0 < len(printed) <= 140  # the first 20, the first 100 warnings after those, the latest 20
    assert f"{sent - len(printed)} more firmware messages held back" in done.stderr
    assert f"{sent} warning" in done.stdout  # the summary counts them all
    received = [data for direction, _, _, data in flightlog.read(log).packets if direction == 1]
    assert sum(isinstance(wire.decode(data[:-1]), wire.Status) for data in received) == sent


def test_link_stats_keep_a_bounded_number_of_status_messages():
    result = runner.run(short(0.5), firmware_command=FAKE + " --status-flood 8")
    stats = result.link_stats
    assert sum(stats.status_counts.values()) == 8 * 501
    assert len(stats.status_messages) + len(stats.status_warnings) + len(stats.status_latest) <= 140
    assert stats.status_latest[-1][0] == 500  # the latest are kept


def test_a_warning_between_the_first_and_the_latest_messages_reaches_the_terminal(scenario_file, tmp_path):
    # Info messages at ticks 0 to 200 fill the first and the latest kept; the warning at tick 100
    # is in neither, and is shown all the same.
    path = scenario_file("hover.yaml", duration=0.3, expect=[])
    done = subprocess.run(hil_command("run", str(path), "--out", str(tmp_path / "w.hillog"), "--firmware-cmd",
                                      late_firmware(tmp_path, 0.0, tick=-1, info_until=200, warn_at=100)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "firmware [warning] t=0.100 s: note at tick 100" in done.stderr
    assert "firmware [info]" not in done.stderr  # without -v only warnings and worse


# ---- --firmware-cmd ------------------------------------------------------------------------

@pytest.mark.slow
def test_firmware_cmd_output_is_shown_on_failure_and_more_of_it_with_v(scenario_file, tmp_path):
    path = scenario_file("hover.yaml", duration=0.5, expect=[], link__timeout=0.05, link__on_timeout="abort")
    chatter = "for i in $(seq 1 30); do echo chatter line $i >&2; done"
    command = f"sh -c {shlex.quote(chatter + '; exec ' + FAKE.replace('{udp}', '$0') + ' --silent-after 100')} {{udp}}"
    quiet = subprocess.run(hil_command("run", str(path), "--out", str(tmp_path / "a.hillog"),
                                       "--firmware-cmd", command), capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 1
    assert "chatter line 30" in quiet.stdout and "chatter line 11" in quiet.stdout
    assert "chatter line 10\n" not in quiet.stdout  # the last 20 lines only
    assert "bytes of output before these lines left out" in quiet.stdout
    verbose = subprocess.run(hil_command("run", str(path), "-v", "--out", str(tmp_path / "b.hillog"),
                                         "--firmware-cmd", command), capture_output=True, text=True, timeout=600)
    assert "chatter line 1\n" in verbose.stdout and "chatter line 30" in verbose.stdout
    assert "left out" not in verbose.stdout  # all of it: fewer lines than -v shows


def test_a_firmware_s_output_is_read_bounded_whatever_it_printed(tmp_path):
    with FirmwareProcess(["sh", "-c", "seq 1 400000"], "chatty") as firmware:
        firmware.process.wait(60)
        shown = firmware.last_output(runner.FIRMWARE_LINES_VERBOSE).splitlines()
    size = sum(len(str(n)) + 1 for n in range(1, 400001))  # what seq printed, about 2.7 MB
    kept = [str(n) for n in range(400000 - runner.FIRMWARE_LINES_VERBOSE + 1, 400001)]
    assert shown[1:] == kept
    assert shown[0] == f"[{size - sum(len(line) + 1 for line in kept)} bytes of output before these lines left out]"


def test_a_custom_firmware_that_exits_is_named_by_its_command():
    result = runner.run(short(0.5), firmware_command=FAKE + " --crash-after 50")
    assert "fake_firmware.py" in result.failure and "exited with status 7" in result.failure
    assert "quad_pid (custom)" not in result.failure
    assert "fake firmware: giving up at tick 50" in result.firmware_output


def test_run_help_says_firmware_cmd_flies_in_lockstep():
    shown = subprocess.run(hil_command("run", "-h"), capture_output=True, text=True, timeout=300)
    assert "Flown in lockstep unless --realtime" in " ".join(shown.stdout.split())


# ---- start-up under load ---------------------------------------------------------------------

def test_the_hello_timeout_counts_from_the_firmware_saying_it_is_ready(tmp_path):
    # The firmware takes 4 s to start (a loaded machine, JAX imports); HELLO must come within 2 s of
    # its first line, not of its start.
    slow_start = f"sh -c {shlex.quote('sleep 4; echo starting; exec ' + FAKE.replace('{udp}', '$0'))} {{udp}}"
    result = runner.run(short(0.2, hello_timeout=2.0), firmware_command=slow_start)
    assert result.failure is None, result.failure


def test_a_firmware_that_never_says_anything_fails_after_the_start_timeout():
    result = runner.run(short(0.2, start_timeout=1.0), firmware_command="sleep 600")
    assert "printed nothing and sent no HELLO" in result.failure and "link.start_timeout" in result.failure


def test_the_wait_for_hello_ends_at_the_start_timeout_even_after_a_late_first_line():
    # Ready at once, but no HELLO: start_timeout (1 s) comes long before hello_timeout (600 s).
    result = runner.run(short(0.2, start_timeout=1.0, hello_timeout=600.0),
                        firmware_command="sh -c 'echo starting; sleep 600'")
    assert "sent no HELLO" in result.failure and "within 1 s of its start (link.start_timeout)" in result.failure
    assert "printed nothing" not in result.failure


@pytest.mark.parametrize("runtime", ["c", "python"])
def test_the_emulated_firmware_says_when_it_is_ready(runtime):
    from hil.firmware_process import command, free_udp_port

    loaded = scenario.load(SCENARIOS / "hover.yaml")
    with FirmwareProcess(command(loaded, runtime, f"127.0.0.1:{free_udp_port()}"), runtime) as firmware:
        deadline = time.monotonic() + 300
        while firmware.ready_since() is None:
            assert firmware.exit_code is None and time.monotonic() < deadline, firmware.last_output()
            time.sleep(0.05)
        assert "ready on udp 127.0.0.1:" in firmware.first_line()
