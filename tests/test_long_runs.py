"""A run longer than its trace's window: rows stream to the log, expectations are judged as the
run goes, and nothing differs from a run that held every row."""

import numpy as np
import pytest

from hil import flightlog, replay, runner, scenario, trace
from hil.expectations import Monitor
from hil.scenario import Bound, Expectation, Reach, Within
from hil.trace import Trace

WINDOW_BYTES = 1  # the smallest window a trace takes: a few thousand rows


def _fly(path, tmp_path, name, **options):
    log = tmp_path / f"{name}.hillog"
    result = runner.run(scenario.load(path), log_path=log, **options)
    return result, flightlog.read(log)


@pytest.mark.parametrize("options", [{"runtime": "in-process"}, {"runtime": "c"}, {"runtime": "c", "compiled_exchange": False}],
                         ids=["in-process", "c-compiled-exchange", "c-one-call-per-tick"])
def test_a_run_through_a_small_window_judges_and_records_what_a_whole_trace_does(scenario_file, monkeypatch, tmp_path,
                                                                                  options):
    path = scenario_file("hover.yaml", duration=12.0)
    whole, whole_log = _fly(path, tmp_path, "whole", **options)
    monkeypatch.setattr(trace, "WINDOW_BYTES", WINDOW_BYTES)
    windowed, windowed_log = _fly(path, tmp_path, "windowed", **options)
    assert whole.trace.whole and not windowed.trace.whole
    held = windowed.trace.rows.shape[0]
    assert held < whole.trace.rows.shape[0] / 2  # the window moved on several times
    assert whole.outcomes == windowed.outcomes and windowed.passed
    # The log holds every row either way, the same rows and digests.
    assert len(windowed_log.rows) == whole.trace.ticks_done == windowed.trace.ticks_done
    assert np.array_equal(np.array(windowed_log.rows), whole.trace.rows)
    assert [t[2] for t in windowed_log.ticks] == [t[2] for t in whole_log.ticks]
    # What the windowed trace still holds is the end of the run.
    first = windowed.trace.first
    assert np.array_equal(windowed.trace.rows[:windowed.trace.ticks_done - first], whole.trace.rows[first:])


def test_a_non_finite_value_fails_every_kind_of_expectation():
    layout = {"position": (0, 3), "velocity": (3, 3), "attitude": (6, 4), "angular_rate": (10, 3), "command": (13, 4)}
    rows = np.zeros((100, 17))
    rows[:, 6] = 1.0  # level
    rows[:, 2] = -2.0  # 2 m up
    rows[60, 2] = np.nan
    for expectation in (Expectation("altitude", within=Within("altitude", min=1.0, max=3.0)),
                        Expectation("not too high", never_above=Bound("altitude", 5.0)),
                        Expectation("not too low", never_below=Bound("altitude", 0.0))):
        monitor = Monitor(expectation, layout, 1000.0)
        monitor.read(0, rows)
        outcome = monitor.outcome()
        assert not outcome.passed, outcome
        assert "0.060 s: nan" in outcome.detail


def test_judged_in_chunks_or_at_once_the_outcomes_are_the_same():
    layout = {"position": (0, 3), "velocity": (3, 3), "attitude": (6, 4), "angular_rate": (10, 3), "command": (13, 4)}
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(1000, 17))
    rows[:, 6:10] /= np.linalg.norm(rows[:, 6:10], axis=1, keepdims=True)
    for expectation in (Expectation("a", within=Within("altitude", after=0.1, until=0.8, min=-3.0, max=3.0)),
                        Expectation("b", never_above=Bound("tilt_deg", 170.0, after=0.2)),
                        Expectation("c", never_below=Bound("motor_min", -3.0)),
                        Expectation("d", reach=Reach((0.5, 0.5, 0.5), 0.3, 0.9, after=0.05)),
                        Expectation("e", reach=Reach((9.0, 9.0, 9.0), 0.1, 0.9))):
        at_once, in_chunks = Monitor(expectation, layout, 1000.0), Monitor(expectation, layout, 1000.0)
        at_once.read(0, rows)
        for start in range(0, 1000, 37):
            in_chunks.read(start, rows[start:start + 37])
        assert at_once.outcome() == in_chunks.outcome()


def test_a_trace_refuses_rows_that_have_left_its_window(monkeypatch):
    monkeypatch.setattr(trace, "WINDOW_BYTES", WINDOW_BYTES)
    window = Trace.for_run(100_000, {"position": (0, 3)}, 1000.0)
    window.span(0, window.rows.shape[0])
    window.ticks_done = window.rows.shape[0]
    window.span(window.rows.shape[0], 10)  # moves the window on
    assert window.first > 0
    with pytest.raises(IndexError, match="left the trace's window"):
        window.held([0])


def test_a_refly_longer_than_the_window_is_compared_as_a_whole_one_is(scenario_file, monkeypatch, tmp_path):
    path = scenario_file("hover.yaml", duration=12.0)
    _, logged = _fly(path, tmp_path, "logged", runtime="in-process")
    again = runner.with_overrides(scenario.load(path), seed=99)

    def refly():
        comparing = replay.FlightComparison(flightlog.LogReader(tmp_path / "logged.hillog").chunks(),
                                            logged.header["layout"], 1000.0, 0.05)
        result = runner.run(again, runtime="in-process", readers=[comparing.read])
        return result, comparing.comparison(), comparing.logged_ticks

    whole, whole_comparison, whole_logged = refly()
    monkeypatch.setattr(trace, "WINDOW_BYTES", WINDOW_BYTES)
    windowed, windowed_comparison, windowed_logged = refly()
    assert whole.trace.whole and not windowed.trace.whole
    assert windowed_comparison == whole_comparison and windowed_logged == whole_logged == len(logged.rows)
    assert whole_comparison.ticks == len(logged.rows) and whole_comparison.first_tick is not None  # other noise
