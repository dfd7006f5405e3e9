"""Paths and helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def scenario_problems(text: str) -> list[str]:
    """Every problem scenario validation finds in ``text``, as the lines a user would read."""
    import pytest

    from hil import scenario

    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.parse_text(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


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
