"""Paths and helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def hil_command(*args):
    return [sys.executable, "-m", "hil", *args]
