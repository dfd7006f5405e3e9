"""The native protocol over a byte stream opened by pyserial: a serial port, a pty, or any pyserial URL.

``--port`` takes whatever ``serial.serial_for_url`` does: ``/dev/ttyACM0``, ``COM3``,
``socket://host:port``, ``loop://``. Frames are read through :class:`hil.wire.FrameReader`,
which resynchronises after line noise and counts what it dropped.
"""

import collections
import os
import select
import time

import serial

from hil import wire
from hil.bridges.link import Endpoint, Link, LinkError, poll_then_wait

BITS_PER_BYTE = 10  # 8N1: start bit, eight data bits, stop bit
POLL_INTERVAL = 0.0002  # s, for pyserial URL handlers that offer no file descriptor to wait on
READ_SIZE = 4096


class SerialLink(Link):
    def __init__(self, url: str, baud: int):
        super().__init__()
        self.url, self.baud = url, baud
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0, write_timeout=1.0)
        except (serial.SerialException, ValueError, OSError) as error:
            raise LinkError(f"cannot open {url} at {baud} baud: {error}") from None
        try:
            self._fileno = self.port.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            self._fileno = None
        # A plain POSIX serial port (or pty) is read straight from its descriptor; other URL
        # handlers (socket://, spy://) are read through pyserial, which does their work.
        self._raw = self._fileno is not None and os.name == "posix" and type(self.port) is serial.Serial
        self.reader = wire.FrameReader()
        self.counters.stream = self.reader.counters
        self._pending = collections.deque()
        self.transmit(b"\x00")  # flush whatever noise sits in the receiver's buffer

    def describe(self) -> str:
        return f"{self.url} at {self.baud} baud"

    def capacity_bytes_per_second(self) -> float:
        return self.baud / BITS_PER_BYTE

    def endpoint(self) -> Endpoint | None:
        """The port's descriptor, while nothing read from it waits in hil (a plain POSIX port only)."""
        if not self._raw or self._pending or not self.reader.idle:
            return None
        return Endpoint(self._fileno, False)

    def transmit_error(self, error: OSError | Exception) -> LinkError:
        return LinkError(f"cannot write to {self.describe()}: {error}")

    def ingest(self, data: bytes) -> None:
        """Bytes read from the port, here or by the compiled exchange (what it read and did not
        accept): count them, show them to the tap and split them into messages."""
        self._received(data)
        self._pending.extend(self.reader.feed(data))

    def transmit(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as error:
            raise self.transmit_error(error) from None
        self._sent(data)

    def receive(self, timeout: float) -> wire.Message | None:
        deadline = time.perf_counter() + timeout
        while True:
            while self._pending:
                message = self._pending.popleft()
                if self._accept(message):
                    return message
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            try:
                if self._raw:
                    data = poll_then_wait(self._read_descriptor, self._fileno, deadline) or b""
                elif self._fileno is not None:
                    select.select([self._fileno], [], [], remaining)
                    data = self.port.read(self.port.in_waiting)
                else:  # URL handlers without a file descriptor: poll
                    data = self.port.read(self.port.in_waiting or 1) or time.sleep(POLL_INTERVAL) or b""
            except (serial.SerialException, OSError) as error:
                raise LinkError(f"cannot read from {self.describe()}: {error}") from None
            if data:
                self.ingest(data)

    def _read_descriptor(self, woken: bool) -> bytes | None:
        """What the port holds now, or None. pyserial opens ports non-blocking, so reading an empty
        port raises or returns nothing; nothing after select found it readable: the line is gone."""
        try:
            data = os.read(self._fileno, READ_SIZE)
        except BlockingIOError:
            data = b""
        if data:
            return data
        if woken:
            raise LinkError(f"{self.describe()} reports data to read but gives none: is it disconnected, "
                            f"or open in another program?")
        return None

    def close(self) -> None:
        self.port.close()
