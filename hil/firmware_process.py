"""Start, watch and stop an emulated firmware as its own process."""

import collections
import socket
import subprocess
import sys
import tempfile
import time

from hil.firmware_stubs import open_loop, quad_pid
from hil.scenario import Scenario

STOP_GRACE = 2.0  # s between GOODBYE and terminate, and between terminate and kill


def free_udp_port() -> int:
    """A UDP port on loopback that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(scenario: Scenario, runtime: str, udp: str | None) -> list[str]:
    """The command line that starts the scenario's firmware in ``runtime`` (``c`` or ``python``)
    on ``udp`` (HOST:PORT), or with ``udp`` None, as a board on its own pseudo-terminal (C only)."""
    name = scenario.firmware.name
    if name == "quad_pid":
        arguments = quad_pid.command_line(quad_pid.params_from_scenario(scenario))
    else:
        arguments = open_loop.command_line(open_loop.params_from_scenario(scenario))
    link = ["--udp", udp] if udp is not None else ["--pty"]
    if runtime == "c":
        from hil.firmware_stubs import c_build

        return [str(c_build.build(f"hil_{name}")), *link, *arguments]
    if udp is None:
        raise ValueError("only the C firmware runs on its own pseudo-terminal")
    return [sys.executable, "-m", f"hil.firmware_stubs.{name}", *link, *arguments]


def start_on_pty(scenario: Scenario, timeout: float = 10.0) -> tuple["FirmwareProcess", str]:
    """The scenario's C firmware as a board on a new pseudo-terminal, nothing between it and hil:
    the process (``with`` it to stop and close it), and the terminal to open as its serial port
    (``hil run --port``)."""
    board = FirmwareProcess(command(scenario, "c", None), f"{scenario.firmware.name} (c, on a pty)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and board.exit_code is None:
        terminal = board.first_line()
        if terminal is not None:
            return board, terminal
        time.sleep(0.01)
    output = board.last_output()
    board.close()
    raise RuntimeError(f"the C firmware made no pseudo-terminal within {timeout:g} s: {output or '(no output)'}")


class FirmwareProcess:
    """A firmware subprocess whose output goes to a file, so its last words survive a crash."""

    def __init__(self, argv: list[str], name: str, cwd: str | None = None):
        self.name = name
        self.argv = argv
        self._output = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._output,
                                            stderr=subprocess.STDOUT, cwd=cwd)
        except OSError as error:
            raise RuntimeError(f"cannot start firmware {name} ({argv[0]}): {error}") from None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def last_output(self, lines: int = 20) -> str:
        self._output.seek(0)
        tail = collections.deque(self._output.read().decode(errors="replace").splitlines(), maxlen=lines)
        return "\n".join(tail)

    def first_line(self) -> str | None:
        """The first complete line of its output, or None until there is one."""
        self._output.seek(0)
        line = self._output.readline()
        return line.decode(errors="replace").strip() if line.endswith(b"\n") else None

    def stop(self) -> int:
        """Wait for it to leave after GOODBYE, else terminate, else kill; returns its exit status."""
        for action in (None, self.process.terminate, self.process.kill):
            if action is not None:
                action()
            try:
                return self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()

    def __enter__(self) -> "FirmwareProcess":
        return self

    def __exit__(self, *exception) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()
