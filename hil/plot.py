"""A picture of a flight: position, attitude, body rates and motor commands over time, with the
scenario's expectation bounds drawn where they apply.

The log is read a chunk of ticks at a time and each line keeps at most :data:`MAX_POINTS`
points: the lowest and the highest value of each stretch of ticks, so a spike shows however
long the log.
"""

from pathlib import Path

import numpy as np

from hil import flightlog
from hil import scenario as scenario_module
from hil.trace import column, quantity

PANELS = (
    ("position (m)", (("north", "north"), ("east", "east"), ("altitude", "altitude"))),
    ("attitude (deg)", (("roll_deg", "roll"), ("pitch_deg", "pitch"), ("yaw_deg", "yaw"), ("tilt_deg", "tilt"))),
    ("body rate (rad/s)", (("rate_roll", "p"), ("rate_pitch", "q"), ("rate_yaw", "r"))),
)
COLUMNS = ("position", "attitude", "angular_rate", "command")  # what the panels read of a row
MAX_POINTS = 4000  # points of a line at most: two (lowest, highest) per stretch of ticks


def formats() -> dict:
    """The image formats a plot can be written in: suffix -> description."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg.get_supported_filetypes()


class _Envelope:
    """The lowest and highest value of each series over stretches of ticks; a stretch doubles in
    length whenever there would be more than ``MAX_POINTS // 2`` of them."""

    def __init__(self):
        self.stretch = 1  # ticks
        self.keys = self.low = self.high = None  # stretch index (tick // stretch) and extremes, per stretch

    def add(self, ticks: np.ndarray, values: np.ndarray) -> None:
        if self.keys is None:
            keys, low, high = ticks // self.stretch, values, values
        else:
            keys = np.concatenate([self.keys, ticks // self.stretch])
            low, high = np.concatenate([self.low, values]), np.concatenate([self.high, values])
        self.keys, self.low, self.high = _extremes(keys, low, high)
        while len(self.keys) > MAX_POINTS // 2:
            self.stretch *= 2
            self.keys, self.low, self.high = _extremes(self.keys // 2, self.low, self.high)

    def line(self, rate: float, series: int) -> tuple[np.ndarray, np.ndarray]:
        """Times (s) and values of one series: each stretch's lowest then highest value."""
        times = self.keys * self.stretch / rate
        if self.stretch == 1:
            return times, self.low[:, series]
        return np.repeat(times, 2), np.stack([self.low[:, series], self.high[:, series]], axis=1).reshape(-1)


def _extremes(keys, low, high):
    """Rows with equal consecutive keys merged: the lowest of ``low`` and the highest of ``high``."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.minimum.reduceat(low, starts, axis=0), np.maximum.reduceat(high, starts, axis=0)


def plot(reader: flightlog.LogReader, output: Path) -> Path | None:
    """Write the picture of the log ``reader`` reads to ``output``; None, and nothing written, when
    the log holds no tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantities = [name for _, series in PANELS for name, _ in series]
    motors = reader.layout["command"][1]
    envelope, last = _Envelope(), 0
    for chunk in reader.chunks():
        values = [quantity(chunk.rows, reader.layout, name) for name in quantities]
        envelope.add(chunk.ticks, np.column_stack(values + [column(chunk.rows, reader.layout, "command")]))
        last = chunk.first + len(chunk.rows) - 1
    if envelope.keys is None:
        return None
    header = reader.header
    try:
        expectations = scenario_module.parse_text(header["scenario_text"]).expect
    except scenario_module.ScenarioError:
        expectations = []
    figure, axes = plt.subplots(len(PANELS) + 1, 1, sharex=True, figsize=(11, 10), constrained_layout=True)
    series = 0
    for axis, (title, lines) in zip(axes, PANELS):
        for name, label in lines:
            axis.plot(*envelope.line(reader.rate, series), label=label, linewidth=1)
            series += 1
        _draw_bounds(axis, expectations, {name for name, _ in lines}, last / reader.rate)
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize="small", ncol=4)
    for motor in range(motors):
        axes[-1].plot(*envelope.line(reader.rate, series + motor), label=f"motor {motor}", linewidth=0.8)
    axes[-1].set_ylabel("throttle")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_ylim(-0.05, 1.05)
    axes[-1].grid(alpha=0.3)
    axes[-1].legend(loc="upper right", fontsize="small", ncol=4)
    footer = reader.footer or {}
    verdict = "PASSED" if footer.get("passed") else ("FAILED" if footer else "incomplete log")
    if reader.damage:
        verdict += f", {len(reader.damage)} damaged span{'s' if len(reader.damage) > 1 else ''} skipped"
    figure.suptitle(f"{header['scenario']} — seed {header['seed']}, {header['runtime']} — {verdict}")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def _draw_bounds(axis, expectations, quantities, end):
    for expectation in expectations:
        check = expectation.check()
        if getattr(check, "quantity", None) not in quantities:
            continue
        kind = expectation.kind()
        start = check.after
        stop = getattr(check, "until", None) or end
        if kind == "within":
            low = check.min if check.min is not None else -np.inf
            high = check.max if check.max is not None else np.inf
            axis.fill_between([start, stop], [low, low], [high, high], alpha=0.12, label=f"{expectation.name}")
        else:
            axis.hlines(check.bound, start, stop, linestyles="dashed", linewidth=1, colors="k",
                        label=f"{expectation.name}")


FAN = 32  # members in a sweep's fan of trajectories


def plot_sweep(result, fan, output: Path) -> Path:
    """A sweep's picture (``hil sweep --plot``): a fan of north, east and altitude over time of the
    first :data:`FAN` members ``fan`` (a :class:`hil.sweep.SweepResult` flown with traces) holds,
    those that failed an expectation in red and on top, with the bounds; then, per measured value
    of each expectation of ``result``, a histogram of its members' values, the failed members' part
    in red, with its bound dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histograms = [(index, label) for index, measured in enumerate(result.measured) for label in measured]
    width = len(PANELS[0][1])
    figure, axes = plt.subplots(1 + -(-len(histograms) // width), width, figsize=(5 * width, 3.6 + 3.2 * (
        -(-len(histograms) // width))), constrained_layout=True, squeeze=False)
    rows, failed = fan.traces[:FAN], ~fan.passed[:FAN].all(axis=1)
    rate = fan.scenario.physics.rate_hz
    ticks = np.arange(rows.shape[1])
    for series, (axis, (name, label)) in enumerate(zip(axes[0], PANELS[0][1])):
        for member in np.argsort(failed, kind="stable"):  # the failures drawn last, over the others
            envelope = _Envelope()
            envelope.add(ticks, quantity(rows[member], fan.layout, name)[:, None])
            axis.plot(*envelope.line(rate, 0), color="tab:red" if failed[member] else "0.4",
                      linewidth=0.9 if failed[member] else 0.6, alpha=0.9 if failed[member] else 0.5)
        _draw_bounds(axis, result.expectations, {name}, ticks[-1] / rate)
        axis.set_title(f"{label} (m): members 0-{len(rows) - 1}, {int(failed.sum())} failed (red)", fontsize="medium")
        axis.set_xlabel("time (s)")
        axis.grid(alpha=0.3)
    for axis, (index, label) in zip(axes[1:].flat, histograms):
        expectation, values = result.expectations[index], result.measured[index][label]
        measured = np.isfinite(values)
        passed = result.passed[:, index]
        axis.hist([values[measured & passed], values[measured & ~passed]], bins=30, stacked=True,
                  color=["0.55", "tab:red"], label=["passed", "failed"])
        bound = _bound(expectation, label)
        if bound is not None:
            axis.axvline(bound, color="k", linestyle="--", linewidth=1, label="bound")
        check = expectation.check()
        what = "distance to the point (m)" if expectation.kind() == "reach" else f"{label} of {check.quantity}"
        unmeasured = f", {int((~measured).sum())} without a value" if not measured.all() else ""
        axis.set_title(f"{expectation.name}: {what}\n{int(passed.sum())}/{result.runs} passed{unmeasured}",
                       fontsize="medium")
        axis.set_ylabel("members")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    for axis in axes[1:].flat[len(histograms):]:
        axis.set_visible(False)
    verdict = "PASSED" if result.ok else "FAILED"
    figure.suptitle(f"{result.scenario.name}: {result.runs} members, sweep seed {result.sweep.seed} — {verdict} "
                    f"(every expectation needs a pass rate of {result.sweep.require:.4g})")
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def _bound(expectation, label: str):
    """The bound a measured value (a :meth:`hil.sweep.DeviceMonitor.measured` label) is held to, or None."""
    check, kind = expectation.check(), expectation.kind()
    if kind == "within":
        return check.min if label == "min" else check.max
    return check.tolerance if kind == "reach" else check.bound
