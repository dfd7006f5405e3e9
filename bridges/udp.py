"""The native protocol over UDP: one frame per datagram.

hil binds to loopback unless told otherwise and accepts datagrams from one address only: the
firmware's when hil knows it (it started the firmware on that address, or ``--udp`` names the
board), else the address whose HELLO came first. Anything else is dropped unread and counted as
foreign, so no other local process can answer HELLO in the firmware's place or end the run.
"""

import socket
import time

from hil import wire
from hil.bridges.link import Endpoint, Link, LinkError, poll_then_wait


def parse_address(text: str, local: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` as a tuple; a local address may use port 0 (any free port)."""
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not (0 if local else 1) <= int(port) < 65536:
        raise LinkError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9000)")
    return host, int(port)


class UdpLink(Link):
    """``peer``: the address to send to and the only one heard; None to wait for whoever sends the
    first HELLO (a firmware waiting for hil)."""

    def __init__(self, peer: str | tuple[str, int] | None, bind: str | tuple[str, int] = ("127.0.0.1", 0)):
        super().__init__()
        local = parse_address(bind, local=True) if isinstance(bind, str) else bind
        towards = "" if peer is None else f" towards {peer if isinstance(peer, str) else '%s:%d' % peer}"
        try:
            if peer is not None:
                peer = parse_address(peer) if isinstance(peer, str) else peer
                peer = socket.getaddrinfo(*peer, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
            self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socket.bind(local)
        except OSError as error:
            raise LinkError(f"cannot open UDP {local[0]}:{local[1]}{towards}: {error}") from None
        self.peer = peer
        self.socket.setblocking(False)
        self.agreed: tuple[str, int] | None = None  # the address that completed HELLO

    def describe(self) -> str:
        host, port = self.socket.getsockname()
        if self.peer is None:
            return f"udp {host}:{port}"
        return f"udp {self.peer[0]}:{self.peer[1]} (from {host}:{port})"

    def endpoint(self) -> Endpoint | None:
        if self.agreed is None or self.socket.family != socket.AF_INET:
            return None
        return Endpoint(self.socket.fileno(), True, self.agreed)

    def transmit(self, data: bytes) -> None:
        destination = self.agreed or self.peer
        if destination is None:
            raise LinkError(f"nothing to send to on {self.describe()}: no HELLO has arrived yet")
        try:
            self.socket.sendto(data, destination)
        except OSError as error:
            raise self.transmit_error(error) from None
        self._sent(data)

    def receive(self, timeout: float) -> wire.Message | None:
        deadline = time.perf_counter() + timeout
        while (datagram := poll_then_wait(self._read, self.socket.fileno(), deadline)) is not None:
            data, sender = datagram
            heard = self.agreed or self.peer
            if heard is not None and sender != heard:
                self.counters.foreign += 1
            else:
                self._received(data)
                message = self._decode(data)
                if message is not None:
                    if self.agreed is None and isinstance(message, wire.Hello):
                        self.agreed = sender
                    if self._accept(message):
                        return message
            if time.perf_counter() >= deadline:
                return None
        return None

    def _read(self, woken: bool) -> tuple[bytes, tuple] | None:
        """The next datagram and its sender, or None when none waits."""
        try:
            return self.socket.recvfrom(wire.MAX_ENCODED + 1)
        except (BlockingIOError, ConnectionRefusedError):  # refused: an ICMP error from an earlier send,
            return None  # the peer is not listening yet

    def _decode(self, data: bytes) -> wire.Message | None:
        """The one frame of a datagram, or None (counted) when it is not a valid frame."""
        if len(data) > wire.MAX_ENCODED or not data.endswith(b"\x00"):
            self.counters.stream.count("oversize" if len(data) > wire.MAX_ENCODED else "cobs")
            self.counters.stream.garbage_bytes += len(data)
            return None
        try:
            message = wire.decode(data[:-1])
        except wire.FrameError as error:
            self.counters.stream.count(error.kind)
            self.counters.stream.garbage_bytes += len(data)
            return None
        self.counters.stream.frames += 1
        return message

    def close(self) -> None:
        self.socket.close()
