"""Damaged, cut and crafted flight logs: every command reads past damage, names each damaged span
and exits 1; a file that is not a hil flight log, or a header hil would not write, is bad input
(exit 2, one line naming the file and the field); logs are read in bounded memory."""

import concurrent.futures
import csv
import struct
import subprocess
import sys
import zlib

import msgpack
import numpy as np
import pytest
from support import SCENARIOS

from hil import flightlog

COMMANDS = (("log",), ("replay",), ("export", "--format", "csv"), ("plot",))


def hil(*arguments, timeout=300):
    return subprocess.run([sys.executable, "-m", "hil", *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout)


def fly(path, seconds):
    completed = hil("run", SCENARIOS / "hover.yaml", "--firmware", "in-process", "--duration", seconds, "--out", path,
                    "-q")
    assert completed.returncode in (0, 1), completed.stderr
    return path


@pytest.fixture(scope="module")
def hover_log(tmp_path_factory):
    return fly(tmp_path_factory.mktemp("damaged") / "hover.hillog", 10)


def flipped(log, at, tmp_path):
    data = bytearray(log.read_bytes())
    data[at] ^= 0x40
    path = tmp_path / f"flipped-{at}.hillog"
    path.write_bytes(bytes(data))
    return path


def with_header(log, header, tmp_path, name="crafted"):
    """The log's records after a header of our own, framed and checksummed as hil frames one."""
    data = log.read_bytes()
    (length,) = struct.unpack_from("<I", data, len(flightlog.MAGIC))
    body = bytes([flightlog.HEADER]) + msgpack.packb(header, use_bin_type=True)
    path = tmp_path / f"{name}.hillog"
    path.write_bytes(flightlog.MAGIC + struct.pack("<I", len(body) - 1) + body + struct.pack("<I", zlib.crc32(body))
                     + data[len(flightlog.MAGIC) + 9 + length:])
    return path


def test_a_flipped_byte_loses_one_tick_and_the_rest_reads(hover_log, tmp_path):
    whole = flightlog.read(hover_log)
    log = flightlog.read(flipped(hover_log, 35_000, tmp_path))
    (damage,) = log.damage
    assert damage.offset <= 35_000 < damage.offset + damage.length
    assert damage.length == 9 + flightlog.TICK_PREFIX.size + 8 * len(whole.rows[0])  # one TICK record, no more
    first, last = damage.ticks_lost
    assert first == last and [t[0] for t in log.ticks] == [t for t in range(10001) if t != first]
    assert log.footer == whole.footer and not log.complete


def test_garbage_inside_a_record_is_one_span_and_every_later_record_reads(hover_log, tmp_path):
    data = hover_log.read_bytes()
    garbage = np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    path = tmp_path / "garbage.hillog"
    path.write_bytes(data[:50_003] + garbage + data[50_003:])
    log = flightlog.read(path)
    (damage,) = log.damage
    assert damage.offset < 50_003 and damage.offset + damage.length > 50_003 + len(garbage)
    assert len(log.ticks) == 10000 and log.footer is not None


def test_log_export_plot_and_replay_read_past_damage_name_it_and_exit_1(hover_log, tmp_path):
    damaged = flipped(hover_log, 35_000, tmp_path)
    lost = flightlog.read(damaged).damage[0].ticks_lost[0]
    summary = hil("log", damaged)
    assert summary.returncode == 1, summary.stdout + summary.stderr
    assert "10000 ticks" in summary.stdout and f"tick {lost} lost" in summary.stdout and "bytes 3" in summary.stdout
    exported = hil("export", damaged, "--format", "csv", "-o", tmp_path / "out.csv")
    assert exported.returncode == 1 and f"tick {lost} lost" in exported.stderr, exported.stderr
    with open(tmp_path / "out.csv") as handle:
        ticks = [int(row["tick"]) for row in csv.DictReader(handle)]
    assert ticks == [t for t in range(10001) if t != lost]
    plotted = hil("plot", damaged, "-o", tmp_path / "out.png")
    assert plotted.returncode == 1 and (tmp_path / "out.png").stat().st_size > 50_000, plotted.stderr
    replayed = hil("replay", damaged)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    # The lost tick's command is gone: replay compares every tick before it, resumes from the
    # next snapshot (after tick 1000) and compares every tick after that; it names those between.
    assert replayed.stdout.startswith(f"bit-identical: {lost + 9000} ticks compared"), replayed.stdout
    assert f"not checked (no state to replay them from after damage): ticks {lost + 1}–1000" in replayed.stdout
    assert f"tick {lost} lost" in replayed.stderr


def test_a_cut_log_exports_what_it_holds_and_every_command_exits_1(hover_log, tmp_path):
    data = hover_log.read_bytes()
    cut = tmp_path / "cut.hillog"
    cut.write_bytes(data[:len(data) // 2 + 7])
    log = flightlog.read(cut)
    assert log.footer is None and [d.ticks_lost[1] for d in log.damage] == [None]
    for command in COMMANDS:
        completed = hil(*command, cut, *(("-o", tmp_path / "cut.csv") if "export" in command else ()))
        assert completed.returncode == 1, (command, completed.stdout, completed.stderr)
        assert "Traceback" not in completed.stderr and "no footer" in completed.stdout + completed.stderr
    with open(tmp_path / "cut.csv") as handle:
        assert sum(1 for _ in handle) == len(log.ticks) + 1


HEADERS = {  # field named in the message -> how the header is crafted
    "the header is a list": lambda header: [1, 2, 3],
    "layout: missing": lambda header: {k: v for k, v in header.items() if k != "layout"},
    "rate_hz": lambda header: {**header, "rate_hz": 0},
    "layout.command": lambda header: {**header, "layout": {**header["layout"], "command": [20, 10**12]}},
    "seed: expected an integer": lambda header: {**header, "seed": "one"},
    "duration": lambda header: {**header, "duration": float("nan")},
    "layout.velocity": lambda header: {**header, "layout": {**header["layout"], "velocity": [4, 3]}},
    "format": lambda header: {**header, "format": 9},
    "layout.fresh": lambda header: {**header, "layout": {**header["layout"], "fresh": [41, 1]}},
    "layout.attitude": lambda header: {**header, "layout": {**header["layout"],
                                                              "attitude": [header["layout"]["attitude"][0], 3]}},
}


@pytest.mark.parametrize("field", HEADERS)
def test_a_crafted_header_is_bad_input_named_in_one_line_by_every_command(hover_log, tmp_path, field):
    header = HEADERS[field](dict(flightlog.read(hover_log).header))
    path = with_header(hover_log, header, tmp_path)
    outputs = {"export": ("-o", tmp_path / "out.csv"), "plot": ("-o", tmp_path / "out.png")}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda command: hil(*command, path, *outputs.get(command[0], ())), COMMANDS))
    for command, completed in zip(COMMANDS, results):
        assert completed.returncode == 2, (command, completed.stdout, completed.stderr)
        assert completed.stderr.count("\n") == 1 and str(path) in completed.stderr and field in completed.stderr, \
            (command, completed.stderr)


@pytest.mark.parametrize("name", ["/dev/zero", "random"])
def test_a_file_that_is_not_a_log_is_refused_without_reading_it(tmp_path, name):
    path = name
    if name == "random":
        path = tmp_path / "random.hillog"
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 1_000_000, dtype=np.uint8).tobytes())
    for command in COMMANDS:
        completed = hil(*command, path, timeout=60)
        assert completed.returncode == 2, (command, completed.stderr)
        assert completed.stderr == f"error: {path}: not a hil flight log (it does not start with hil's magic bytes)\n"


@pytest.mark.slow
def test_export_plot_and_replay_refuse_an_output_they_cannot_write_before_reading(hover_log, tmp_path):
    cases = [("export", "--format", "csv", "-o", hover_log / "x.csv", "is a file, not a folder"),
             ("export", "--format", "mcap", "-o", tmp_path, "is a directory"),
             ("export", "--format", "csv", "-o", "/proc/hil.csv", "cannot write"),
             ("export", "--format", "csv", "-o", hover_log, "is the log being read"),
             ("plot", "-o", hover_log / "x.png", "is a file, not a folder"),
             ("plot", "-o", tmp_path / "missing" / "x.png", "does not exist"),
             ("plot", "-o", tmp_path / "x.xyz", ".png, .ps"),
             ("replay", "--firmware", "in-process", "--out", hover_log, "is the log being read"),
             ("replay", "--firmware", "in-process", "--out", hover_log / "x.hillog", "is a file, not a folder"),
             ("replay", "--firmware", "in-process", "--out", "/proc/x.hillog", "cannot write")]
    for *arguments, message in cases:
        completed = hil(arguments[0], hover_log, *arguments[1:])
        assert completed.returncode == 2 and message in completed.stderr, (arguments, completed.stderr)
        assert "Traceback" not in completed.stderr
    assert not (tmp_path / "x.xyz").exists() and not (tmp_path / "missing").exists()
    assert flightlog.read(hover_log).complete


def peak_rss_kib(*argv) -> int:
    """Peak resident memory (KiB) of a command, measured in a process of its own whose only child it is."""
    measure = ("import resource, subprocess, sys; completed = subprocess.run(sys.argv[1:], capture_output=True); "
               "print(completed.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    returncode, peak = subprocess.run([sys.executable, "-c", measure, *map(str, argv)], capture_output=True,
                                      text=True, timeout=600, check=True).stdout.split()
    assert returncode == "0", argv
    return int(peak)


@pytest.mark.slow
def test_log_and_export_read_a_long_log_in_bounded_memory(tmp_path):
    log = fly(tmp_path / "long.hillog", 120)
    size_kib = log.stat().st_size // 1024
    assert size_kib > 40_000
    imports = peak_rss_kib(sys.executable, "-c", "import hil.cli, hil.flightlog, hil.export, mcap.writer")
    grown = {" ".join(map(str, command[:1] + command[2:4])): peak_rss_kib(sys.executable, "-m", "hil", *command) - imports
             for command in (("log", log), ("export", log, "--format", "csv", "-o", tmp_path / "long.csv"),
                             ("export", log, "--format", "mcap", "-o", tmp_path / "long.mcap"))}
    # Reading the whole log took about 3.2 times its size; a chunk at a time takes a few MiB (MCAP's
    # writer holds a chunk and a compressor: about 8 MiB whatever the log's length).
    assert all(kib < size_kib / 4 for kib in grown.values()), (grown, size_kib)


def test_a_footer_hil_would_not_write_is_a_damaged_record_not_a_traceback(hover_log, tmp_path):
    data = hover_log.read_bytes()
    footer = flightlog.read(hover_log).footer
    start = len(data) - 9 - len(msgpack.packb(footer, use_bin_type=True))
    assert data[start + 4] == flightlog.FOOTER
    body = bytes([flightlog.FOOTER]) + msgpack.packb({**footer, "outcomes": "all held"}, use_bin_type=True)
    path = tmp_path / "footer.hillog"
    path.write_bytes(data[:start] + struct.pack("<I", len(body) - 1) + body + struct.pack("<I", zlib.crc32(body)))
    completed = hil("log", path)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert "FOOTER record does not parse: field outcomes" in completed.stdout
    assert "no tick after tick 10000 is in the log" in completed.stdout


def test_a_long_plot_keeps_a_bounded_number_of_points_and_every_spike():
    from hil import plot

    envelope, rate = plot._Envelope(), 1000.0
    values = np.sin(np.arange(3_000_001) / 5000.0)
    values[1_234_567] = 40.0  # one tick's spike, in a log of 50 min at 1 kHz
    for first in range(0, len(values), 4096):
        ticks = np.arange(first, min(first + 4096, len(values)))
        envelope.add(ticks, values[ticks, None])
    times, line = envelope.line(rate, 0)
    assert len(line) <= plot.MAX_POINTS and line.max() == 40.0 and line.min() == values.min()
    assert times[0] == 0.0 and times[-1] <= 3000.0 and np.all(np.diff(times) >= 0)


@pytest.mark.slow
def test_the_log_of_a_scenario_without_sensors_reads_in_every_command(scenario_file, tmp_path):
    """Its ``fresh`` column has no width: the reader must take the header hil wrote."""
    path = scenario_file("hover.yaml", firmware={"name": "open_loop", "throttle": [0.5, 0.5, 0.5, 0.5]},
                         sensors=None, duration=1.0, expect=[])
    log = tmp_path / "bare.hillog"
    completed = hil("run", path, "--firmware", "in-process", "--out", log, "-q")
    assert completed.returncode == 0, completed.stderr
    assert flightlog.read(log).header["layout"]["fresh"][1] == 0
    outputs = {"export": ("-o", tmp_path / "bare.csv"), "plot": ("-o", tmp_path / "bare.png")}
    for command in COMMANDS:
        completed = hil(*command, log, *outputs.get(command[0], ()))
        assert completed.returncode == 0, (command, completed.stdout, completed.stderr)
