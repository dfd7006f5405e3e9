"""Durations measured per tick (round trips, period errors) in bounded memory, however long the run."""

import math

import numpy as np

EXACT = 1 << 16  # durations kept one by one, for exact percentiles, before they go into the histogram
SMALLEST = 1e-9  # s: the histogram's first bin holds everything up to here
RATIO = 1.005  # each bin's upper edge over its lower: a percentile read from the histogram is within 0.25 %
BINS = math.ceil(math.log(1e3 / SMALLEST) / math.log(RATIO)) + 1  # up to 1000 s; the last bin holds the rest


class Timings:
    """Non-negative durations in seconds: every one is kept while there are few, and percentiles
    are exact (NumPy's linear interpolation); past :data:`EXACT` they are counted in logarithmic
    bins, and a percentile is the geometric middle of its bin."""

    def __init__(self):
        self._recent: list[float] = []
        self._counts: np.ndarray | None = None
        self._folded = 0
        self._max = -math.inf

    def append(self, seconds: float) -> None:
        self._recent.append(seconds)
        if len(self._recent) >= EXACT:
            self._fold()

    def extend(self, seconds) -> None:
        self._recent.extend(seconds)
        if len(self._recent) >= EXACT:
            self._fold()

    def __len__(self) -> int:
        return self._folded + len(self._recent)

    def max(self) -> float:
        return max(self._max, max(self._recent, default=-math.inf))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of every duration so far; NaN with none."""
        if not len(self):
            return math.nan
        if self._counts is None:
            return float(np.percentile(self._recent, q))
        counts = self._counts + _binned(self._recent)
        rank = q / 100 * (len(self) - 1)
        index = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        index = min(index, BINS - 1)
        if index == 0:
            return SMALLEST / 2
        return SMALLEST * RATIO ** (index - 0.5)

    def merged(self, other: "Timings") -> "Timings":
        """Both sets of durations as one."""
        both = Timings()
        both.extend(self._recent)
        both.extend(other._recent)
        if self._counts is not None or other._counts is not None:
            both._fold()
            for side in (self, other):
                if side._counts is not None:
                    both._counts += side._counts
                    both._folded += side._folded
            both._max = max(self.max(), other.max())
        return both

    def _fold(self) -> None:
        if self._counts is None:
            self._counts = np.zeros(BINS, np.int64)
        self._counts += _binned(self._recent)
        self._folded += len(self._recent)
        self._max = self.max()
        self._recent.clear()


def _binned(seconds) -> np.ndarray:
    values = np.asarray(seconds, np.float64)
    index = np.ceil(np.log(np.maximum(values, SMALLEST) / SMALLEST) / math.log(RATIO)).astype(np.int64)
    return np.bincount(np.minimum(index, BINS - 1), minlength=BINS)
