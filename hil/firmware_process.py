"""Start, watch and stop an emulated firmware as its own process."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

from hil.firmware_stubs import command_line
from hil.scenario import Scenario
from hil.tick.firmware import FIRMWARES

STOP_GRACE = 2.0  # s between GOODBYE and terminate, and between terminate and kill
TAIL_BYTES = 1 << 20  # of output read for its last lines: a firmware may have printed gigabytes


def free_udp_port() -> int:
    """A UDP port on loopback that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(scenario: Scenario, runtime: str, udp: str | None) -> list[str]:
    """The command line that starts the scenario's firmware in ``runtime`` (``c`` or ``python``)
    on ``udp`` (HOST:PORT), or with ``udp`` None, as a board on its own pseudo-terminal (C only).
    The C firmware takes its parameters from the session (PARAM messages), as a board does; the
    Python one, which compiles its step before HELLO, on its command line."""
    name = scenario.firmware.name
    link = ["--udp", udp] if udp is not None else ["--pty"]
    if runtime == "c":
        from hil.firmware_stubs import c_build

        return [str(c_build.build(f"hil_{name}")), *link]
    if udp is None:
        raise ValueError("only the C firmware runs on its own pseudo-terminal")
    module = FIRMWARES[name]
    arguments = command_line(module.wire_parameters(module.params_from_scenario(scenario)))
    return [sys.executable, "-m", f"hil.firmware_stubs.{name}", *link, *arguments]


PTY_BOARD_PATIENCE = 120.0  # s a board on a pty waits for its first frame: a loaded machine's start-up takes over 10


def start_on_pty(scenario: Scenario, timeout: float = 10.0) -> tuple["FirmwareProcess", str]:
    """The scenario's C firmware as a board on a new pseudo-terminal, nothing between it and hil:
    the process (``with`` it to stop and close it), and the terminal to open as its serial port
    (``hil run --port``). Like a board it waits for hil to start; unlike one it leaves after
    :data:`PTY_BOARD_PATIENCE` without a frame, so that one its caller lost does not stay."""
    argv = [*command(scenario, "c", None), "--idle-timeout", f"{PTY_BOARD_PATIENCE:g}"]
    board = FirmwareProcess(argv, f"{scenario.firmware.name} (c, on a pty)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and board.exit_code is None:
        terminal = board.first_line()
        if terminal is not None:
            return board, terminal
        time.sleep(0.01)
    output = board.last_output()
    board.close()
    raise RuntimeError(f"the C firmware made no pseudo-terminal within {timeout:g} s: {output or '(no output)'}")


QEMU = "qemu-system-arm"
QEMU_MACHINE = "netduinoplus2"  # an STM32F405: its memory map and USART1, which -serial pty puts on a terminal
QEMU_TERMINAL = re.compile(r"char device redirected to (\S+)")


def start_qemu(scenario: Scenario, timeout: float = 10.0, precision: str = "float64",
               options: tuple[str, ...] = ()) -> tuple["QemuBoard", str]:
    """The scenario's firmware as an STM32F405 image (built now unless cached) flown on QEMU, its
    USART1 on a new pseudo-terminal: as :func:`start_on_pty`, the process (``with`` it to stop it)
    and the terminal to open as the board's serial port. QEMU's output goes to a file, from which
    the terminal's name is read; QEMU dies with hil. The image is the same for every scenario: the
    session gives it the scenario's parameters after HELLO. ``precision``: the controller's
    arithmetic in the image (``c_build.PRECISIONS``); ``options``: more of QEMU's (a ``-plugin``)."""
    from hil.firmware_stubs import c_build

    image = c_build.build_board(precision)
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"QEMU is not installed ({QEMU} was not found); on Debian or Ubuntu: "
                           f"{c_build.CROSS_INSTALL}")
    board = QemuBoard([QEMU, "-M", QEMU_MACHINE, "-nographic", "-kernel", str(image), "-serial", "pty",
                       "-monitor", "none", *options], f"{scenario.firmware.name} (STM32F405 image on QEMU {QEMU_MACHINE})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and board.exit_code is None:
        found = QEMU_TERMINAL.search(board.last_output())  # a warning of QEMU's may come first
        if found:
            return board, found.group(1)
        time.sleep(0.01)
    output, status = board.last_output(), board.exit_code
    board.close()
    why = f"exited with status {status}" if status is not None else f"made no pseudo-terminal within {timeout:g} s"
    raise RuntimeError(f"QEMU {why} booting {image}: {output or '(no output)'}")


class Activity(NamedTuple):
    """What a firmware's processes are doing, from /proc: to tell a slow firmware from a stopped
    or idle one when a reply is late."""

    stopped: bool  # one of them is stopped (SIGSTOP, a debugger): it will not answer until continued
    running: bool  # one of its threads is on a CPU or waiting for one
    cpu_ticks: int  # CPU time used so far by all of them, in clock ticks


def _group_activity(group: int) -> Activity | None:
    """The activity of process group ``group``; None without /proc (not Linux) or when it is empty."""
    stopped = running = found = False
    cpu = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(f"/proc/{entry}/stat")
        if fields is None or int(fields[2]) != group:
            continue
        found = True
        cpu += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        stopped |= fields[0] in "Tt"
        if not running:
            try:
                threads = os.listdir(f"/proc/{entry}/task")
            except OSError:
                threads = []
            running = any((thread := _stat_fields(f"/proc/{entry}/task/{tid}/stat")) is not None
                          and thread[0] in "RD" for tid in threads)
    return Activity(stopped, running, cpu) if found else None


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc stat file after the command name (which may hold spaces): state first."""
    try:
        with open(path, "rb") as stat:
            text = stat.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


# Kills the firmware's process group when hil's end of its stdin closes, however hil ends (even
# by SIGKILL); a process of the group started through a shell outlives a signal to the shell alone.
GUARD = 'read _; kill -s KILL -- -"$1" 2>/dev/null'


class FirmwareProcess:
    """A firmware subprocess whose output goes to a file, so its last words survive a crash.

    It runs in its own process group (a session): a terminal's Ctrl-C reaches hil alone, which
    stops the firmware itself, and stopping it stops whatever it started. A guard process kills
    the group should hil die without stopping it.
    """

    def __init__(self, argv: list[str], name: str, cwd: str | None = None):
        self.name = name
        self.argv = argv
        self._output = tempfile.TemporaryFile()
        self._ready_at: float | None = None
        self.started = time.perf_counter()
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._output,
                                            stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        except OSError as error:
            self._output.close()
            raise RuntimeError(f"cannot start firmware {name} ({argv[0]}): {error}") from None
        watched, self._lifeline = os.pipe()
        try:
            self._guard = subprocess.Popen(["sh", "-c", GUARD, "hil-firmware-guard", str(self.process.pid)],
                                           stdin=watched, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        except OSError:
            self._guard = None  # no shell: the group still stops with the run, only not with a killed hil
        except BaseException:  # interrupted: nobody would stop the group
            self._signal_group(signal.SIGKILL)
            raise
        finally:
            os.close(watched)

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def activity(self) -> Activity | None:
        """What its process group is doing now (None where /proc cannot tell)."""
        return _group_activity(self.process.pid)

    def ready_since(self) -> float | None:
        """When (perf_counter s) it first said something, a line of output: the emulated firmware
        prints one once it listens; None until then."""
        if self._ready_at is None and self.first_line() is not None:
            self._ready_at = time.perf_counter()
        return self._ready_at

    def last_output(self, lines: int = 20) -> str:
        """Its last ``lines`` lines of output, from at most its last TAIL_BYTES, after a line that
        says how many bytes came before them, if any did."""
        self._output.seek(0, os.SEEK_END)
        size = self._output.tell()
        start = max(0, size - TAIL_BYTES)
        self._output.seek(start)
        text = self._output.read().splitlines(keepends=True)
        if start:
            text = text[1:]  # the first line read may be the end of a longer one
        kept = text[-lines:]
        shown = b"".join(kept).decode(errors="replace").splitlines()
        left_out = size - sum(map(len, kept))
        if left_out:
            shown.insert(0, f"[{left_out} bytes of output before these lines left out]")
        return "\n".join(shown)

    def first_line(self) -> str | None:
        """The first complete line of its output, or None until there is one."""
        self._output.seek(0)
        line = self._output.readline()
        return line.decode(errors="replace").strip() if line.endswith(b"\n") else None

    def stop(self) -> int:
        """Wait for it to leave after GOODBYE, else terminate, else kill; then kill whatever it left
        in its group. Returns its exit status."""
        status = None
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
                self._signal_group(signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
            try:
                status = self.process.wait(STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        self._signal_group(signal.SIGKILL)
        return self.process.wait() if status is None else status

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty (PermissionError: macOS, for a group of zombies)

    def __enter__(self) -> "FirmwareProcess":
        return self

    def __exit__(self, *exception) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.process.wait()
        if self._guard is not None:  # the group is gone: the guard must not signal its number again
            self._guard.kill()
            self._guard.wait()
            self._guard = None
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        self._output.close()


class QemuBoard(FirmwareProcess):
    """QEMU flying a board image. A board does not leave on GOODBYE (it waits for the next HELLO),
    so stopping it terminates QEMU at once rather than waiting for it to exit."""

    def stop(self) -> int:
        self._signal_group(signal.SIGTERM)
        return super().stop()
