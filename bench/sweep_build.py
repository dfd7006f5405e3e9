"""Benchmark building a sweep's members on the host: members a second, by a thread and by processes.

    python3 bench/sweep_build.py [--processes 0 2] [--chunk 1024] [--out bench/results/sweep_build.json]

Before a chunk flies, the host builds each member: its draws, its scenario's checks (the landing
gear's stability among them), its tick parameters and its state before tick 0
(``hil.sweep.build_chunk``). On a CPU-only host a thread does it while the chunk before flies;
beside a GPU ``hil sweep`` builds in processes (``--build-processes``), since one core builds a
GPU's chunk of 16,384 members in about half a minute. For each number of processes (0: this
process, as a thread does) this builds one chunk of scenarios/hover_sweep.yaml to start the
processes and compile the draws, then times two more chunks, nothing flying meanwhile. The machine
here is shared and noisy: compare figures of the same run.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[0, len(os.sched_getaffinity(0))])
    parser.add_argument("--chunk", type=int, default=1024, help="members a chunk")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep_build.json")
    args = parser.parse_args()

    from hil import jaxconfig

    jaxconfig.configure()
    from hil import scenario, sweep

    loaded = scenario.load(ROOT / "scenarios" / "hover_sweep.yaml")
    plan = sweep.plan(loaded, 3 * args.chunk)
    figures = []
    for processes in args.processes:
        job = sweep.ChunkPlan(dataclasses.replace(loaded, sweep=None), plan, args.chunk, False,
                              None, processes)
        with sweep.member_builders(processes) as builders:
            sweep.build_chunk(job, range(args.chunk), builders)  # the processes started, the draws compiled
            rates = []
            for first in (args.chunk, 2 * args.chunk):
                started = time.perf_counter()
                sweep.build_chunk(job, range(first, first + args.chunk), builders)
                rates.append(round(args.chunk / (time.perf_counter() - started)))
        entry = {"processes": processes, "members_per_s": rates}
        figures.append(entry)
        print(json.dumps(entry), flush=True)
    result = {"what": "hil.sweep.build_chunk of scenarios/hover_sweep.yaml, nothing flying", "chunk": args.chunk,
              "builds": figures, "cores": len(os.sched_getaffinity(0)),
              "machine": {"python": sys.version.split()[0], "platform": platform.platform()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":  # the builders are started with spawn: each imports this file again
    main()
