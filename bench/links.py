"""Benchmark the links: lockstep ticks per second and round trips per firmware and transport, real-time pacing.

    python3 bench/links.py [--seconds 10] [--realtime-seconds 60] [--out bench/results/links.json]

Figures:
- lockstep ticks/s and round trip p50/p99 for the C firmware over UDP, the Python firmware over
  UDP and the C firmware as a board on its own pseudo-terminal (``--pty``), opened by pyserial
  at 921600 baud, each with the exchange compiled into the tick loop (the default) and, in the
  same run, with one compiled call and a Python exchange per tick; and the in-process tick as
  the baseline (no link at all);
- real time at 1 kHz with the C firmware over UDP: period error p50/p99/max and overruns.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hil.timings import Timings

ROOT = Path(__file__).resolve().parent.parent


def figures(result):
    stats = result.link_stats
    rtt = stats.round_trips if stats else Timings()
    return {"ticks_per_second": (result.trace.ticks_done - 1) / result.wall_seconds,
            "round_trip_p50_us": rtt.percentile(50) * 1e6, "round_trip_p99_us": rtt.percentile(99) * 1e6,
            "failure": result.failure}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per lockstep run")
    parser.add_argument("--realtime-seconds", type=float, default=60.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "links.json"))
    args = parser.parse_args()

    from hil import firmware_process, jaxconfig, runner, scenario

    jaxconfig.configure()

    base = scenario.load(ROOT / "scenarios" / "hover.yaml")
    loaded = dataclasses.replace(base, duration=args.seconds, expect=[])
    results = {"in_process": figures(runner.run(loaded, runtime="in-process"))}
    for suffix, compiled in (("", True), ("_per_tick", False)):
        results["c_udp" + suffix] = figures(runner.run(loaded, runtime="c", compiled_exchange=compiled))
        results["python_udp" + suffix] = figures(runner.run(loaded, runtime="python", compiled_exchange=compiled))
        board, terminal = firmware_process.start_on_pty(loaded)
        with board:
            results["c_pty_921600" + suffix] = figures(runner.run(
                loaded, board=runner.Board(port=terminal, baud=921600), realtime=False, compiled_exchange=compiled))
    for name in ("c_udp", "python_udp", "c_pty_921600"):
        results[name]["over_per_tick"] = (results[name]["ticks_per_second"]
                                          / results[name + "_per_tick"]["ticks_per_second"])

    realtime = runner.run(dataclasses.replace(base, duration=args.realtime_seconds, expect=[]), runtime="c",
                          realtime=True)
    error = realtime.link_stats.period_errors
    results["realtime_c_udp_1khz"] = {
        "seconds": args.realtime_seconds, "period_error_p50_us": error.percentile(50) * 1e6,
        "period_error_p99_us": error.percentile(99) * 1e6, "period_error_max_us": error.max() * 1e6,
        "overruns": realtime.link_stats.overruns, "late_replies": realtime.link_stats.late_replies,
        "lost_replies": realtime.link_stats.lost_replies, **figures(realtime)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'lockstep':22s} {'ticks/s':>10s} {'RTT p50 µs':>11s} {'RTT p99 µs':>11s} {'÷ per tick':>11s}")
    for name in ("in_process", "c_udp", "c_udp_per_tick", "python_udp", "python_udp_per_tick", "c_pty_921600",
                 "c_pty_921600_per_tick"):
        r = results[name]
        ratio = f"{r['over_per_tick']:10.2f}x" if "over_per_tick" in r else ""
        print(f"{name:22s} {r['ticks_per_second']:10.0f} {r['round_trip_p50_us']:11.0f} {r['round_trip_p99_us']:11.0f} "
              f"{ratio:>11s}" + (f"  FAILED: {r['failure']}" if r["failure"] else ""))
    r = results["realtime_c_udp_1khz"]
    print(f"real time 1 kHz, C over UDP, {r['seconds']:g} s: period error p50 {r['period_error_p50_us']:.1f} µs, "
          f"p99 {r['period_error_p99_us']:.1f} µs, max {r['period_error_max_us']:.0f} µs; {r['overruns']} overruns, "
          f"{r['late_replies']} late and {r['lost_replies']} lost replies")
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
