"""quad_pid's height estimate whatever the noise drawn: its barometer's zero is the mean of the
samples before arming, not the first sample, so a shipped scenario holds for its seed and for any
other (a sweep over the seed alone, the noise of each member its own)."""

import numpy as np
import pytest

from hil import scenario, sweep
from hil.trace import quantity
from support import SCENARIOS


@pytest.mark.slow
def test_hover_holds_its_altitude_band_for_every_seed_of_a_sweep():
    hover = scenario.load(SCENARIOS / "hover.yaml")  # "holds 2 m": within [1.7, 2.3] m from 8 s
    result = sweep.fly(hover, runs=64)
    failed = {expectation.name: int((~result.passed[:, index]).sum()) for index, expectation in enumerate(hover.expect)}
    assert failed == {expectation.name: 0 for expectation in hover.expect}, failed
    altitude = quantity(result.final_rows, result.layout, "altitude")  # every member ends near 2 m
    assert np.all(np.abs(altitude - 2.0) < 0.3), altitude
