"""Benchmark the flight log: ticks per second with and without recording, log size per simulated minute,
and replay speed (ticks per second re-run from the logged commands, bit-identity checked).

    python3 bench/recording.py [--seconds 30] [--out bench/results/recording.json]

Runs the same scenario alternately with and without a log, in-process (no link, so recording is
the only difference) and with the C firmware over UDP (packets recorded too).
"""

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "recording.json"))
    args = parser.parse_args()

    from hil import flightlog, jaxconfig, replay, runner, scenario

    jaxconfig.configure()

    loaded = dataclasses.replace(scenario.load(ROOT / "scenarios" / "hover.yaml"), duration=args.seconds, expect=[])
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for runtime in ("in-process", "c"):
            rates = {"without": [], "with": []}
            size = 0
            for repeat in range(args.repeats):
                for mode in ("without", "with"):
                    path = Path(directory) / f"{runtime}-{repeat}.hillog" if mode == "with" else None
                    result = runner.run(loaded, runtime=runtime, log_path=path)
                    rates[mode].append((result.trace.ticks_done - 1) / result.wall_seconds)
                    if path is not None:
                        size = path.stat().st_size
                        replayed = replay.replay(flightlog.LogReader(path))
                        assert replayed.identical, replayed
                        replay_rate = replayed.ticks / replayed.wall_seconds
            best = {mode: max(values) for mode, values in rates.items()}
            results[runtime] = {"ticks_per_second_without_log": best["without"], "ticks_per_second_with_log": best["with"],
                                "recording_cost": 1 - best["with"] / best["without"],
                                "log_bytes_per_simulated_minute": size / args.seconds * 60,
                                "replay_ticks_per_second": replay_rate}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'runtime':12s} {'without':>10s} {'with log':>10s} {'cost':>7s} {'MB/sim min':>11s} {'replay/s':>9s}")
    for runtime, r in results.items():
        print(f"{runtime:12s} {r['ticks_per_second_without_log']:10.0f} {r['ticks_per_second_with_log']:10.0f} "
              f"{100 * r['recording_cost']:6.1f}% {r['log_bytes_per_simulated_minute'] / 1e6:11.1f} "
              f"{r['replay_ticks_per_second']:9.0f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
