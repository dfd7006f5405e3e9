"""The flight log: one append-only file per run, every record framed and checksummed.

Layout: the 8-byte magic ``HILLOG\\x00\\x01``, then records::

    u32 LE  length of the payload
    u8      kind
    bytes   payload
    u32 LE  CRC-32 of the kind byte and the payload

Records are written in order and never rewritten, so a run killed at any instant leaves a
file whose every complete record reads back; :func:`read` stops at the first incomplete or
damaged record and says where it is.

Kinds:

- HEADER (1): msgpack map: format, scenario text and path, seed, versions, layout, tick rate.
- TICK (2): ``<I q 8s`` + float64 bytes: tick, wall-clock ns since the first record, the row
  digest (BLAKE2b-64 of the tick's output row without the command), and the row itself: the
  true state, the sensor readings, their freshness and the command in force (the header's
  ``layout`` names the columns).
- PACKET (3): ``<B I q`` + bytes: direction (0 hil→firmware, 1 firmware→hil), tick, wall ns,
  and the raw bytes exactly as sent or received.
- SNAPSHOT (4): ``<I`` + float64 bytes: tick and the full flat simulation state after it.
- FOOTER (5): msgpack map: result, outcomes, link statistics, failure.
"""

import hashlib
import io
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

MAGIC = b"HILLOG\x00\x01"
HEADER, TICK, PACKET, SNAPSHOT, FOOTER = 1, 2, 3, 4, 5
KIND_NAMES = {HEADER: "HEADER", TICK: "TICK", PACKET: "PACKET", SNAPSHOT: "SNAPSHOT", FOOTER: "FOOTER"}
MAX_RECORD = 64 * 1024 * 1024  # refuse to allocate for a length beyond this: it is damage, not data
TICK_PREFIX = struct.Struct("<Iq8s")
PACKET_PREFIX = struct.Struct("<BIq")
SNAPSHOT_INTERVAL = 1000  # ticks
FLUSH_INTERVAL = 0.05  # s between writes of buffered records


def _record(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + payload
    return struct.pack("<I", len(payload)) + body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


class LogWriter:
    """Appends records, buffering at most :data:`FLUSH_INTERVAL` of them before each write."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._buffer = io.BytesIO()
        self._file.write(MAGIC + _record(HEADER, msgpack.packb(header, use_bin_type=True)))
        self._file.flush()
        self._started = None
        self._next_flush_ns = 0

    def wall_ns(self) -> int:
        now = time.perf_counter_ns()
        if self._started is None:
            self._started = now
        return now - self._started

    def tick(self, tick: int, digest: bytes, row: bytes) -> None:
        """``row``: the tick's output row as little-endian float64 bytes."""
        wall = self.wall_ns()
        self._buffer.write(_record(TICK, TICK_PREFIX.pack(tick, wall, digest) + row))
        if wall >= self._next_flush_ns:
            self.flush()

    def packet(self, direction: int, tick: int, data: bytes) -> None:
        self._buffer.write(_record(PACKET, PACKET_PREFIX.pack(direction, tick, self.wall_ns()) + data))

    def snapshot(self, tick: int, state: np.ndarray) -> None:
        self._buffer.write(_record(SNAPSHOT, struct.pack("<I", tick) + np.asarray(state, dtype="<f8").tobytes()))

    def flush(self) -> None:
        data = self._buffer.getvalue()
        if data:
            self._file.write(data)
            self._file.flush()
            self._buffer = io.BytesIO()
        self._next_flush_ns = self.wall_ns() + int(FLUSH_INTERVAL * 1e9)

    def close(self, footer: dict) -> None:
        self.flush()
        self._file.write(_record(FOOTER, msgpack.packb(footer, use_bin_type=True)))
        self._file.flush()
        os.fsync(self._file.fileno())  # the footer says the run ended: make it survive a power cut
        self._file.close()


@dataclass
class FlightLog:
    path: Path
    header: dict | None = None
    ticks: list = field(default_factory=list)  # (tick, wall_ns, digest)
    rows: list = field(default_factory=list)  # one float64 array per tick
    packets: list = field(default_factory=list)  # (direction, tick, wall_ns, bytes)
    snapshots: list = field(default_factory=list)  # (tick, np.ndarray)
    footer: dict | None = None
    damage: str | None = None  # where and why reading stopped early, None when the file is whole
    records: int = 0

    @property
    def complete(self) -> bool:
        return self.damage is None and self.footer is not None


def read(path) -> FlightLog:
    """Every complete, intact record of a log, and where reading stopped if the file is cut or damaged."""
    path = Path(path)
    log = FlightLog(path)
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        log.damage = "byte 0: not a hil flight log (bad magic)"
        return log
    offset = len(MAGIC)
    while offset < len(data):
        start = offset
        if offset + 5 > len(data):
            log.damage = f"byte {start}: cut inside a record header ({len(data) - start} of 5 bytes)"
            break
        (length,) = struct.unpack_from("<I", data, offset)
        if length > MAX_RECORD:
            log.damage = f"byte {start}: record length {length} is beyond any record: damaged"
            break
        end = offset + 4 + 1 + length + 4
        if end > len(data):
            log.damage = f"byte {start}: cut inside a {KIND_NAMES.get(data[offset + 4], '?')} record " \
                         f"({len(data) - start} of {end - start} bytes)"
            break
        body = data[offset + 4: offset + 5 + length]
        (crc,) = struct.unpack_from("<I", data, offset + 5 + length)
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            log.damage = f"byte {start}: CRC mismatch in a {KIND_NAMES.get(body[0], f'kind-{body[0]}')} record: damaged"
            break
        kind, payload = body[0], body[1:]
        try:
            _store(log, kind, payload)
        except (ValueError, struct.error, msgpack.UnpackException) as error:
            log.damage = f"byte {start}: {KIND_NAMES.get(kind, kind)} record does not parse: {error}"
            break
        log.records += 1
        offset = end
    return log


def _store(log: FlightLog, kind: int, payload: bytes) -> None:
    if kind == HEADER:
        log.header = msgpack.unpackb(payload, raw=False)
    elif kind == TICK:
        log.ticks.append(TICK_PREFIX.unpack_from(payload))
        log.rows.append(np.frombuffer(payload, dtype="<f8", offset=TICK_PREFIX.size))
    elif kind == PACKET:
        direction, tick, wall = PACKET_PREFIX.unpack_from(payload)
        log.packets.append((direction, tick, wall, payload[PACKET_PREFIX.size:]))
    elif kind == SNAPSHOT:
        (tick,) = struct.unpack_from("<I", payload)
        log.snapshots.append((tick, np.frombuffer(payload[4:], dtype="<f8")))
    elif kind == FOOTER:
        log.footer = msgpack.unpackb(payload, raw=False)
    else:
        raise ValueError(f"unknown record kind {kind}")


class Recorder:
    """What a run loop calls: one TICK record per tick, a SNAPSHOT every :data:`SNAPSHOT_INTERVAL`
    ticks, and the link's raw bytes as PACKET records stamped with the tick in progress."""

    def __init__(self, path: Path, header: dict, layout: dict):
        self.writer = LogWriter(path, header)
        self._layout = layout
        self.current_tick = 0

    def tick(self, tick: int, row: np.ndarray, state) -> None:
        """Record a finished tick; packets from now on belong to the next one."""
        self.current_tick = tick + 1
        self.writer.tick(tick, row_digest_of(row, self._layout), row.tobytes())
        if tick % SNAPSHOT_INTERVAL == 0:
            self.writer.snapshot(tick, np.asarray(state))

    def packet(self, direction: int, data: bytes) -> None:
        self.writer.packet(direction, self.current_tick, data)

    def close(self, footer: dict) -> None:
        self.writer.close(footer)


def row_digest_of(row: np.ndarray, layout: dict) -> bytes:
    """The digest :class:`Recorder` logs for a row: BLAKE2b-64 of the row without its command."""
    offset, size = layout["command"]
    digest = hashlib.blake2b(row[:offset], digest_size=8)
    digest.update(row[offset + size:])
    return digest.digest()
