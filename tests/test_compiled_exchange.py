"""The lockstep exchange compiled into the tick loop (hil.bridges.compiled_exchange) flies, counts and
records what the loop that calls the tick once per tick does, over real UDP and a real pty, and
hands every tick it cannot take back to the session, which handles it as before."""

import dataclasses
import os
import select
import shutil
import sys
import threading
import time
import tty

import numpy as np
import pytest
from support import ROOT, SCENARIOS

from hil import firmware_process, flightlog, runner, scenario, wire
from hil.bridges import compiled_exchange
from hil.firmware_stubs import c_build

pytestmark = pytest.mark.skipif(compiled_exchange.unavailable() is not None,
                                reason=f"no compiled exchange: {compiled_exchange.unavailable()}")

FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_firmware.py'} --udp {{udp}}"


def short(seconds: float):
    return dataclasses.replace(scenario.load(SCENARIOS / "hover.yaml"), duration=seconds, expect=[])


def both(loaded, tmp_path, **how):
    """The run with the exchange compiled in and with one call per tick, and their logs."""
    compiled = runner.run(loaded, log_path=tmp_path / "compiled.hillog", **how)
    per_tick = runner.run(loaded, log_path=tmp_path / "per_tick.hillog", compiled_exchange=False, **how)
    assert compiled.failure is None and per_tick.failure is None, (compiled.failure, per_tick.failure)
    assert compiled.link_stats.exchanged_in_loop > 0 and per_tick.link_stats.exchanged_in_loop is None
    assert "in the compiled tick loop" in dict(compiled.link_stats.summary())["exchange"]
    return compiled, per_tick, flightlog.read(tmp_path / "compiled.hillog"), flightlog.read(tmp_path / "per_tick.hillog")


def counted(result):
    """What the run counted from tick 0 on (how many HELLOs the handshake took depends on when the
    firmware started listening)."""
    stats, counters = result.link_stats, result.link_stats.counters
    return dict(sensors=stats.sensors_sent, actuators=stats.actuators_received, round_trips=len(stats.round_trips),
                late=stats.late_replies, lost=stats.lost_replies, unexpected=stats.unexpected,
                status=(stats.status_messages, list(stats.status_latest), stats.status_counts), duplicates=counters.duplicates, foreign=counters.foreign,
                errors=counters.errors(), resyncs=counters.stream.resyncs)


def from_tick_0(log):
    """The log's packets from the first SENSORS on, wall-clock fields aside."""
    packets = log.packets
    first = next(i for i, (direction, _, _, data) in enumerate(packets)
                 if direction == 0 and isinstance(wire.decode(data[:-1]), wire.Sensors))
    return [(direction, tick, data) for direction, tick, _, data in packets[first:]]


@pytest.mark.slow
def test_over_udp_it_flies_counts_and_records_what_one_call_per_tick_does(tmp_path):
    compiled, per_tick, a, b = both(short(2.5), tmp_path, runtime="c")
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()
    assert counted(compiled) == counted(per_tick)
    assert compiled.link_stats.status_messages  # the C firmware's STATUS at tick 1000 was handed back and noted
    # The logs hold the same records, wall-clock fields aside: every tick, digest, row, snapshot and packet.
    assert [(t, d) for t, _, d in a.ticks] == [(t, d) for t, _, d in b.ticks]
    assert [r.tobytes() for r in a.rows] == [r.tobytes() for r in b.rows]
    assert [(t, s.tobytes()) for t, s in a.snapshots] == [(t, s.tobytes()) for t, s in b.snapshots]
    assert from_tick_0(a) == from_tick_0(b)
    assert len(a.snapshots) == 3 and a.complete
    walls = [wall for _, _, wall, _ in a.packets]
    assert walls == sorted(walls)  # the journal's times are the log's clock


def test_over_a_pty_it_flies_what_one_call_per_tick_does(tmp_path):
    loaded = short(2.0)
    results = []
    for compiled in (True, False):
        board, terminal = firmware_process.start_on_pty(loaded)
        with board:
            results.append(runner.run(loaded, board=runner.Board(port=terminal, baud=921600), realtime=False,
                                      compiled_exchange=compiled))
    compiled, per_tick = results
    assert compiled.failure is None and compiled.link_stats.exchanged_in_loop > loaded.ticks // 2
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()
    assert compiled.link_stats.actuators_received == per_tick.link_stats.actuators_received == loaded.ticks + 1


def test_ticks_it_cannot_take_go_back_to_the_session_which_handles_them_as_before(tmp_path):
    """STATUS messages, garbage, duplicates and late replies around the replies: each stops the
    loop at its tick, and the session counts and records exactly what it counts alone."""
    compiled, per_tick, a, b = both(short(1.0), tmp_path, firmware_command=FAKE + " --mischief")
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()
    assert counted(compiled) == counted(per_tick)
    ticks = compiled.scenario.ticks + 1
    stats, counters = compiled.link_stats, compiled.link_stats.counters
    assert stats.status_counts == {1: len([k for k in range(ticks) if k % 7 == 3])}
    assert counters.errors() == {"cobs": len([k for k in range(ticks) if k % 11 == 5])}
    assert counters.duplicates >= len([k for k in range(ticks - 1) if k % 13 == 6])
    assert stats.late_replies == len([k for k in range(ticks) if k % 17 == 8])
    assert stats.actuators_received == ticks + stats.late_replies and stats.lost_replies == 0
    assert ticks // 2 < stats.exchanged_in_loop < ticks  # the rest went back to the session
    commands = compiled.trace.column("command")[:, 0]
    assert list(commands) == [float(np.float32(0.5 + 0.05 * (k % 5))) for k in range(ticks)]  # each from its tick on
    assert from_tick_0(a) == from_tick_0(b)


def test_without_compilers_lockstep_calls_the_tick_once_per_tick_and_says_why(monkeypatch):
    monkeypatch.setattr(compiled_exchange, "unavailable", lambda: "no C++ compiler: 'c++' was not found")
    result = runner.run(short(0.3), runtime="c")
    assert result.failure is None
    assert result.link_stats.mode.endswith("one tick per call (no compiled exchange: no C++ compiler: 'c++' was "
                                           "not found)")


def test_a_failed_build_of_the_exchange_is_reported_with_the_compiler_output(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "jax"))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(RuntimeError, match=r"compiling hil_lockstep_exchange failed: .*false.* exited with status 1"):
        compiled_exchange.build()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler: .*no-such-c\+\+.* \(set \$CXX"):
        compiled_exchange.build()
    monkeypatch.delenv("CXX")
    if shutil.which("c++"):
        assert compiled_exchange.build().parent == c_build.cache_directory()


class ScriptedBoard:
    """A board on a real pseudo-terminal, scripted tick by tick from a thread: it answers HELLO and
    each SENSORS, and can stall in the middle of a reply or hang up after one."""

    def __init__(self, stall_at: int | None = None, stall: float = 0.0, hang_up_after: int | None = None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.device = os.ttyname(self.slave)
        self.stall_at, self.stall, self.hang_up_after = stall_at, stall, hang_up_after
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        reader, seq, greeted = wire.FrameReader(), 0, False
        try:
            while True:
                # Patience for hil's HELLO counts from hil's readiness, which compiling on a loaded
                # machine can put off for long: only a started session's silence ends the board.
                if not select.select([self.master], [], [], 10.0 if greeted else 300.0)[0]:
                    return
                for message in reader.feed(os.read(self.master, 4096)):
                    if isinstance(message, wire.Hello):
                        greeted = True
                        reply = wire.Hello(0, wire.PROTOCOL_VERSION, "firmware", "quadrotor", 4, 0,
                                           (wire.SensorSpec("imu", 6, 0.0),))
                    elif isinstance(message, wire.Sensors):
                        seq += 1
                        reply = wire.Actuators(seq, message.tick, (0.6,) * 4)
                    else:
                        return
                    frame = wire.encode(reply)
                    if isinstance(message, wire.Sensors) and message.tick == self.stall_at:
                        os.write(self.master, frame[:5])
                        time.sleep(self.stall)
                        frame = frame[5:]
                    os.write(self.master, frame)
                    if isinstance(message, wire.Sensors) and message.tick == self.hang_up_after:
                        os.close(self.master)  # as an unplugged adapter: hil's next write fails
                        return
        except OSError:
            return

    def close(self):
        self.thread.join(10)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def fly_scripted(loaded, compiled: bool, **script):
    board = ScriptedBoard(**script)
    try:
        return runner.run(loaded, board=runner.Board(port=board.device, baud=921600), realtime=False,
                          compiled_exchange=compiled)
    finally:
        board.close()


@pytest.mark.slow
def test_a_reply_cut_by_the_timeout_on_a_stream_is_read_as_one_late_reply_either_way():
    """Bytes of a reply still incomplete at the timeout go back to the session's reader, so the
    rest completes them into a late reply, as without the compiled exchange."""
    loaded = dataclasses.replace(short(0.3), link=dataclasses.replace(short(0.3).link, timeout=0.05,
                                                                      on_timeout="hold"))
    compiled, per_tick = (fly_scripted(loaded, flag, stall_at=100, stall=0.125) for flag in (True, False))
    assert compiled.failure is None and per_tick.failure is None
    for stats in (compiled.link_stats, per_tick.link_stats):
        # 2.5 timeouts of stall: at least ticks 100 and 101 time out (late and lost; how many more
        # depends on the machine's load), and every reply they missed comes later, whole, as a late
        # reply: no frame was broken in two.
        assert stats.lost_replies >= 2 and stats.late_replies == 2 * stats.lost_replies, stats.summary()
        assert stats.counters.errors() == {}
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()


def test_a_line_that_goes_away_mid_run_ends_it_naming_the_port_either_way():
    loaded = short(0.3)
    for compiled in (True, False):
        result = fly_scripted(loaded, compiled, hang_up_after=120)
        # Whether the reply to tick 120 is still read, and then whether the write of tick 121's
        # SENSORS or the wait for its reply finds the line gone, is a race with the board's close.
        assert result.link_stats.link in result.failure and "Traceback" not in result.failure, (compiled, result.failure)
        assert result.trace.ticks_done in (120, 121), (compiled, result.trace.ticks_done)


def test_replies_it_must_refuse_are_refused_and_counted_as_one_call_per_tick_does(tmp_path):
    """A NaN throttle (which hil_proto's decoder refuses, as hil.wire does), 3 throttles for 4 motors
    and a reply for a tick not sent yet: none flies in the loop, and each is counted as alone."""
    bad = " ".join(f"--bad-reply {kind}:{tick}" for kind, tick in (("nan", 100), ("three", 200), ("future", 300)))
    compiled, per_tick, a, b = both(short(0.5), tmp_path, firmware_command=FAKE + f" --throttle 0.3 {bad}")
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()
    assert counted(compiled) == counted(per_tick)
    assert compiled.link_stats.counters.errors() == {"message": 2} and compiled.link_stats.unexpected == 1
    assert np.all(compiled.trace.column("command")[1:] == np.float32(0.3))
    assert from_tick_0(a) == from_tick_0(b)
