"""Benchmark hil sweep: member-ticks per second of one compiled program over a chunk of members,
against the same members flown one after another as single in-process runs.

    python3 bench/sweep.py [--members 1 64 1024] [--duration 2] [--alone 4] [--out bench/results/sweep.json]

The scenario is scenarios/hover_sweep.yaml (hover, all four sensors, the JAX quad_pid inside the
tick, mass, wind and IMU bias dispersed), shortened to --duration with its expectations' times
scaled alike. For each N:
- cold: the first sweep of N members, compilation (or loading it from the persistent cache)
  included, and the time to its first chunk's results;
- warm: the same sweep again, its program compiled: member-ticks/s over the whole sweep and over
  the compiled program alone (the rest is building each member's scenario and parameters on the
  host, which the figures give too);
- one after another: --alone of the same members flown by ``hil.runner.run`` in-process, the
  loop a process-per-run harness would run; their member-ticks/s and the ratio.
Peak resident memory of the process is reported at the end (it includes every N before). The
machine here is shared and noisy: compare figures of the same run.
"""

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--chunk", type=int, default=1024, help="members per compiled call, at most")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of flight per member")
    parser.add_argument("--alone", type=int, default=4, help="members flown one after another")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep.json")
    args = parser.parse_args()

    from hil import jaxconfig

    jaxconfig.configure()
    import jax

    from hil import runner, scenario, sweep

    full = scenario.load(ROOT / "scenarios" / "hover_sweep.yaml")
    loaded = scenario.with_changes(full, {"duration": args.duration, "expect": scaled(full, args.duration)})
    ticks = loaded.ticks + 1
    figures = []
    for members in args.members:
        chunk = min(members, args.chunk)
        cold = sweep.fly(loaded, runs=members, chunk=chunk)
        warm = sweep.fly(loaded, runs=members, chunk=chunk)
        entry = {
            "members": members, "chunk": chunk, "member_ticks": warm.member_ticks,
            "cold_seconds": round(cold.wall_seconds, 3), "first_chunk_seconds_cold": round(cold.first_chunk_seconds, 3),
            "warm_seconds": round(warm.wall_seconds, 3), "program_seconds": round(warm.flight_seconds, 3),
            "member_ticks_per_s": round(warm.member_ticks / warm.wall_seconds),
            "member_ticks_per_s_program": round(warm.member_ticks / warm.flight_seconds),
            "host_ms_per_member": round((warm.wall_seconds - warm.flight_seconds) / members * 1e3, 3),
        }
        figures.append(entry)
        print(json.dumps(entry), flush=True)
    plan = sweep.plan(loaded, args.alone)
    seeds, drawn = sweep.draws(loaded, plan, range(args.alone))
    alone = [sweep.member_scenario(loaded, plan, i, seeds[i], {k: v[i] for k, v in drawn.items()})
             for i in range(args.alone)]
    runner.run(alone[0], runtime="in-process")  # compiled (or loaded) once, as a sweep's program is
    started = time.perf_counter()
    for member in alone:
        runner.run(member, runtime="in-process")
    seconds = time.perf_counter() - started
    one_by_one = {"members": args.alone, "seconds": round(seconds, 3),
                  "member_ticks_per_s": round(args.alone * ticks / seconds)}
    print(json.dumps({"one_after_another": one_by_one}), flush=True)
    best = max(figures, key=lambda f: f["member_ticks_per_s"])
    result = {
        "what": "hil sweep of scenarios/hover_sweep.yaml (hover, imu baro mag gps, quad_pid in JAX inside the tick)",
        "duration_s": args.duration, "ticks_per_member": ticks, "sweeps": figures, "one_after_another": one_by_one,
        "best_over_one_after_another": round(best["member_ticks_per_s"] / one_by_one["member_ticks_per_s"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"python": sys.version.split()[0], "jax": jax.__version__, "platform": platform.platform(),
                    "devices": [str(d) for d in jax.devices()]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"best {best['member_ticks_per_s']:,} member-ticks/s at N = {best['members']}; one after another "
          f"{one_by_one['member_ticks_per_s']:,}; ratio {result['best_over_one_after_another']}; "
          f"peak RSS {result['peak_rss_mb']} MB; wrote {args.out}")


def scaled(loaded, duration: float) -> list[dict]:
    """The scenario's expectations with their times scaled to a flight of ``duration`` s: the same
    checks, each at the same fraction of the flight."""
    factor = duration / loaded.duration
    expect = []
    for expectation in loaded.expect:
        check = {key: value for key, value in dataclasses.asdict(expectation.check()).items() if value is not None}
        for key in ("after", "until", "before"):
            if key in check:
                check[key] *= factor
        expect.append({"name": expectation.name, expectation.kind(): check})
    return expect


if __name__ == "__main__":
    main()
