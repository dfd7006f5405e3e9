"""hil's C firmware as a bare-metal STM32F405 image (firmware_stubs/board/) flown on QEMU's
netduinoplus2 over its USART1, which QEMU puts on a pseudo-terminal: every link real but the
silicon. What needs the cross toolchain or QEMU is skipped, with the install line, where they are
absent."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from click.testing import CliRunner

from support import SCENARIOS
from hil import cli, firmware_process, flightlog, runner, scenario, targets, wire
from hil.firmware_stubs import c_build

needs_toolchain = pytest.mark.skipif(shutil.which(c_build.CROSS_COMPILER) is None,
                                     reason=f"needs the ARM cross toolchain: {c_build.CROSS_INSTALL}")
needs_qemu = pytest.mark.skipif(
    shutil.which(c_build.CROSS_COMPILER) is None or shutil.which(firmware_process.QEMU) is None,
    reason=f"needs the ARM cross toolchain and QEMU: {c_build.CROSS_INSTALL}")

SHORT_EXPECT = [{"name": "stays level", "never_above": {"quantity": "tilt_deg", "bound": 15}},
                {"name": "stays over home", "within": {"quantity": "north", "after": 0, "min": -0.5, "max": 0.5}}]


@pytest.fixture
def short_hover(scenario_file):
    """hover.yaml cut to 3 s, with expectations a flight that short meets."""
    return scenario.load(scenario_file("hover.yaml", duration=3.0, expect=SHORT_EXPECT))


def at_tick(tick: int, action):
    """A progress callback (runner.run's ``progress``, reported at every chance with
    ``progress_interval=0``) that calls ``action()`` once, at the first report from ``tick`` on."""
    done = []

    def report(k: int, last: int, elapsed: float) -> None:
        if not done and k >= tick:
            done.append(True)
            action()

    return report


def qemu_children() -> list[int]:
    """The QEMU processes this process started (hil starts QEMU in its own session, as a child).
    /proc names a process by its first 15 bytes, all of qemu-system-arm."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        name, fields = text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 2:].split()
        if name == firmware_process.QEMU[:15] and int(fields[1]) == os.getpid():
            found.append(int(entry))
    return found


@pytest.mark.slow  # some 25 s: QEMU hands over one byte at a time
@needs_qemu
def test_hover_flown_on_the_qemu_board_in_lockstep_passes_with_the_posix_firmware_s_log(short_hover, tmp_path):
    loaded = short_hover  # the board's controller in double precision, as the POSIX firmware's
    board = runner.run(loaded, target="qemu://stm32f405?precision=float64", log_path=tmp_path / "qemu.hillog")
    posix = runner.run(loaded, runtime="c", log_path=tmp_path / "posix.hillog")
    assert board.failure is None and board.passed and posix.failure is None, board.failure or posix.failure
    assert board.link_stats.lost_replies == 0 and board.link_stats.counters.errors() == {}
    a, b = flightlog.read(tmp_path / "qemu.hillog"), flightlog.read(tmp_path / "posix.hillog")
    assert a.header["target"] == "qemu://stm32f405?precision=float64" and a.header["runtime"] == "qemu" and a.complete
    assert len(a.rows) == len(b.rows) == loaded.ticks + 1
    assert [r.tobytes() for r in a.rows] == [r.tobytes() for r in b.rows]
    assert "terminating on signal 15" in board.firmware_output  # QEMU was stopped when the run ended
    assert not qemu_children()


def largest_differences(log: flightlog.FlightLog, reference: flightlog.FlightLog) -> tuple[float, float]:
    """The largest position (m) and attitude (rad) difference between two flights' rows."""
    a, b = np.array(log.rows), np.array(reference.rows)
    (p, _), (q, _) = log.header["layout"]["position"], log.header["layout"]["attitude"]
    (rp, _), (rq, _) = reference.header["layout"]["position"], reference.header["layout"]["attitude"]
    position = np.linalg.norm(a[:, p:p + 3] - b[:, rp:rp + 3], axis=1).max()
    dot = np.abs(np.sum(a[:, q:q + 4] * b[:, rq:rq + 4], axis=1))  # q and -q are one attitude
    return float(position), float(2 * np.arccos(np.minimum(dot, 1.0)).max())


@pytest.mark.slow  # some 40 s: 6 s of hover on QEMU, and the in-process flight's compilation
@needs_qemu
def test_a_float32_image_flies_hover_within_a_millimetre_of_the_jax_controller(scenario_file, tmp_path):
    """The board's default build: its controller in single precision, the F405 FPU's."""
    loaded = scenario.load(scenario_file("hover.yaml", duration=6.0, expect=SHORT_EXPECT))  # climbing from 2 s
    assert targets.qemu.DEFAULT_PRECISION == "float32"
    board = runner.run(loaded, target="qemu://stm32f405", log_path=tmp_path / "qemu.hillog")
    posix = runner.run(loaded, runtime="c", log_path=tmp_path / "posix.hillog")
    jax = runner.run(loaded, target="inproc://quad_pid", log_path=tmp_path / "jax.hillog")
    assert board.failure is None and board.passed and posix.passed and jax.passed, board.failure
    log, double, reference = (flightlog.read(tmp_path / f"{name}.hillog") for name in ("qemu", "posix", "jax"))
    assert len(log.rows) == len(double.rows) == len(reference.rows) == loaded.ticks + 1
    # Not the double-precision controller's flight (the POSIX firmware's, which QEMU's float64 image
    # flies to the bit), but within a millimetre and 0.006 degrees of it and of the JAX controller's.
    # Both firmwares differ from JAX by about 0.1 mm: the wire carries the readings as float32.
    assert [r.tobytes() for r in log.rows] != [r.tobytes() for r in double.rows]
    for other in (double, reference):
        position, attitude = largest_differences(log, other)
        assert position < 1e-3 and attitude < 1e-4, (position, attitude)


@pytest.mark.slow
@needs_qemu
def test_killing_qemu_mid_run_fails_the_run_naming_the_tick_and_qemu_s_last_output(short_hover):
    def kill():
        (pid,) = qemu_children()
        os.kill(pid, signal.SIGTERM)

    result = runner.run(short_hover, target="qemu://stm32f405", progress=at_tick(1000, kill), progress_interval=0)
    assert result.failure is not None and not result.passed
    said = re.match(r"QEMU exited with status 0 at tick (\d+), its last output: 'qemu-system-arm: terminating on "
                    r"signal 15 from pid \d+", result.failure)
    assert said, result.failure
    # killed at the first progress report from tick 1000 on: the run ends at the next write or read
    assert 1000 <= int(said.group(1)) <= result.trace.ticks_done < short_hover.ticks
    assert "char device redirected to /dev/pts/" in result.firmware_output  # what the CLI shows under the failure
    assert not qemu_children()


def line_noise(seed: int) -> bytes:
    """A burst of noise between two frames: a run too long for any frame, short random runs, a
    frame with its CRC broken, each ended by a delimiter (the last one lets the next frame through
    whole)."""
    rng = random.Random(seed)
    noise = bytes(rng.randrange(1, 256) for _ in range(600)) + b"\x00"
    for _ in range(10):
        noise += bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60))) + b"\x00"
    frame = bytearray(wire.encode(wire.Heartbeat(7, 5)))
    frame[3] = frame[3] % 255 + 1  # another non-zero byte: COBS still decodes, the CRC no longer holds
    return noise + bytes(frame)


@pytest.mark.slow
@needs_qemu
def test_a_burst_of_line_noise_on_the_board_s_uart_is_survived_and_counted(short_hover):
    noise = line_noise(16)
    expected = wire.FrameReader()
    assert expected.feed(noise) == []
    counted, errors = expected.counters, expected.counters.errors

    board, terminal = firmware_process.start_qemu(short_hover)

    def burst():  # into the board's receiver, as noise on the line would come, between two frames
        line = os.open(terminal, os.O_WRONLY | os.O_NOCTTY)
        try:
            assert os.write(line, noise) == len(noise)
        finally:
            os.close(line)

    with board:
        result = runner.run(short_hover, board=runner.Board(port=terminal, baud=921600), realtime=False,
                            progress=at_tick(1000, burst), progress_interval=0)
    assert result.failure is None and result.passed
    assert result.link_stats.actuators_received == short_hover.ticks + 1 and result.link_stats.lost_replies == 0
    reports = [(tick, text) for tick, severity, text in result.link_stats.status_messages if text.startswith("link:")]
    assert reports == [(reports[0][0], f"link: dropped frames: crc {errors.get('crc', 0)}, cobs {errors.get('cobs', 0)}, "
                                       f"msgpack {errors.get('msgpack', 0)}, message {errors.get('message', 0)}, "
                                       f"oversize {errors.get('oversize', 0)}; garbage {counted.garbage_bytes} B, "
                                       f"overrun 0 B")]
    assert 1000 <= reports[0][0] < short_hover.ticks and errors["oversize"] == 1 and errors["crc"] >= 1


@needs_toolchain
def test_the_image_is_built_once_and_again_only_for_another_precision():
    image = c_build.build_board()
    built = image.stat().st_mtime_ns
    assert c_build.build_board() == image and image.stat().st_mtime_ns == built
    assert image.read_bytes()[:4] == b"\x7fELF"
    assert c_build.build_board("float32") != image
    with pytest.raises(ValueError, match="no board build in 'float16'; give one of float64, float32"):
        c_build.build_board("float16")


@pytest.mark.slow  # some 20 s: two short flights on QEMU and two on the POSIX firmware
@needs_qemu
def test_one_image_flies_two_scenarios_one_after_the_other_each_as_the_posix_firmware(scenario_file, tmp_path):
    """The board is never rebuilt or restarted: each run's HELLO gets it that scenario's parameters."""
    flights = [scenario.load(scenario_file("hover.yaml", f"arm_{arm}.yaml", duration=1.2, firmware__arm_at=arm,
                                           expect=SHORT_EXPECT)) for arm in (0.2, 0.6)]
    board, terminal = firmware_process.start_qemu(flights[0])
    with board:
        for index, flight in enumerate(flights):
            on_board = runner.run(flight, board=runner.Board(port=terminal, baud=921600), realtime=False,
                                  log_path=tmp_path / f"board{index}.hillog")
            posix = runner.run(flight, runtime="c", log_path=tmp_path / f"posix{index}.hillog")
            assert on_board.failure is None and posix.failure is None, on_board.failure or posix.failure
            rows = [flightlog.read(tmp_path / f"{kind}{index}.hillog").rows for kind in ("board", "posix")]
            assert [r.tobytes() for r in rows[0]] == [r.tobytes() for r in rows[1]], flight.name
    first, second = (flightlog.read(tmp_path / f"board{index}.hillog").rows for index in (0, 1))
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first, second))  # the two settings flew differently


def test_a_missing_cross_compiler_names_the_install_line(monkeypatch):
    monkeypatch.setenv("CROSS_CC", "no-such-arm-none-eabi-gcc")
    with pytest.raises(RuntimeError, match="'no-such-arm-none-eabi-gcc' was not found.*apt-get install -y "
                                           "--no-install-recommends gcc-arm-none-eabi picolibc-arm-none-eabi "
                                           "qemu-system-arm"):
        c_build.build_board()


def test_hil_run_on_qemu_without_qemu_exits_2_with_the_install_line(monkeypatch):
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *rest, **options:
                        None if name == firmware_process.QEMU else which(name, *rest, **options))
    result = CliRunner().invoke(cli.main, ["run", str(SCENARIOS / "hover.yaml"), "--target", "qemu://stm32f405"])
    assert result.exit_code == 2, result.output
    assert "qemu-system-arm not found" in result.output and c_build.CROSS_INSTALL in result.output


def test_qemu_urls():
    assert targets.parse("qemu://stm32f405") == targets.QemuTarget()
    assert targets.parse("qemu://stm32f405?pacing=realtime").url == "qemu://stm32f405?pacing=realtime"
    assert targets.parse("qemu://stm32f405?precision=float32").url == "qemu://stm32f405?precision=float32"
    with pytest.raises(targets.TargetError, match="precision=half: give precision=float64 or precision=float32"):
        targets.parse("qemu://stm32f405?precision=half")
    with pytest.raises(targets.TargetError, match="no board 'stm32f722' hil builds for QEMU; give qemu://stm32f405"):
        targets.parse("qemu://stm32f722")


@needs_qemu
def test_a_parameter_the_board_refuses_ends_the_run_naming_it_and_the_board_flies_the_next_run(short_hover,
                                                                                                monkeypatch):
    from hil.firmware_stubs import quad_pid

    given = quad_pid.wire_parameters
    board, terminal = firmware_process.start_qemu(short_hover)
    with board:
        monkeypatch.setattr(quad_pid, "wire_parameters", lambda params: (*given(params), ("wingspan", (1.2,))))
        refused = runner.run(short_hover, board=runner.Board(port=terminal, baud=921600), realtime=False)
        assert refused.failure is not None and not refused.passed
        assert "the firmware refused its parameters: parameter wingspan: unknown parameter (code 5)" in \
            refused.failure, refused.failure
        assert refused.trace.ticks_done == 0  # no tick was flown
        monkeypatch.setattr(quad_pid, "wire_parameters", given)
        short = scenario.with_changes(short_hover, {"duration": 0.5})
        flown = runner.run(short, board=runner.Board(port=terminal, baud=921600), realtime=False)
    assert flown.failure is None and flown.passed, flown.failure


@needs_qemu
def test_qemu_dies_with_the_process_that_started_it(tmp_path):
    """However hil ends, even killed outright, the QEMU it started does not fly on."""
    starter = ("import os, signal, sys\n"
               "from hil import firmware_process, scenario\n"
               f"board, _ = firmware_process.start_qemu(scenario.load({str(SCENARIOS / 'hover.yaml')!r}))\n"
               "print(board.process.pid, flush=True)\n"
               "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    qemu = int(done.stdout)
    deadline = time.monotonic() + 60  # generous, for a loaded machine
    while alive(qemu):
        assert time.monotonic() < deadline, f"QEMU (process {qemu}) outlived the process that started it"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by init, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode(errors="replace")
    except OSError:
        return False
    return text[text.rfind(")") + 2:].split()[0] not in "ZX"
