"""A picture of a flight: position, attitude, body rates and motor commands over time, with the
scenario's expectation bounds drawn where they apply."""

from pathlib import Path

import numpy as np

from hil import flightlog
from hil import scenario as scenario_module
from hil.trace import Trace

PANELS = (
    ("position (m)", (("north", "north"), ("east", "east"), ("altitude", "altitude"))),
    ("attitude (deg)", (("roll_deg", "roll"), ("pitch_deg", "pitch"), ("yaw_deg", "yaw"), ("tilt_deg", "tilt"))),
    ("body rate (rad/s)", (("rate_roll", "p"), ("rate_pitch", "q"), ("rate_yaw", "r"))),
)


def plot(log: flightlog.FlightLog, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = {name: tuple(span) for name, span in log.header["layout"].items()}
    rows = np.array(log.rows)
    trace = Trace(rows, layout, log.header["rate_hz"], ticks_done=len(rows))
    time = trace.time
    try:
        expectations = scenario_module.parse_text(log.header["scenario_text"]).expect
    except scenario_module.ScenarioError:
        expectations = []
    figure, axes = plt.subplots(len(PANELS) + 1, 1, sharex=True, figsize=(11, 10), constrained_layout=True)
    for axis, (title, series) in zip(axes, PANELS):
        for quantity, label in series:
            axis.plot(time, trace.quantity(quantity), label=label, linewidth=1)
        _draw_bounds(axis, expectations, {quantity for quantity, _ in series}, time[-1] if len(time) else 0.0)
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize="small", ncol=4)
    commands = trace.column("command")
    for motor in range(commands.shape[1]):
        axes[-1].plot(time, commands[:, motor], label=f"motor {motor}", linewidth=0.8)
    axes[-1].set_ylabel("throttle")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_ylim(-0.05, 1.05)
    axes[-1].grid(alpha=0.3)
    axes[-1].legend(loc="upper right", fontsize="small", ncol=4)
    footer = log.footer or {}
    verdict = "PASSED" if footer.get("passed") else ("FAILED" if footer else "incomplete log")
    figure.suptitle(f"{log.header['scenario']} — seed {log.header['seed']}, {log.header['runtime']} — {verdict}")
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
