"""The lockstep exchange compiled into the tick loop, so that one call from Python flies many ticks.

A compiled call from Python costs tens of µs on this hardware whatever it does, and sending,
receiving and decoding a frame in Python as much again: a tick-per-call lockstep loop tops out
near 8,000 ticks/s. Here the exchange is an XLA FFI call (``lockstep_exchange.cc``, built with
the system compilers and cached like the C firmware) inside a ``while_loop`` whose body is the
tick: advance, encode the SENSORS from the row with hil_proto (the C side of the protocol),
send, wait for the ACTUATORS of that tick, write the row into the run's trace as the physics gave
it, and go on with the reply's command (which the run's record, :mod:`hil.record`, puts into the
row from the next tick's).

Only that common case runs in the loop. Anything else (another message, a foreign sender, a
duplicate, a bad frame, no reply in time) stops the loop at that tick, with nothing read over
UDP and with the bytes read handed back over a byte stream, and the Python session carries on
from there as if it had sent the frame itself, so every fault is handled, counted and recorded
by one implementation. A send that fails ends the run with the link's error, as in Python. The loop writes
every frame it sent and accepted into a journal, with its time, which the session counts and
records afterwards; a run's log is the same either way, wall-clock fields aside.
"""

import ctypes
import functools
import os
import socket
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hil import wire
from hil.bridges.link import SPIN, Endpoint

TARGET = "hil_lockstep_exchange"
SOURCE = Path(__file__).resolve().with_name("lockstep_exchange.cc")
MAX_SENSORS = 16
LEFTOVER = 4096
FRAME_BUFFER = wire.MAX_ENCODED

# Why the compiled exchange stopped at a tick (enum Stop of lockstep_exchange.cc): REPLIED goes
# on; PAUSED is a reply too, and the loop has run for PAUSE_AFTER; SEND_FAILED is an error for
# the session to report; every other code hands the tick back to the session as it is.
REPLIED, PAUSED, SEND_FAILED = 0, 5, 6
# s: how long a loop runs before it returns, so that a slow firmware's ticks are recorded (and
# progress reported) as often as this even in a loop of many ticks.
PAUSE_AFTER = 0.02

JOURNAL_ENTRY = np.dtype([("sent_ns", "<i8"), ("received_ns", "<i8"), ("tick", "<u4"), ("sent_length", "<u4"),
                          ("received_length", "<u4"), ("padding", "<u4"), ("sent", "u1", (FRAME_BUFFER,)),
                          ("received", "u1", (FRAME_BUFFER,))])


class Context(ctypes.Structure):
    """hil_exchange_context of lockstep_exchange.cc, field for field."""

    _fields_ = [("fd", ctypes.c_int32), ("datagram", ctypes.c_int32), ("peer_address", ctypes.c_uint32),
                ("peer_port", ctypes.c_uint32), ("timeout_ns", ctypes.c_int64), ("spin_ns", ctypes.c_int64),
                ("pause_ns", ctypes.c_int64),
                ("sensor_count", ctypes.c_uint32),
                ("fresh_offset", ctypes.c_uint32), ("reading_offset", ctypes.c_uint32 * MAX_SENSORS),
                ("reading_size", ctypes.c_uint32 * MAX_SENSORS), ("row_width", ctypes.c_uint32),
                ("rows", ctypes.c_void_p), ("actuators", ctypes.c_uint32),
                ("seq", ctypes.c_uint32), ("last_seq", ctypes.c_uint32), ("has_last_seq", ctypes.c_int32),
                ("journal", ctypes.c_void_p), ("capacity", ctypes.c_uint32), ("entries", ctypes.c_uint32),
                ("error", ctypes.c_int32), ("leftover_length", ctypes.c_uint32), ("leftover", ctypes.c_uint8 * LEFTOVER)]


def build() -> Path:
    """The exchange's shared library, compiled now unless an up-to-date one is cached.

    Raises RuntimeError when there is no C or C++ compiler or the build fails; the message
    quotes the compiler.
    """
    import jaxlib

    from hil.firmware_stubs import c_build

    return c_build.build_ffi_library(TARGET, SOURCE, Path(jax.ffi.include_dir()), jaxlib.__version__)


@functools.cache
def load() -> ctypes.CDLL:
    """Build (or take from the cache) and load the exchange, and register it with XLA."""
    library = ctypes.CDLL(str(build()))
    sizes = (ctypes.c_int64 * 2)()
    library.hil_exchange_sizes(sizes)
    if tuple(sizes) != (ctypes.sizeof(Context), JOURNAL_ENTRY.itemsize):
        raise RuntimeError(f"{SOURCE.name} and {Path(__file__).name} disagree on the layout of the exchange's "
                           f"context or journal ({tuple(sizes)} bytes in C, "
                           f"{(ctypes.sizeof(Context), JOURNAL_ENTRY.itemsize)} in Python)")
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.HilLockstepExchange), platform="cpu")
    return library


def unavailable() -> str | None:
    """Why the compiled exchange cannot be used here (no compilers, a failed build, not a CPU), or None."""
    if jax.default_backend() != "cpu":
        return f"the exchange runs on the CPU backend, and JAX uses {jax.default_backend()}"
    try:
        load()
    except (RuntimeError, OSError) as error:
        return str(error)
    return None


def exchange(row, tick, context, actuators: int):
    """Traced inside the tick loop: send tick ``tick``'s SENSORS from its ``row`` and wait for its reply.

    ``context`` is the address of a run's :class:`Exchange` context (a uint64 scalar). Returns
    the reply's command (zeros unless it came) and why the exchange stopped (:data:`REPLIED` to
    go on, :data:`PAUSED` for a reply after which the loop returns).
    """
    return jax.ffi.ffi_call(TARGET, (jax.ShapeDtypeStruct((actuators,), jnp.float64),
                                     jax.ShapeDtypeStruct((), jnp.int32)), has_side_effect=True)(row, tick, context)


class Exchange:
    """One run's context and journal, handed to the compiled loop by address."""

    def __init__(self, simulation, actuators: int, timeout: float, capacity: int):
        """``simulation``: the :class:`hil.sim.Simulation` flown (its trace layout and sensors)."""
        layout = simulation.layout
        if len(simulation.sensors) > MAX_SENSORS:
            raise ValueError(f"the compiled exchange handles at most {MAX_SENSORS} sensors, not {len(simulation.sensors)}")
        self.context = context = Context()
        context.timeout_ns = int(timeout * 1e9)
        context.spin_ns = int(SPIN * 1e9)
        context.sensor_count = len(simulation.sensors)
        context.fresh_offset = layout["fresh"][0]
        for index, sensor in enumerate(simulation.sensors):
            context.reading_offset[index], context.reading_size[index] = layout[f"reading.{sensor.name}"]
        context.row_width = simulation.width
        context.actuators = actuators
        self.journal = np.zeros(capacity, JOURNAL_ENTRY)
        context.journal = self.journal.ctypes.data
        context.capacity = capacity
        self.address = np.array(ctypes.addressof(context), np.uint64)

    def aim(self, endpoint: Endpoint | None, rows: np.ndarray, seq: int, last_seq: int | None) -> None:
        """Before a loop: where frames go, the trace rows from the loop's first tick on (C-ordered
        float64, at least as many as the loop may fly), and the session's sequence numbers. With
        no endpoint (the link holds input the session must read first) the first tick comes back
        unsent."""
        if not (rows.flags.c_contiguous and rows.dtype == np.float64 and rows.shape[1] == self.context.row_width):
            raise ValueError("the exchange writes rows into a C-ordered float64 trace of the run's width")
        context = self.context
        context.entries = 0
        context.rows = rows.ctypes.data
        context.pause_ns = time.perf_counter_ns() + int(PAUSE_AFTER * 1e9)
        context.seq = seq
        context.has_last_seq = last_seq is not None
        context.last_seq = last_seq or 0
        if endpoint is None:
            context.fd = -1
            return
        context.fd = endpoint.fd
        context.datagram = endpoint.datagram
        if endpoint.datagram:
            host, port = endpoint.peer
            context.peer_address = int.from_bytes(socket.inet_aton(host), sys.byteorder)
            context.peer_port = port

    def entries(self) -> np.ndarray:
        """The journal of the last loop: one entry per tick whose SENSORS it sent or tried to."""
        return self.journal[:self.context.entries]

    def leftover(self) -> bytes:
        """Byte stream: what the last tick read that was not the reply it waited for (or not yet all of it)."""
        return bytes(self.context.leftover[:self.context.leftover_length])

    def send_error(self) -> OSError:
        """Why the last tick's send failed."""
        return OSError(self.context.error, os.strerror(self.context.error))
