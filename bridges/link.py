"""What every link to a flight controller offers the run loop, whatever carries the bytes."""

import abc
import resource
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from hil import wire

# s to poll a link before sleeping in select: a lockstep reply usually comes within tens of µs,
# and waking from select costs about as much again. On a slower line it costs only this much
# CPU per wait.
SPIN = 0.0002
# Spinning pays only while hil has a CPU to itself. On a loaded machine a spinning hil takes the
# CPU the firmware needs to answer, and the scheduler favours a task that sleeps when it wakes:
# lockstep fell from 27,000 ticks/s to 400. Once a wait finds the thread preempted (an iteration
# of the spin took PREEMPTED s, or the kernel counted an involuntary context switch since the last
# wait), waits sleep at once for CONTENDED s. bridges/lockstep_exchange.cc does the same.
PREEMPTED = 0.0001
CONTENDED = 0.05
Read = TypeVar("Read")


class _CpuWatch(threading.local):
    """Whether this thread has lately been kept off its CPU."""

    def __init__(self):
        self.contended_until = 0.0
        self.switches = _involuntary_switches()

    def spin_allowed(self, now: float) -> bool:
        switches = _involuntary_switches()
        if switches != self.switches:
            self.switches = switches
            self.contended_until = now + CONTENDED
        return now >= self.contended_until

    def preempted(self, now: float) -> None:
        self.contended_until = now + CONTENDED


def _involuntary_switches() -> int:
    return resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)).ru_nivcsw


_cpu = _CpuWatch()


def poll_then_wait(read: Callable[[bool], Read | None], fileno: int, deadline: float) -> Read | None:
    """The first result of ``read(woken)`` that is not None, or None at ``deadline`` (perf_counter s).

    ``read`` must not block. It is tried without sleeping for :data:`SPIN` (none while the CPU is
    contended), then whenever select wakes on ``fileno``; ``woken`` says that select found it
    readable.
    """
    now = time.perf_counter()
    spin_until = min(deadline, now + SPIN) if _cpu.spin_allowed(now) else now
    woken = False
    while (result := read(woken)) is None:
        previous, now = now, time.perf_counter()
        if now >= deadline:
            return None
        if previous < spin_until and now - previous > PREEMPTED:
            _cpu.preempted(now)
            spin_until = now
        woken = now >= spin_until and bool(select.select([fileno], [], [], deadline - now)[0])
    return result


@dataclass(frozen=True)
class Endpoint:
    """Where a link's frames go, for the compiled lockstep exchange (hil.bridges.compiled_exchange)."""

    fd: int
    datagram: bool  # UDP: one frame per datagram, from and to ``peer``; else a byte stream
    peer: tuple[str, int] | None = None


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
        self.last_seq = None  # seq of the last frame accepted: the next with the same seq is a duplicate
        # Called with (direction, raw bytes) for everything sent (0) and received (1): the recorder.
        self.tap: Callable[[int, bytes], None] | None = None

    def send(self, message: wire.Message) -> None:
        self.transmit(wire.encode(message))
        self.counters.frames_sent += 1

    @abc.abstractmethod
    def transmit(self, frame: bytes) -> None:
        """Put an encoded frame on the line as it is; counts its bytes and shows them to the tap."""

    def transmit_error(self, error: OSError | Exception) -> LinkError:
        """The error to raise when putting a frame on this line failed with ``error``."""
        return LinkError(f"cannot send to {self.describe()}: {error}")

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

    def endpoint(self) -> Endpoint | None:
        """Where the compiled lockstep exchange may send and receive this link's frames now; None
        when it cannot (a link of another kind, no agreed peer yet, input waiting to be read)."""
        return None

    def exchanged(self, frames_sent: int, bytes_sent: int, frames_received: int, bytes_received: int,
                  last_seq: int | None) -> None:
        """Count what the compiled exchange sent and accepted on this link (``last_seq``: the seq of
        the last frame it accepted, None if none). Its frames reach the recorder from the session,
        with their times, not through the tap."""
        self.counters.frames_sent += frames_sent
        self.counters.bytes_sent += bytes_sent
        self.counters.frames_received += frames_received
        self.counters.stream.frames += frames_received
        self.counters.bytes_received += bytes_received
        if last_seq is not None:
            self.last_seq = last_seq

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
        if message.seq == self.last_seq and not isinstance(message, wire.Hello):
            self.counters.duplicates += 1
            return False
        self.last_seq = message.seq
        self.counters.frames_received += 1
        return True
