"""The record of a run's ticks (hil.record.TickRecord), through real runs of every driver: row k
holds the command flown from tick k to k + 1, a tick is done once that command is known, and a run
that ends early is judged and logged up to the same tick."""

import dataclasses
import signal
import sys

import numpy as np
import pytest
from support import ROOT, SCENARIOS

from hil import flightlog, replay, runner, scenario
from hil.bridges import compiled_exchange

FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_firmware.py'} --udp {{udp}}"
EXCHANGE = pytest.param(True, marks=pytest.mark.skipif(compiled_exchange.unavailable() is not None,
                                                         reason="no compiled exchange here"))


def short(seconds: float, **link):
    loaded = dataclasses.replace(scenario.load(SCENARIOS / "hover.yaml"), duration=seconds, expect=[])
    return dataclasses.replace(loaded, link=dataclasses.replace(loaded.link, **link)) if link else loaded


def commands(rows: np.ndarray, layout: dict) -> np.ndarray:
    offset, size = layout["command"]
    return rows[:, offset:offset + size]


@pytest.mark.parametrize("compiled", [EXCHANGE, False], ids=["compiled exchange", "one call per tick"])
def test_in_lockstep_row_k_holds_the_reply_to_tick_k_which_the_physics_flies_to_k_plus_1(tmp_path, compiled):
    # The firmware answers tick k with 0.5 + 0.05 (k % 5): a command that changes every tick, with
    # a late reply and a duplicate now and then (which the compiled exchange hands back).
    log_path = tmp_path / "mischief.hillog"
    result = runner.run(short(0.3), firmware_command=FAKE + " --mischief", log_path=log_path,
                        compiled_exchange=compiled)
    assert result.failure is None, result.failure
    ticks = np.arange(result.scenario.ticks + 1)
    assert result.trace.ticks_done == len(ticks)
    flown = commands(result.trace.rows, result.trace.layout)
    assert np.array_equal(flown, np.repeat((0.5 + 0.05 * (ticks % 5))[:, None], 4, axis=1).astype(np.float32))
    logged = flightlog.read(log_path)
    assert np.array_equal(np.array(logged.rows), result.trace.rows)
    # Replay flies tick k + 1 with row k's command and finds every logged row again.
    assert replay.replay(logged).identical


def test_in_lockstep_a_command_cut_at_a_known_tick_is_in_the_row_of_that_tick(tmp_path):
    # Replies stop at tick 60: from tick 60 on the timeout policy cuts the motors, so rows up to
    # 59 hold the firmware's 0.3 and rows from 60 on hold no thrust.
    log_path = tmp_path / "cut.hillog"
    result = runner.run(short(0.08, timeout=0.02, on_timeout="cut"), firmware_command=FAKE + " --throttle 0.3 "
                        "--silent-after 60", log_path=log_path)
    assert result.failure is None, result.failure
    flown = commands(result.trace.rows, result.trace.layout)
    assert np.all(flown[:60] == np.float32(0.3)) and np.all(flown[60:] == 0.0)
    assert result.link_stats.policy_applied == {"cut": result.scenario.ticks + 1 - 60}
    assert replay.replay(flightlog.read(log_path)).identical


def test_in_lockstep_a_run_aborted_at_the_timeout_counts_the_tick_that_waited_and_logs_the_ticks_before(tmp_path):
    log_path = tmp_path / "abort.hillog"
    result = runner.run(short(0.3, timeout=0.02, on_timeout="abort"), firmware_command=FAKE + " --throttle 0.3 "
                        "--silent-after 100", log_path=log_path)
    assert "no reply for tick 100" in result.failure
    # Tick 100 was flown and is judged, with the command it was flown into (the reply to 99)
    # still in its row; no command flew from it, so the log ends at tick 99.
    assert result.trace.ticks_done == 101
    assert np.all(commands(result.trace.rows[:101], result.trace.layout) == np.float32(0.3))
    logged = flightlog.read(log_path)
    assert len(logged.rows) == 100 and logged.footer["ticks"] == 101
    assert np.array_equal(np.array(logged.rows), result.trace.rows[:100])


def interrupt_at(tick: int, reported: list):
    """A progress callback that interrupts the run (as SIGINT does) at its first report at or
    after ``tick``, noting the tick it reported."""
    def progress(k, last, seconds):
        if k >= tick:
            reported.append(k)
            raise runner.Interrupted(signal.SIGINT)
    return progress


@pytest.mark.parametrize("how", [
    dict(runtime="in-process"),
    pytest.param(dict(runtime="c"), marks=EXCHANGE.marks),
    dict(runtime="c", compiled_exchange=False),
    dict(runtime="c", realtime=True),
], ids=["in-process", "lockstep, compiled exchange", "lockstep, one call per tick", "real time"])
def test_an_interrupted_run_is_judged_and_logged_up_to_the_last_tick_it_reported(tmp_path, how):
    log_path = tmp_path / "interrupted.hillog"
    reported = []
    with pytest.raises(runner.Interrupted):
        runner.run(short(2.0), log_path=log_path, progress=interrupt_at(300, reported), progress_interval=0.0,
                   **how)
    logged = flightlog.read(log_path)
    assert logged.complete and logged.footer["interrupted"] == "SIGINT"
    # Every tick reported is done (in real time the tick reported flies the command in force on,
    # as the board's clock does), and nothing after it.
    assert logged.footer["ticks"] == reported[0] + 1 == len(logged.rows)
    assert [tick for tick, _, _ in logged.ticks] == list(range(reported[0] + 1))
    assert replay.replay(logged).identical


def test_in_real_time_each_row_holds_the_command_in_force_when_the_next_tick_was_released(tmp_path):
    log_path = tmp_path / "realtime.hillog"
    result = runner.run(short(0.5), firmware_command=FAKE + " --throttle 0.3", realtime=True, log_path=log_path)
    assert result.failure is None, result.failure
    assert result.trace.ticks_done == result.scenario.ticks + 1
    flown = commands(result.trace.rows, result.trace.layout)[:, 0]
    # No thrust until the first reply is in force (at tick 1 or a little later), then the
    # firmware's 0.3 to the last row.
    first = int(np.argmax(flown != 0.0))
    assert first < 100 and np.all(flown[:first] == 0.0) and np.all(flown[first:] == np.float32(0.3))
    assert replay.replay(flightlog.read(log_path)).identical
