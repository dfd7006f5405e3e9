"""What every link to a flight controller offers the run loop, whatever carries the bytes."""

import abc
from dataclasses import dataclass, field
from typing import Callable

from hil import wire


class LinkError(RuntimeError):
    """A link that cannot be opened or used; the message says which port or address and what to check."""


@dataclass
class LinkCounters:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duplicates: int = 0  # frames whose seq repeated the previous one: dropped
    foreign: int = 0  # datagrams from an address other than the agreed peer: dropped
    stream: wire.StreamCounters = field(default_factory=wire.StreamCounters)  # bad frames, resyncs, garbage
    injected: dict = field(default_factory=dict)  # scenario link faults: "outbound lost" -> count, ...

    def errors(self) -> dict:
        return dict(self.stream.errors)


@dataclass(frozen=True)
class Undelivered:
    """What ``receive`` returns when the link knows that the frame of ``tick`` will not arrive.

    Only an impaired link (scenario link faults) knows that; the lockstep loop then stops
    waiting for the reply to ``tick`` instead of running into its timeout.
    """

    tick: int
    why: str


class Link(abc.ABC):
    """A bidirectional message link. ``receive`` returns one message or None when ``timeout`` passes."""

    def __init__(self):
        self.counters = LinkCounters()
        self._last_seq = None
        # Called with (direction, raw bytes) for everything sent (0) and received (1): the recorder.
        self.tap: Callable[[int, bytes], None] | None = None

    def send(self, message: wire.Message) -> None:
        self.transmit(wire.encode(message))
        self.counters.frames_sent += 1

    @abc.abstractmethod
    def transmit(self, frame: bytes) -> None:
        """Put an encoded frame on the line as it is; counts its bytes and shows them to the tap."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> wire.Message | Undelivered | None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the link goes, in words a person can check (``udp 127.0.0.1:5760``, ``/dev/ttyACM0 at 921600``)."""

    def close(self) -> None:
        pass

    def capacity_bytes_per_second(self) -> float | None:
        """The line's capacity, for links that have one (serial); None for the network."""
        return None

    def _sent(self, data: bytes) -> None:
        """Count bytes that went out on the line and show them to the tap."""
        self.counters.bytes_sent += len(data)
        if self.tap is not None:
            self.tap(0, data)

    def _received(self, data: bytes) -> None:
        """Count bytes that came in from the peer and show them to the tap."""
        self.counters.bytes_received += len(data)
        if self.tap is not None:
            self.tap(1, data)

    def _accept(self, message: wire.Message) -> bool:
        """Count a decoded message; False for a duplicate (same seq as the previous one)."""
        if message.seq == self._last_seq and not isinstance(message, wire.Hello):
            self.counters.duplicates += 1
            return False
        self._last_seq = message.seq
        self.counters.frames_received += 1
        return True
