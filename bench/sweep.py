"""Benchmark hil sweep: member-ticks per second of one compiled program over a chunk of members,
against the same members flown one after another as single in-process runs.

    python3 bench/sweep.py [--members 1 64 1024 8192] [--duration 20] [--alone 4] [--out bench/results/sweep.json]

The scenario is scenarios/hover_sweep.yaml (hover, all four sensors, the JAX quad_pid inside the
tick, mass, wind and IMU bias dispersed): its whole 20 s by default, or shortened to --duration
with its expectations' times scaled alike (--duration 2 is the worst case, the 2 s on the ground
before and during the climb, ground contact computed every tick). For each N:
- cold: the first sweep of N members, compilation (or loading it from the persistent cache)
  included, and the time to its first chunk's results;
- warm: the same sweep again, its program compiled: member-ticks/s over the whole sweep and over
  the compiled program alone (the rest is building each member's scenario and parameters on the
  host, which the figures give too);
- one after another: --alone of the same members flown by ``hil.runner.run`` in-process, the
  loop a process-per-run harness would run; their member-ticks/s and the ratio;
- the kernels XLA runs a tick: in the program's loop over ticks, those run every tick, and in each
  of its branches (a sensor due, ground contact, a batch-level value computed once), read from the
  compiled program, whatever its platform: what bounds a GPU's ticks per second;
- the arithmetic's limit: a bare 13-state quadrotor (rigid body, four rotor thrusts and torques,
  RK4, no sensors, firmware, air or ground), ``vmap``ped over the largest N and split over the
  same devices: vehicle-steps/s, and the sweep's ratio to it.
Peak resident memory of the process is reported at the end (it includes every N before, so it is
the largest N's). The machine here is shared and noisy: compare figures of the same run.
"""

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 64, 1024, 8192])
    parser.add_argument("--chunk", type=int, default=1024, help="members per compiled call, at most")
    parser.add_argument("--devices", type=int, help="devices to split a chunk over (default: all)")
    parser.add_argument("--duration", type=float, help="seconds of flight per member (default: the scenario's "
                                                       "20 s; its first 2 s are on the ground, contact every tick)")
    parser.add_argument("--alone", type=int, default=4, help="members flown one after another")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep.json")
    args = parser.parse_args()

    from hil import jaxconfig

    jaxconfig.configure()
    import jax

    from hil import runner, scenario, sweep

    full = scenario.load(ROOT / "scenarios" / "hover_sweep.yaml")
    loaded = full if args.duration is None else \
        scenario.with_changes(full, {"duration": args.duration, "expect": scaled(full, args.duration)})
    ticks = loaded.ticks + 1
    figures, censuses = [], {}
    for members in args.members:
        chunk = min(members, args.chunk)
        compiled_before = len(sweep._EXECUTABLES)
        cold = sweep.fly(loaded, runs=members, chunk=chunk, devices=args.devices)
        warm = sweep.fly(loaded, runs=members, chunk=chunk, devices=args.devices)
        for program in list(sweep._EXECUTABLES.values())[compiled_before:][:1]:  # a chunk's program, once
            censuses[chunk] = kernel_census(program.as_text())
        entry = {
            "members": members, "chunk": chunk, "member_ticks": warm.member_ticks,
            "cold_seconds": round(cold.wall_seconds, 3), "first_chunk_seconds_cold": round(cold.first_chunk_seconds, 3),
            "warm_seconds": round(warm.wall_seconds, 3), "program_seconds": round(warm.flight_seconds, 3),
            "member_ticks_per_s": round(warm.member_ticks / warm.wall_seconds),
            "member_ticks_per_s_program": round(warm.member_ticks / warm.flight_seconds),
            "host_ms_per_member": round((warm.wall_seconds - warm.flight_seconds) / members * 1e3, 3),
            **censuses.get(chunk, {}),
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
    bare = bare_quadrotor(max(args.members), ticks, args.devices)
    print(json.dumps({"bare_quadrotor": bare}), flush=True)
    best = max(figures, key=lambda f: f["member_ticks_per_s"])
    result = {
        "what": "hil sweep of scenarios/hover_sweep.yaml (hover, imu baro mag gps, quad_pid in JAX inside the tick)",
        "duration_s": loaded.duration, "ticks_per_member": ticks, "sweeps": figures, "one_after_another": one_by_one,
        "best_over_one_after_another": round(best["member_ticks_per_s"] / one_by_one["member_ticks_per_s"], 2),
        "bare_quadrotor": bare,
        "best_program_over_bare": round(best["member_ticks_per_s_program"] / bare["vehicle_steps_per_s"], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"python": sys.version.split()[0], "jax": jax.__version__, "platform": platform.platform(),
                    "cpu": cpu(),
                    "devices": [str(d) for d in jax.devices()][:args.devices]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"best {best['member_ticks_per_s']:,} member-ticks/s at N = {best['members']}; one after another "
          f"{one_by_one['member_ticks_per_s']:,}; ratio {result['best_over_one_after_another']}; bare quadrotor "
          f"{bare['vehicle_steps_per_s']:,} vehicle-steps/s (the sweep's program: {result['best_program_over_bare']:.1%} "
          f"of it); peak RSS {result['peak_rss_mb']} MB; wrote {args.out}")


def cpu() -> str:
    """The processor's model, widest vector extension and cores: figures differ twofold between
    the machines this project is measured on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    widest = next((isa for isa in ("avx512f", "avx2") if flags and isa in flags.group(1).split()), "no AVX2")
    return f"{model.group(1) if model else platform.processor()}, {widest}, {os.cpu_count()} cores"


def bare_quadrotor(members: int, ticks: int, devices: int | None) -> dict:
    """Vehicle-steps/s of a bare 13-state quadrotor under RK4, vmapped and split over the devices
    as a sweep is: the most this machine's arithmetic allows a tick with everything taken out."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    mass, inertia, arm, lift, drag, dt = 1.5, np.array([0.02, 0.02, 0.04]), 0.17, 8.5e-6, 1.4e-7, 1e-3

    def derivative(x, speed):
        velocity, q, rate = x[3:6], x[6:10], x[10:13]
        thrust = lift * speed**2
        w, i, j, k = q
        up = jnp.stack([2 * (i * k + w * j), 2 * (j * k - w * i), 1 - 2 * (i * i + j * j)])  # body -z in NED: -up
        force = -jnp.sum(thrust) * up + jnp.array([0.0, 0.0, mass * 9.80665])
        torque = jnp.stack([arm * (thrust[1] + thrust[2] - thrust[0] - thrust[3]) / np.sqrt(2),
                            arm * (thrust[0] + thrust[2] - thrust[1] - thrust[3]) / np.sqrt(2),
                            drag * jnp.sum(jnp.array([1.0, 1.0, -1.0, -1.0]) * speed**2)])
        q_dot = 0.5 * jnp.stack([-i * rate[0] - j * rate[1] - k * rate[2], w * rate[0] + j * rate[2] - k * rate[1],
                                 w * rate[1] + k * rate[0] - i * rate[2], w * rate[2] + i * rate[1] - j * rate[0]])
        rate_dot = (torque - jnp.cross(rate, inertia * rate)) / inertia
        return jnp.concatenate([velocity, force / mass, q_dot, rate_dot])

    def step(x, speed):
        k1 = derivative(x, speed)
        k2 = derivative(x + dt / 2 * k1, speed)
        k3 = derivative(x + dt / 2 * k2, speed)
        k4 = derivative(x + dt * k3, speed)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x.at[6:10].set(x[6:10] / jnp.linalg.norm(x[6:10]))

    def fly(x, speed):
        return jax.lax.scan(lambda x, _: (jax.vmap(step)(x, speed), None), x, None, length=ticks)[0]

    spread = jax.local_devices()[:devices]
    share = -(-members // len(spread))
    program = jax.jit(fly)
    rng = np.random.default_rng(0)
    parts = []
    for device in spread:
        start = np.zeros((share, 13))
        start[:, 6] = 1.0
        speed = 650.0 + rng.uniform(-5, 5, (share, 4))
        parts.append((jax.device_put(start, device), jax.device_put(speed, device)))
    for x, speed in parts:
        jax.block_until_ready(program(x, speed))  # compiled, once a device
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(len(spread)) as pool:
        list(pool.map(lambda part: jax.block_until_ready(program(*part)), parts))
    seconds = time.perf_counter() - started
    return {"members": share * len(spread), "ticks": ticks, "seconds": round(seconds, 3),
            "vehicle_steps_per_s": round(share * len(spread) * ticks / seconds)}


# HLO instructions that launch no kernel: they name, pack or unpack buffers. Loops, branches and
# calls are walked into.
_NOT_KERNELS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier",
                "partition-id", "replica-id", "add-dependency"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = .*? ([a-z][a-z0-9\-]*)\((.*)$")


def kernel_census(hlo: str) -> dict:
    """The kernels of a compiled sweep program's loop over ticks (its optimised HLO text): those
    every tick runs, the conditionals every tick evaluates, and the kernels of each branch of each
    (a branch's own branches counted at their largest)."""
    computations, current = {}, None
    for line in hlo.splitlines():
        if not line.startswith((" ", "}")) and line.rstrip().endswith("{"):
            current = computations.setdefault(line.removeprefix("ENTRY ").lstrip("%").split(" ")[0], [])
            if line.startswith("ENTRY"):
                computations[""] = current
        elif line.startswith("}"):
            current = None
        elif current is not None and (match := _INSTRUCTION.match(line)):
            current.append(match.groups())

    def called(operands: str, attribute: str) -> list[str]:
        match = re.search(attribute + r"=(?:\{([^}]*)\}|([^,\s]+))", operands)
        return [name.strip().lstrip("%") for name in (match[1] or match[2]).split(",")] if match else []

    def walk(name: str) -> tuple[int, list[list[int]]]:
        kernels, branches = 0, []
        for opcode, operands in computations[name]:
            if opcode == "call":
                inner, inner_branches = walk(called(operands, "to_apply")[0])
                kernels, branches = kernels + inner, branches + inner_branches
            elif opcode == "conditional":
                names = called(operands, "branch_computations") or [*called(operands, "true_computation"),
                                                                     *called(operands, "false_computation")]
                branches.append([inner + sum(max(b) for b in nested) for inner, nested in map(walk, names)])
            elif opcode not in _NOT_KERNELS | {"while"}:
                kernels += 1
        return kernels, branches

    loop = next(operands for opcode, operands in computations[""] if opcode == "while")
    every_tick, branches = walk(called(loop, "body")[0])
    return {"kernels_every_tick": every_tick, "conditionals_every_tick": len(branches),
            "kernels_in_branches": branches}


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
