"""Benchmark the STM32F405 board image on QEMU, in both precisions of its controller.

    python3 bench/qemu_board.py [--seconds 6] [--out bench/results/qemu_board.json]

hover.yaml cut to --seconds, in lockstep, every flight in the same run:
- ticks/s and round trip p50 of the QEMU board (``qemu://stm32f405?precision=float64`` and
  ``float32``) against the POSIX C firmware as a board on its own pty (``start_on_pty``), and
  start to HELLO answered (``startup_seconds``: QEMU's start, the boot and HELLO);
- the image's size (``arm-none-eabi-size``): flash (code, constants, .data's initial values) and
  RAM (.data and .bss; the 8 KiB stack comes on top);
- instructions of the controller's step (``quad_pid_step``) per call, and of the whole loop round
  per tick (receive, decode, step, encode, send, interrupts), counted in a second flight of each
  image by a QEMU TCG plugin (bench/qemu_insn_plugin.c): mean, p99 and max over the ticks, the
  IMU fresh at every tick of hover. Instructions are not cycles: time at 168 MHz is given at one
  cycle an instruction, a lower bound (a Cortex-M4 takes 2 for a load, 14 for a float divide or
  square root, more for flash wait states the ART accelerator misses);
- each flight's largest position and attitude difference from the in-process JAX flight (the
  firmwares see the readings as the wire carries them, in float32; JAX in float64), the float32
  image's from the float64 image's (its arithmetic alone), and whether a log's rows are
  bit-identical to the POSIX firmware's.
QEMU runs in lockstep whatever its speed, so the instruction counts do not depend on the
machine's load; ticks/s do (the machine here is shared: compare figures of the same run).
"""

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCE = Path(__file__).resolve().parent / "qemu_insn_plugin.c"
CORE_HZ = 168e6
STEP = "quad_pid_step"
INTERRUPTS = ("systick", "usart1_irq")  # startup.c's and usart.c's handlers: not the step's work
PRECISIONS = ("float64", "float32")


def symbols(image: Path) -> dict[str, tuple[int, int]]:
    """The image's functions: name -> (address without the Thumb bit, size)."""
    listing = subprocess.run(["arm-none-eabi-nm", "-S", str(image)], capture_output=True, text=True, check=True)
    found = {}
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tT":
            found[fields[3]] = (int(fields[0], 16) & ~1, int(fields[1], 16))
    return found


def call_returns(image: Path, function: str) -> list[int]:
    """The return address of every call of ``function`` in the image: after each BL to it."""
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(image)], capture_output=True, text=True, check=True)
    call = re.compile(rf"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{{4}} )+)\s*bl\s+[0-9a-f]+ <{function}>$")
    returns = []
    for line in listing.stdout.splitlines():
        found = call.match(line)
        if found:
            returns.append(int(found.group(1), 16) + 2 * len(found.group(2).split()))
    return returns


def build_plugin(directory: Path) -> Path:
    """bench/qemu_insn_plugin.c as a shared library, with the host's C compiler."""
    from hil.firmware_stubs import c_build

    library = directory / "qemu_insn_plugin.so"
    subprocess.run([*c_build.compiler(), "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    "-o", str(library), str(PLUGIN_SOURCE)], check=True)
    return library


def counting(image: Path, plugin: Path, out: Path) -> tuple[str, ...]:
    """The QEMU options that load the counting plugin for ``image``'s quad_pid_step, writing to ``out``."""
    table = symbols(image)
    missing = [name for name in (STEP, *INTERRUPTS) if name not in table]
    returns = call_returns(image, STEP)
    if missing or not returns:
        raise RuntimeError(f"{image}: {', '.join(missing) or 'no call of ' + STEP} not found: the plugin cannot "
                           f"tell the step's instructions")
    options = [f"entry={table[STEP][0]:#x}", *(f"return={address:#x}" for address in returns), f"out={out}",
               *(f"skip={table[name][0]:#x}-{table[name][0] + table[name][1]:#x}" for name in INTERRUPTS)]
    return ("-plugin", f"{plugin},{','.join(options)}")


def instruction_figures(counts: Path, ticks: int) -> dict:
    """Mean, p99 and max of the plugin's counts, per step call and per tick."""
    rows = np.loadtxt(counts, dtype=np.int64, ndmin=2)
    if len(rows) != ticks:
        raise RuntimeError(f"{counts}: {len(rows)} calls of {STEP} counted, {ticks} ticks flown")
    figures = {}
    # A tick's round runs from one step's entry to the next: the first has none before it.
    for name, values in (("step", rows[:, 0]), ("tick", rows[1:, 1])):
        figures[name] = {"mean": float(values.mean()), "p99": float(np.percentile(values, 99)),
                         "max": int(values.max()),
                         "mean_us_at_168mhz_one_cycle_each": float(values.mean() / CORE_HZ * 1e6),
                         "max_us_at_168mhz_one_cycle_each": float(values.max() / CORE_HZ * 1e6)}
    return figures


def image_size(image: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-size", str(image)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data, "ram_bytes": data + bss}


def rows(path: Path) -> tuple[np.ndarray, dict]:
    from hil import flightlog

    log = flightlog.read(path)
    return np.array(log.rows), log.header["layout"]


def deviation(path: Path, reference: Path) -> dict:
    """The largest position (m) and attitude (degrees) difference of a flight from another."""
    a, layout = rows(path)
    b, reference_layout = rows(reference)
    if len(a) != len(b):
        raise RuntimeError(f"{path} has {len(a)} rows, {reference} {len(b)}")

    def column(values, spans, name):
        offset, size = spans[name]
        return values[:, offset:offset + size]

    position = np.linalg.norm(column(a, layout, "position") - column(b, reference_layout, "position"), axis=1)
    qa, qb = column(a, layout, "attitude"), column(b, reference_layout, "attitude")
    qb = qb * np.sign(np.sum(qa * qb, axis=1, keepdims=True) + 1e-300)  # q and -q are one attitude
    angle = 2 * np.arctan2(np.linalg.norm(qa - qb, axis=1), np.linalg.norm(qa + qb, axis=1))
    return {"position_max_m": float(position.max()), "attitude_max_deg": float(np.degrees(angle.max()))}


def identical(path: Path, other: Path) -> bool:
    a, _ = rows(path)
    b, _ = rows(other)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def link_figures(result) -> dict:
    stats = result.link_stats
    return {"ticks_per_second": (result.trace.ticks_done - 1) / result.wall_seconds,
            "round_trip_p50_us": stats.round_trips.percentile(50) * 1e6 if stats else None,
            "startup_seconds": result.startup_seconds, "passed": result.passed, "failure": result.failure}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="simulated seconds of each flight (hover climbs from 2 s)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "qemu_board.json"))
    args = parser.parse_args()

    from hil import firmware_process, jaxconfig, runner, scenario
    from hil.firmware_stubs import c_build

    jaxconfig.configure()
    base = scenario.load(ROOT / "scenarios" / "hover.yaml")
    loaded = dataclasses.replace(base, duration=args.seconds, expect=[])
    scratch = Path(tempfile.mkdtemp(prefix="qemu_board-"))
    try:
        plugin = build_plugin(scratch)
        logs = {name: scratch / f"{name}.hillog" for name in ("in_process", "posix_pty", *PRECISIONS)}
        results = {"seconds": args.seconds, "ticks": loaded.ticks + 1}
        inproc = runner.run(loaded, target="inproc://quad_pid", log_path=logs["in_process"])
        results["in_process"] = link_figures(inproc)
        board, terminal = firmware_process.start_on_pty(loaded)
        with board:
            posix = runner.run(loaded, board=runner.Board(port=terminal, baud=921600), realtime=False,
                               log_path=logs["posix_pty"])
        results["posix_pty"] = {**link_figures(posix), **deviation(logs["posix_pty"], logs["in_process"])}
        for precision in PRECISIONS:
            image = c_build.build_board(precision)
            url = f"qemu://stm32f405?precision={precision}"
            flown = runner.run(loaded, target=url, log_path=logs[precision])
            counts = scratch / f"{precision}.counts"
            board, terminal = firmware_process.start_qemu(loaded, precision=precision,
                                                          options=counting(image, plugin, counts))
            with board:
                counted = runner.run(loaded, board=runner.Board(port=terminal, baud=921600), realtime=False)
            if counted.failure or flown.failure:
                raise RuntimeError(f"{url}: {counted.failure or flown.failure}")
            results[f"qemu_{precision}"] = {
                **link_figures(flown), **deviation(logs[precision], logs["in_process"]),
                "identical_to_posix": identical(logs[precision], logs["posix_pty"]),
                "image": image_size(image), "instructions": instruction_figures(counts, loaded.ticks + 1)}
        results["qemu_float32"]["from_float64"] = deviation(logs["float32"], logs["float64"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    print(f"hover cut to {args.seconds:g} s ({results['ticks']} ticks), lockstep")
    print(f"{'':16s} {'ticks/s':>8s} {'RTT p50':>9s} {'to HELLO':>9s} {'max Δpos':>9s} {'max Δatt':>9s}  "
          f"bit-identical to POSIX")
    for name in ("posix_pty", *(f"qemu_{p}" for p in PRECISIONS)):
        r = results[name]
        same = "" if name == "posix_pty" else str(r["identical_to_posix"])
        print(f"{name:16s} {r['ticks_per_second']:8.0f} {r['round_trip_p50_us']:7.0f}µs {r['startup_seconds']:8.2f}s "
              f"{r['position_max_m'] * 1e3:7.3f}mm {r['attitude_max_deg']:8.1e}°  {same}"
              + (f"  FAILED: {r['failure']}" if r["failure"] else ""))
    print("(Δ: largest difference from the in-process JAX flight)")
    r = results["qemu_float32"]["from_float64"]
    print(f"qemu_float32 from qemu_float64: {r['position_max_m'] * 1e3:.3f} mm, {r['attitude_max_deg']:.1e}°")
    print(f"{'instructions':16s} {'step mean':>10s} {'p99':>8s} {'max':>8s} {'tick mean':>10s} {'max':>8s}   "
          f"{'flash':>7s} {'RAM':>7s}")
    for precision in PRECISIONS:
        r = results[f"qemu_{precision}"]
        step, tick, size = r["instructions"]["step"], r["instructions"]["tick"], r["image"]
        print(f"{precision:16s} {step['mean']:10.0f} {step['p99']:8.0f} {step['max']:8d} {tick['mean']:10.0f} "
              f"{tick['max']:8d}   {size['flash_bytes']:7d} {size['ram_bytes']:7d}")
        print(f"{'':16s} at 168 MHz, one cycle an instruction (a lower bound): step mean "
              f"{step['mean_us_at_168mhz_one_cycle_each']:.0f} µs, max {step['max_us_at_168mhz_one_cycle_each']:.0f} "
              f"µs; whole tick mean {tick['mean_us_at_168mhz_one_cycle_each']:.0f} µs")
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
