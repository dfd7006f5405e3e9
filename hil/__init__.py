"""hil: a flight-software hardware-in-the-loop harness.

What a script needs, from this one module::

    import hil

    hover = hil.load_scenario("scenarios/hover.yaml")
    heavier = hil.with_changes(hover, {"vehicle.mass": 1.6, "duration": 8.0, "firmware.runs": "in-process"})
    result = hil.run(heavier, log_path="heavier.hillog")     # a RunResult: result.passed, result.outcomes
    log = hil.read_log("heavier.hillog")                     # a FlightLog: header, ticks, footer
    assert hil.replay_log(log).identical                     # the physics again, bit for bit

Importing hil loads nothing heavy and changes none of JAX's settings: each name is imported when
first used, and JAX is set up for hil (:func:`hil.jaxconfig.configure`) when a run or a replay
starts.
"""

import importlib

__version__ = "0.1.0"

# Public name: (module, attribute), imported on first use: the runner pulls in JAX.
_PUBLIC = {
    "Scenario": ("hil.scenario", "Scenario"),
    "ScenarioError": ("hil.scenario", "ScenarioError"),
    "load_scenario": ("hil.scenario", "load"),
    "parse_scenario": ("hil.scenario", "parse_text"),
    "with_changes": ("hil.scenario", "with_changes"),
    "run": ("hil.runner", "run"),
    "RunResult": ("hil.runner", "RunResult"),
    "RunRefused": ("hil.runner", "RunRefused"),
    "Board": ("hil.runner", "Board"),
    "read_log": ("hil.flightlog", "read"),
    "FlightLog": ("hil.flightlog", "FlightLog"),
    "LogReader": ("hil.flightlog", "LogReader"),
    "LogError": ("hil.flightlog", "LogError"),
    "replay_log": ("hil.replay", "replay"),
    "ReplayResult": ("hil.replay", "ReplayResult"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'hil' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})
