"""Paths and helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import os
import sys
from pathlib import Path

import pytest

# Under pytest -n, tests in one group run on one worker, one after another. Betaflight's SITL
# listens on fixed ports, so two at once would collide (and a test that finds one running skips);
# a local Ray cluster is a set of processes a test expects to have to itself.
SITL_PORTS = pytest.mark.xdist_group("betaflight-sitl")
RAY_CLUSTER = pytest.mark.xdist_group("ray-cluster")

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

# For sweeps of hover cut to 2 s (dispersed_hover): bounds near the middle of the members' values
# (measured), so that each expectation passes for some members and fails for others, and a
# member flown differently would change its verdict.
SPLITTING_EXPECT = [
    {"name": "level", "never_above": {"quantity": "tilt_deg", "bound": 1.8}},
    {"name": "stays low", "never_above": {"quantity": "altitude", "bound": 0.9}},
    {"name": "over home", "within": {"quantity": "north", "after": 1.0, "min": -0.05, "max": 0.05}},
    {"name": "climbs gently", "never_below": {"quantity": "velocity_down", "bound": -1.5}},
    {"name": "climbs high", "reach": {"point": [0, 0, -0.88], "tolerance": 0.05, "before": 2.0}},
]
HOVER_DISPERSIONS = [
    {"key": "vehicle.mass", "uniform": {"low": 1.35, "high": 1.65}},
    {"key": "environment.wind.steady", "normal": {"mean": [0, 0, 0], "sigma": [1.0, 1.0, 0.1]}},
    {"key": "sensors.imu.gyro_bias_random_walk", "normal": {"mean": 4.0e-5, "sigma": 2.0e-5, "min": 0}},
]


def dispersed_hover(expect, runs: int, seed: int, require: float = 0.9, dispersions=HOVER_DISPERSIONS):
    """hover.yaml cut to 2 s, armed at 0.2 s, with these expectations and a sweep section."""
    from hil import scenario

    return scenario.with_changes(scenario.load(SCENARIOS / "hover.yaml"), {
        "duration": 2.0, "firmware.arm_at": 0.2, "expect": expect,
        "sweep": {"runs": runs, "seed": seed, "require": require, "dispersions": dispersions}})


def scenario_problems(text: str) -> list[str]:
    """Every problem scenario validation finds in ``text``, as the lines a user would read."""
    from hil import scenario

    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.parse_text(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


def jax_platforms() -> str | None:
    """JAX's platforms setting in the process that calls this (a builder process, for one)."""
    import jax
    return jax.config.jax_platforms


def hil_command(*args):
    return [sys.executable, "-m", "hil", *args]


def sitl_processes(parent: int | None = None) -> list[int]:
    """The process ids of the Betaflight SITL programs running here (those of ``parent`` only, if given)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    argv0 = cmdline.read().split(b"\0")[0]
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    parent_of = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if argv0.endswith(b"_SITL") and b"betaflight" in argv0 and parent in (None, parent_of):
                found.append(int(entry))
    return found


def betaflight_missing() -> str | None:
    """Why Betaflight's SITL cannot fly here, or None when it can."""
    from hil.bridges import betaflight
    from hil.bridges.link import LinkError

    try:
        betaflight.find_sitl()
    except LinkError as error:
        return str(error)
    if sitl_processes():
        return "a Betaflight SITL is already running on this machine, and its ports are fixed"
    return None


MISSED_REAL_TIME = 0.01  # overruns per tick beyond which a real-time run tested the machine, not the firmware


def missed_real_time(log_path) -> str | None:
    """Why a real-time run's own log says it did not hold real time (its overruns past 1 % of its
    ticks), or None. Betaflight's SITL flies in real time, so a machine starved for a moment
    (measured: 1389 overruns in 24,001 ticks, the period late by up to 34 ms, half the replies
    lost) flies it badly however sound the firmware is; a run that held real time had 70."""
    import re

    from hil import flightlog

    footer = flightlog.read(log_path).footer
    period = dict(map(tuple, footer.get("link") or [])).get("period error", "")
    found = re.search(r"(\d+) overruns", period)
    if found and int(found.group(1)) > MISSED_REAL_TIME * footer["ticks"]:
        return f"{found.group(1)} overruns in {footer['ticks']} ticks ({period})"
    return None
