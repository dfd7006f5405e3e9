"""Round trips and period errors of a run of any length, in bounded memory."""

import numpy as np

from hil import timings
from hil.timings import Timings


def test_few_durations_give_numpys_exact_percentiles():
    values = np.random.default_rng(1).lognormal(np.log(20e-6), 0.5, size=1000)
    kept = Timings()
    kept.extend(values.tolist())
    for q in (0, 50, 99, 100):
        assert kept.percentile(q) == np.percentile(values, q)
    assert kept.max() == values.max() and len(kept) == 1000


def test_many_durations_stay_within_a_quarter_percent_in_bounded_memory():
    values = np.random.default_rng(2).lognormal(np.log(20e-6), 1.0, size=5 * timings.EXACT + 123)
    kept = Timings()
    for value in values[:1000].tolist():
        kept.append(value)
    kept.extend(values[1000:].tolist())
    assert len(kept) == values.size and kept.max() == values.max()
    assert len(kept._recent) < timings.EXACT
    for q in (1, 50, 90, 99, 99.9):
        assert abs(kept.percentile(q) / np.percentile(values, q) - 1) < 0.005, q


def test_no_durations_have_no_percentiles():
    assert np.isnan(Timings().percentile(50)) and len(Timings()) == 0
