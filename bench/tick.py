"""Benchmark the compiled tick: per-call latency against the same tick in NumPy, and start-up time.

    python3 bench/tick.py [--calls 20000] [--out bench/results/tick.json]

Figures (median and p99 of one call, NumPy in and out as a link needs them):
- link tick: physics + sensors, command in from the host (what a UDP or serial link calls);
- in-process tick: the same plus the emulated firmware;
- empty tick: a compiled tick that computes nothing, with the link tick's arguments and results:
  what a call from Python costs before any physics (the floor for the two above);
- link tick between frames: the link tick with a UDP frame sent, received and decoded between
  calls, as in a lockstep run, where the call finds the processor's caches cold;
- link tick in a compiled loop: per tick, 256 link ticks as the body of one compiled loop with
  their rows to NumPy (the loop replay runs, and the lockstep exchange loop runs around its
  frames): what a tick costs once the call's floor is paid per batch, not per tick;
- the NumPy tick (bench/numpy_tick.py), measured in the same run, and the ratio;
- start-up from process start to tick 0, with a cold and with a warm compilation cache, as an
  in-process ``hil run`` starts: the loop of ticks compiled (or loaded), and its first call;
  and, with the cache warm, for a seed never flown before against the seed flown: the program is
  keyed on the scenario's structure, not its numbers, so the two should be alike (their ratio).
Machines here are shared and noisy, so the ratio in the same run is the figure to compare.
"""

import argparse
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

STARTUP_PROBE = """
import time, sys
t0 = float(sys.argv[1])
import numpy as np
from hil import jaxconfig, runner, scenario
jaxconfig.configure()
from hil.sim import Simulation
s = runner.with_overrides(scenario.load(sys.argv[2]), seed=int(sys.argv[3]) if len(sys.argv) > 3 else None)
program = Simulation(s).compile_batch(runner.IN_PROCESS_BATCH)
state, rows = program.advance_many(program.initial, np.int32(1))
print(time.time() - t0)
"""


LOOP_TICKS = 256


def latency(call, calls, between=None):
    """Figures of ``call``'s duration; ``between`` runs before each call, untimed."""
    for _ in range(min(2000, calls)):
        call()
    samples = np.empty(calls)
    for i in range(calls):
        if between is not None:
            between()
        started = time.perf_counter()
        call()
        samples[i] = time.perf_counter() - started
    return {"median_us": float(np.median(samples) * 1e6), "p99_us": float(np.percentile(samples, 99) * 1e6),
            "min_us": float(samples.min() * 1e6)}


def startup(scenario_path, cache_dir, seed: int | None = None):
    env = dict(os.environ, HIL_CACHE_DIR=str(cache_dir))
    seed_argument = [] if seed is None else [str(seed)]
    result = subprocess.run([sys.executable, "-c", STARTUP_PROBE, repr(time.time()), str(scenario_path), *seed_argument],
                            capture_output=True, text=True, env=env, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "hover.yaml"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tick.json"))
    args = parser.parse_args()

    from numpy_tick import NumpyTick

    import jax
    import jax.numpy as jnp

    from hil import jaxconfig, scenario, wire

    jaxconfig.configure()
    from hil.pages import SharedInput
    from hil.sim import MOTORS, Simulation

    loaded = scenario.load(args.scenario)
    link = Simulation(loaded, in_process_firmware=False)
    link_tick = link.compile()
    in_process_tick = Simulation(loaded).compile()
    empty_tick = dataclasses.replace(
        link_tick, command_input=SharedInput(MOTORS),
        call=jax.jit(lambda state, params, command: (state, jnp.zeros(link.width) + command[0]), donate_argnums=0)
        .lower(link_tick.initial, link_tick.params, np.zeros(MOTORS)).compile())
    command = np.full(4, 0.6)
    box = {"link": link_tick.initial, "in_process": in_process_tick.initial, "empty": empty_tick.initial}

    def call_link():
        box["link"], row = link_tick.advance(box["link"], command)
        return row

    def call_in_process():
        box["in_process"], row = in_process_tick.advance(box["in_process"])
        return row

    def call_empty():
        box["empty"], row = empty_tick.advance(box["empty"], command)
        return row

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    frame = wire.encode(wire.Sensors(1, 1000, 0b1011, tuple(np.linspace(-1.0, 1.0, 17))))

    def between_frames():
        peer.sendto(frame, peer.getsockname())
        wire.decode(peer.recvfrom(2048)[0][:-1])

    reference = NumpyTick(link)
    counter = iter(range(10**9))

    def call_numpy():
        return reference.advance(command, next(counter))

    figures = {"link_tick": latency(call_link, args.calls), "numpy_tick": latency(call_numpy, args.calls // 4),
               "in_process_tick": latency(call_in_process, args.calls), "empty_tick": latency(call_empty, args.calls),
               "link_tick_between_frames": latency(call_link, args.calls, between_frames)}
    batch = link.compile_batch(LOOP_TICKS)
    commands = np.full((LOOP_TICKS, MOTORS), 0.6)
    box["loop"] = batch.initial

    def call_loop():
        box["loop"], rows = batch.advance_many(box["loop"], commands, np.int32(LOOP_TICKS))
        return np.asarray(rows)

    per_loop = latency(call_loop, max(args.calls // LOOP_TICKS, 50))
    figures["link_tick_in_loop"] = {name: value / LOOP_TICKS for name, value in per_loop.items()}
    figures["numpy_over_link_median"] = figures["numpy_tick"]["median_us"] / figures["link_tick"]["median_us"]
    figures["numpy_over_link_in_loop_median"] = (figures["numpy_tick"]["median_us"]
                                                 / figures["link_tick_in_loop"]["median_us"])
    with tempfile.TemporaryDirectory() as cache:
        figures["startup_cold_s"] = startup(args.scenario, cache)
        figures["startup_warm_s"] = min(startup(args.scenario, cache) for _ in range(3))
        # Interleaved, so that a slow spell of the machine falls on both.
        cached, new = [], []
        for attempt in range(3):
            cached.append(startup(args.scenario, cache, loaded.seed))
            new.append(startup(args.scenario, cache, 10_000_000 + int(time.time() * 1000) % 10**9 + attempt))
        figures["startup_cached_seed_s"], figures["startup_new_seed_s"] = min(cached), min(new)
        figures["startup_new_over_cached_seed"] = min(new) / min(cached)
    figures["machine"] = {"python": platform.python_version(), "jax": jax.__version__, "cpus": os.cpu_count(),
                          "platform": platform.platform(), "device": str(jax.devices()[0])}
    figures["scenario"] = Path(args.scenario).name
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")

    print(f"{'tick':26s} {'median µs':>10s} {'p99 µs':>10s} {'min µs':>10s}")
    for name in ("link_tick", "in_process_tick", "empty_tick", "link_tick_between_frames", "link_tick_in_loop",
                 "numpy_tick"):
        f = figures[name]
        print(f"{name:26s} {f['median_us']:10.1f} {f['p99_us']:10.1f} {f['min_us']:10.1f}")
    print(f"NumPy / compiled link tick (median): {figures['numpy_over_link_median']:.2f}x, "
          f"in a compiled loop {figures['numpy_over_link_in_loop_median']:.0f}x")
    print(f"start-up to tick 0: cold {figures['startup_cold_s']:.2f} s, warm {figures['startup_warm_s']:.2f} s")
    print(f"start-up to tick 0, warm: seed never flown {figures['startup_new_seed_s']:.2f} s, seed flown "
          f"{figures['startup_cached_seed_s']:.2f} s ({figures['startup_new_over_cached_seed']:.2f}x)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
