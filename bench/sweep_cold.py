"""Benchmark the whole of `hil sweep` from a cold start: the command a user types, compilation included.

    python3 bench/sweep_cold.py [--runs 1000] [--rounds 2] [--out bench/results/sweep_cold.json]

Each round runs `hil sweep scenarios/hover_sweep.yaml --runs N` in a process of its own twice:
first with an empty compilation cache (a new HIL_CACHE_DIR: tracing, XLA's compilation and every
import included), then again with that cache warm, the baseline of the same round. It reports
each process's wall time, CPU time and peak memory, the time the sweep gives for its first
chunk's results, and the cold start's cost as cold wall / warm wall. Both runs of a round must
write the same members.csv, byte for byte. The machine here is shared and noisy: compare the
figures of one run.
"""

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "hover_sweep.yaml"


def sweep_once(runs: int, cache: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hil", "sweep", str(SCENARIO), "--runs", str(runs), "--out", str(out),
                           "-q"], capture_output=True, text=True, env={**os.environ, "HIL_CACHE_DIR": str(cache)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"hil sweep exited {done.returncode}:\n{done.stderr[-2000:]}")
    said = done.stdout + done.stderr
    first = re.search(r"first chunk of \d+ after ([\d.]+) s", said)
    ticks = re.search(r"([\d,]+) member-ticks in", said)
    return {"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime
                                                      - before.ru_stime, 2),
            "first_chunk_s": float(first.group(1)) if first else None,
            "member_ticks_per_s": round(int(ticks.group(1).replace(",", "")) / wall) if ticks else None,
            "peak_rss_mb": round(after.ru_maxrss / 1024)}  # the largest child's so far


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep_cold.json")
    arguments = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as scratch:
        for number in range(arguments.rounds):
            cache = Path(scratch) / f"cache{number}"
            cold = sweep_once(arguments.runs, cache, Path(scratch) / f"cold{number}")
            warm = sweep_once(arguments.runs, cache, Path(scratch) / f"warm{number}")
            same = (Path(scratch) / f"cold{number}" / "members.csv").read_bytes() == \
                (Path(scratch) / f"warm{number}" / "members.csv").read_bytes()
            rounds.append({"cold": cold, "warm": warm, "cold_over_warm": round(cold["wall_s"] / warm["wall_s"], 2),
                           "same_members_csv": same})
            print(f"round {number + 1}: cold {cold['wall_s']:.1f} s wall ({cold['cpu_s']:.0f} s CPU, first chunk "
                  f"after {cold['first_chunk_s']} s), warm {warm['wall_s']:.1f} s ({warm['cpu_s']:.0f} s CPU), "
                  f"cold / warm {cold['wall_s'] / warm['wall_s']:.2f}, same members.csv: {same}", flush=True)
            if not same:
                sys.exit("the cold and warm sweeps wrote different members.csv")
    result = {"bench": "sweep_cold", "scenario": SCENARIO.name, "runs": arguments.runs,
              "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "when": time.strftime("%Y-%m-%d %H:%M"), "rounds": rounds}
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
