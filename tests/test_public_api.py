"""hil from a Python script: the names ``import hil`` offers, and what importing hil leaves alone.

The checks of what importing does run in a fresh interpreter: this test process has JAX set up
already (conftest.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from support import ROOT, SCENARIOS

import hil


def python(script: str, env: dict | None = None, cwd=ROOT) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON object last, returned here."""
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                               cwd=cwd, timeout=600, env={**os.environ, **(env or {})})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_every_public_name_is_listed_and_resolves():
    assert "run" in hil.__all__ and "load_scenario" in hil.__all__
    for name in hil.__all__:
        assert getattr(hil, name) is not None, name
    assert set(hil.__all__) <= set(dir(hil))


def test_importing_hil_leaves_jax_settings_alone_until_configure():
    seen = python("""
        import json, os
        import jax
        import hil, hil.models, hil.models.quadrotor
        for name in hil.__all__:  # the runner, the replay, the log reader: imported, nothing flown
            getattr(hil, name)
        before = {"x64": jax.config.jax_enable_x64, "xla_flags": os.environ.get("XLA_FLAGS")}
        from hil import jaxconfig
        jaxconfig.configure()
        after = {"x64": jax.config.jax_enable_x64, "xla_flags": os.environ.get("XLA_FLAGS")}
        jaxconfig.configure()
        again = os.environ.get("XLA_FLAGS")
        print(json.dumps({"before": before, "after": after, "again": again}))
    """, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_ENABLE_X64": "0"})
    assert seen["before"] == {"x64": False, "xla_flags": "--xla_force_host_platform_device_count=1"}
    assert seen["after"]["x64"] is True
    flags = seen["after"]["xla_flags"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=1"  # the user's own flags kept, hil's added
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in flags
    assert seen["again"] == seen["after"]["xla_flags"]  # configure() twice is configure() once


def test_a_scenario_flown_changed_read_and_replayed_through_the_public_names(tmp_path):
    """What a user's script does: load, change, fly, read the log, replay it, and check the outcome."""
    outcome = python(f"""
        import json
        from pathlib import Path

        import hil

        hover = hil.load_scenario({str(SCENARIOS / "hover.yaml")!r})
        heavier = hil.with_changes(hover, {{"vehicle.mass": 1.6, "duration": 8.0, "firmware.runs": "in-process"}})
        result = hil.run(heavier, log_path=Path("heavier.hillog"), warn=lambda line: None)
        assert isinstance(result, hil.RunResult)
        log = hil.read_log(Path("heavier.hillog"))
        flown = hil.parse_scenario(log.header["scenario_text"])
        replayed = hil.replay_log(log)
        lighter = hil.replay_log(log, hil.with_changes(flown, {{"vehicle.mass": 1.5}}))
        altitude = log.header["layout"]["position"][0] + 2
        print(json.dumps({{
            "passed": result.passed, "outcomes": {{o.name: o.passed for o in result.outcomes}},
            "runtime": result.runtime, "ticks": len(log.ticks), "complete": log.complete,
            "footer_passed": log.footer["passed"], "logged_mass": flown.vehicle.mass,
            "final_altitude": -float(log.rows[-1][altitude]),
            "identical": replayed.identical, "compared": replayed.ticks,
            "lighter_identical": lighter.identical, "lighter_first": lighter.first_tick,
        }}))
    """, cwd=tmp_path)
    assert outcome["passed"] and outcome["footer_passed"] and outcome["complete"]
    assert outcome["outcomes"] == {"holds 2 m": True, "stays over home": True, "stays over home (east)": True,
                                   "stays level": True, "reaches 2 m": True}
    assert outcome["runtime"] == "in-process" and outcome["ticks"] == 8001
    assert abs(outcome["final_altitude"] - 2.0) < 0.3
    assert outcome["logged_mass"] == 1.6  # the log holds the scenario as flown
    assert outcome["identical"] and outcome["compared"] == 8001
    assert not outcome["lighter_identical"] and outcome["lighter_first"] is not None  # the mass mattered


def test_a_sweeps_program_compiles_with_its_xla_options_and_without_those_this_xla_lacks(monkeypatch):
    """hil.jaxconfig.compiled: a sweep's program gets hil's XLA options; an option a later XLA
    drops costs compilation time, never the sweep (the program is the same)."""
    import jax
    import numpy as np

    from hil import jaxconfig

    lowered = jax.jit(lambda x: x * 2.0 + 1.0).lower(np.arange(4.0))
    assert jaxconfig.compiled(lowered)(np.arange(4.0)).tolist() == [1.0, 3.0, 5.0, 7.0]
    with pytest.raises(Exception, match="No such compile option"):  # what compiled() recognises
        lowered.compile(compiler_options={"xla_hil_no_such_option": True})
    monkeypatch.setattr(jaxconfig, "COMPILER_OPTIONS", {**jaxconfig.COMPILER_OPTIONS, "xla_hil_no_such_option": True})
    monkeypatch.setattr(jaxconfig, "_options_known", True)
    assert jaxconfig.compiled(lowered)(np.arange(4.0)).tolist() == [1.0, 3.0, 5.0, 7.0]
    assert jaxconfig._options_known is False  # asked once: the next program compiles without them at once
