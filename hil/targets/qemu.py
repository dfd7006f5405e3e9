"""``qemu://stm32f405``: hil's C firmware as a bare-metal STM32F405 image flown on QEMU.

hil cross-compiles the board firmware (firmware_stubs/board/: vector table, clocks, an
interrupt-driven USART1, hil_proto.c and the quad_pid controller), one image for every scenario,
boots it on QEMU's ``netduinoplus2`` machine with USART1 on a new pseudo-terminal, and flies it
over that terminal as it flies a board on a serial port (the session gives it the scenario's
parameters after HELLO), by default
in lockstep (``?pacing=realtime`` paces it on the wall clock, which QEMU's UART, taking in some
25-40 KB/s, keeps up with only at low tick rates). QEMU is stopped when the run ends.
"""

import shutil
import subprocess
from dataclasses import dataclass

from hil.scenario import Scenario
from hil.targets import Peer, RunRefused, Target, TargetError, Url, pacing, pacing_query, with_query

BOARDS = ("stm32f405",)
DEFAULT_PRECISION = "float32"  # the F405 FPU's: docs/boards.md has the figures
BAUD = 921600  # the board's USART1; QEMU's pty passes bytes at any rate
STOP_GRACE = 2.0  # s for QEMU to exit once its pty has closed


@dataclass(frozen=True)
class QemuTarget(Target):
    board: str = "stm32f405"
    realtime: bool | None = None  # the URL's pacing; None: lockstep
    precision: str | None = None  # the controller's arithmetic in the image; None: DEFAULT_PRECISION

    SCHEMES = ("qemu",)
    FORMS = (("qemu://stm32f405", "the C firmware as an STM32F405 image on QEMU (its controller in float32, as "
                                  "the F405's FPU), its UART on a pty, in lockstep"),
             ("qemu://stm32f405?precision=float64", "the same, its controller in double precision, bit for bit the "
                                                    "POSIX firmware's"))
    RUNTIME = "qemu"

    @classmethod
    def from_url(cls, url: Url) -> "QemuTarget":
        from hil.firmware_stubs.c_build import PRECISIONS

        board, parameters = url.split(("pacing", "precision"))
        if board not in BOARDS:
            raise TargetError(f"no board {board!r} hil builds for QEMU; give qemu://{' or qemu://'.join(BOARDS)}")
        precision = parameters.get("precision")
        if precision is not None and precision not in PRECISIONS:
            raise TargetError(f"precision={precision}: give precision={' or precision='.join(PRECISIONS)}")
        return cls(board, pacing(parameters.get("pacing")), precision)

    @property
    def url(self) -> str:
        return with_query(f"qemu://{self.board}", pacing_query(self.realtime),
                          f"precision={self.precision}" if self.precision else "")

    def describe(self, scenario: Scenario) -> str:
        return f"{scenario.firmware.name} as an {self.board.upper()} image on QEMU"

    def for_scenario(self, scenario: Scenario) -> "QemuTarget":
        super().for_scenario(scenario)
        if scenario.firmware.name != "quad_pid":
            raise RunRefused(f"scenario {scenario.name} flies firmware {scenario.firmware.name}; the {self.board} "
                             f"image carries quad_pid's controller only")
        return self

    def absent(self) -> str | None:
        from hil.firmware_process import QEMU
        from hil.firmware_stubs.c_build import CROSS_COMPILER, CROSS_INSTALL

        missing = [program for program in (CROSS_COMPILER, QEMU) if shutil.which(program) is None]
        if missing:
            return (f"{' and '.join(missing)} not found: {self.url} needs the ARM cross toolchain, picolibc and "
                    f"QEMU; on Debian or Ubuntu: {CROSS_INSTALL}")
        return None

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        from hil import firmware_process

        peer.firmware, terminal = firmware_process.start_qemu(scenario, precision=self.precision or DEFAULT_PRECISION)
        peer.link = _board_link(terminal, peer.firmware)


def _board_link(terminal: str, qemu):  # a class made here: hil.targets imports no link until one opens
    """The board's pty as a serial link whose errors, once QEMU has gone (the pty closes with it),
    say so: QEMU's exit status, the tick and QEMU's last line, rather than an I/O error alone."""
    from hil import wire
    from hil.bridges.link import LinkError
    from hil.bridges.serial_port import SerialLink

    class BoardLink(SerialLink):
        next_tick = 0  # the tick whose SENSORS go out next: those before went out whole

        def _gone(self, detail: str, tick: int) -> LinkError:
            try:
                status = qemu.process.wait(STOP_GRACE)  # the pty closes a moment before QEMU exits
            except subprocess.TimeoutExpired:
                return LinkError(detail)
            last = (qemu.last_output(1).splitlines() or ["(no output)"])[-1]
            return LinkError(f"QEMU exited with status {status} at tick {tick}, its last output: {last!r} ({detail})")

        def send(self, message: wire.Message) -> None:
            super().send(message)  # a failed write raises transmit_error's error
            if isinstance(message, wire.Sensors):
                self.next_tick = message.tick + 1

        def exchanged(self, frames_sent: int, *rest) -> None:
            super().exchanged(frames_sent, *rest)
            self.next_tick += frames_sent  # the compiled exchange sends one SENSORS a tick, in order

        def transmit_error(self, error) -> LinkError:
            return self._gone(str(super().transmit_error(error)), self.next_tick)

        def receive(self, timeout: float):
            try:
                return super().receive(timeout)
            except LinkError as error:
                raise self._gone(str(error), max(self.next_tick - 1, 0)) from None

    return BoardLink(terminal, BAUD)
