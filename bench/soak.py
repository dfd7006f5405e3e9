"""Soak: a long lockstep run in bounded memory. Resident memory against simulated time.

    python3 bench/soak.py [--hours 1] [--runtime c] [--out bench/results/soak.json]

Flies the hover scenario for ``--hours`` of simulated time in lockstep (the C firmware over UDP,
exchange compiled into the tick loop, by default), recording the flight log as a run does, and
samples the process's resident memory (VmRSS) as the run goes. Figures: RSS after compiling,
at each tenth of the run and at its peak, the growth over the second half (flat is the goal;
the target is under 500 MB for an hour), ticks/s and the log's size.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours")
    parser.add_argument("--runtime", default="c", choices=("c", "in-process"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()

    from hil import jaxconfig, runner, scenario

    jaxconfig.configure()

    base = scenario.load(ROOT / "scenarios" / "hover.yaml")
    loaded = dataclasses.replace(base, duration=args.hours * 3600)
    samples = []  # (simulated s, RSS MB)

    def progress(tick, last, elapsed):
        samples.append((tick / loaded.physics.rate_hz, rss_mb()))
        print(f"\r{tick / loaded.physics.rate_hz:8.0f} s simulated, {elapsed:6.0f} s wall, RSS {samples[-1][1]:6.0f} MB",
              end="", file=sys.stderr, flush=True)

    before = rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "soak.hillog"
        started = time.perf_counter()
        result = runner.run(loaded, runtime=args.runtime, progress=progress, progress_interval=1.0, log_path=log)
        wall = time.perf_counter() - started
        log_bytes = log.stat().st_size
    print(file=sys.stderr)
    rss = [mb for _, mb in samples]
    half = len(rss) // 2
    tenths = [samples[min(len(samples) - 1, round(i * (len(samples) - 1) / 10))] for i in range(11)]
    results = {
        "simulated_seconds": loaded.duration, "runtime": args.runtime, "passed": result.passed,
        "failure": result.failure, "ticks": result.trace.ticks_done, "wall_seconds": wall,
        "ticks_per_second": (result.trace.ticks_done - 1) / result.wall_seconds,
        "rss_before_run_mb": before, "rss_peak_mb": max(rss), "rss_at_tenths_mb": [[t, mb] for t, mb in tenths],
        "rss_growth_second_half_mb": rss[-1] - rss[half], "log_bytes": log_bytes,
        "trace_rows_held": result.trace.rows.shape[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{args.hours:g} h simulated in lockstep ({args.runtime}): {'passed' if result.passed else 'FAILED'}, "
          f"{results['ticks_per_second']:.0f} ticks/s, log {log_bytes / 1e9:.2f} GB")
    print(f"RSS: {before:.0f} MB before the run, peak {max(rss):.0f} MB, "
          f"{results['rss_growth_second_half_mb']:+.0f} MB over the second half; trace holds "
          f"{results['trace_rows_held']} of {result.trace.ticks_done} rows")
    print("simulated s  RSS MB")
    for t, mb in tenths:
        print(f"{t:11.0f}  {mb:6.0f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
