"""The lockstep exchange compiled into the tick loop (hil.bridges.compiled_exchange) flies, counts and
records what the loop that calls the tick once per tick does, over real UDP and a real pty, and
hands every tick it cannot take back to the session, which handles it as before."""

import dataclasses
import shutil
import sys

import numpy as np
import pytest
from support import ROOT, SCENARIOS

from hil import firmware_process, flightlog, runner, scenario
from hil.bridges import compiled_exchange
from hil.firmware_stubs import c_build

pytestmark = pytest.mark.skipif(compiled_exchange.unavailable() is not None,
                                reason=f"no compiled exchange: {compiled_exchange.unavailable()}")

FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_firmware.py'} --udp {{udp}}"
COMPILED = "exchange compiled into the tick loop"


def short(seconds: float):
    return dataclasses.replace(scenario.load(SCENARIOS / "hover.yaml"), duration=seconds, expect=[])


def both(loaded, tmp_path, **how):
    """The run with the exchange compiled in and with one call per tick, and their logs."""
    compiled = runner.run(loaded, log_path=tmp_path / "compiled.hillog", **how)
    per_tick = runner.run(loaded, log_path=tmp_path / "per_tick.hillog", compiled_exchange=False, **how)
    assert compiled.failure is None and per_tick.failure is None, (compiled.failure, per_tick.failure)
    assert COMPILED in compiled.link_stats.mode and COMPILED not in per_tick.link_stats.mode
    return compiled, per_tick, flightlog.read(tmp_path / "compiled.hillog"), flightlog.read(tmp_path / "per_tick.hillog")


def counted(result):
    stats, counters = result.link_stats, result.link_stats.counters
    return dict(sensors=stats.sensors_sent, actuators=stats.actuators_received, round_trips=len(stats.round_trips),
                late=stats.late_replies, lost=stats.lost_replies, unexpected=stats.unexpected,
                status=stats.status_messages, frames_sent=counters.frames_sent, bytes_sent=counters.bytes_sent,
                frames_received=counters.frames_received, duplicates=counters.duplicates, foreign=counters.foreign,
                errors=counters.errors(), resyncs=counters.stream.resyncs, decoded=counters.stream.frames)


def test_over_udp_it_flies_counts_and_records_what_one_call_per_tick_does(tmp_path):
    compiled, per_tick, a, b = both(short(2.5), tmp_path, runtime="c")
    assert compiled.trace.rows.tobytes() == per_tick.trace.rows.tobytes()
    assert counted(compiled) == counted(per_tick)
    assert compiled.link_stats.counters.bytes_received == per_tick.link_stats.counters.bytes_received
    assert compiled.link_stats.status_messages  # the C firmware's STATUS at tick 1000 was handed back and noted
    # The logs hold the same records, wall-clock fields aside: every tick, digest, row, snapshot and packet.
    assert [(t, d) for t, _, d in a.ticks] == [(t, d) for t, _, d in b.ticks]
    assert [r.tobytes() for r in a.rows] == [r.tobytes() for r in b.rows]
    assert [(t, s.tobytes()) for t, s in a.snapshots] == [(t, s.tobytes()) for t, s in b.snapshots]
    assert [(d, t, data) for d, t, _, data in a.packets] == [(d, t, data) for d, t, _, data in b.packets]
    assert len(a.snapshots) == 3 and a.complete
    walls = [wall for _, _, wall, _ in a.packets]
    assert walls == sorted(walls)  # the journal's times are the log's clock


def test_over_a_pty_it_flies_what_one_call_per_tick_does(tmp_path):
    loaded = short(2.0)
    results = []
    for compiled in (True, False):
        board, terminal = firmware_process.start_on_pty(loaded)
        try:
            results.append(runner.run(loaded, board=runner.Board(port=terminal, baud=921600), realtime=False,
                                      compiled_exchange=compiled))
        finally:
            board.stop()
            board.close()
    compiled, per_tick = results
    assert compiled.failure is None and COMPILED in compiled.link_stats.mode
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
    assert len(stats.status_messages) == len([k for k in range(ticks) if k % 7 == 3])
    assert counters.errors() == {"cobs": len([k for k in range(ticks) if k % 11 == 5])}
    assert counters.duplicates >= len([k for k in range(ticks - 1) if k % 13 == 6])
    assert stats.late_replies == len([k for k in range(ticks) if k % 17 == 8])
    assert stats.actuators_received == ticks + stats.late_replies and stats.lost_replies == 0
    commands = compiled.trace.column("command")[:, 0]
    assert list(commands) == [float(np.float32(0.5 + 0.05 * (k % 5))) for k in range(ticks)]  # each from its tick on
    assert [(d, t, data) for d, t, _, data in a.packets] == [(d, t, data) for d, t, _, data in b.packets]


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
