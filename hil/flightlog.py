"""The flight log: one append-only file per run, every record framed and checksummed.

Layout: the 8-byte magic ``HILLOG\\x00\\x01``, then records::

    u32 LE  length of the payload
    u8      kind
    bytes   payload
    u32 LE  CRC-32 of the kind byte and the payload

Records are appended and never rewritten, so a run killed at any instant leaves a file whose
every complete record reads back; :func:`read` stops at the first incomplete or damaged record
and says where it is. The recorder encodes records in groups of 64 ticks (and at each
SNAPSHOT): the group's TICK records in tick order, then its PACKET records in the order they
were sent and received (each carries its tick and wall time). It writes what is encoded every
50 ms, so a killed run loses at most the last 50 ms and 64 ticks, and in lockstep with the
exchange compiled into the tick loop, the loop in flight, which returns every 20 ms.

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

from hil.trace import Trace

MAGIC = b"HILLOG\x00\x01"
HEADER, TICK, PACKET, SNAPSHOT, FOOTER = 1, 2, 3, 4, 5
KIND_NAMES = {HEADER: "HEADER", TICK: "TICK", PACKET: "PACKET", SNAPSHOT: "SNAPSHOT", FOOTER: "FOOTER"}
MAX_RECORD = 64 * 1024 * 1024  # refuse to allocate for a length beyond this: it is damage, not data
TICK_PREFIX = struct.Struct("<Iq8s")
PACKET_PREFIX = struct.Struct("<BIq")
PACKET_HEAD = struct.Struct("<IB" + PACKET_PREFIX.format.lstrip("<"))  # record length and kind, then the prefix
CRC = struct.Struct("<I")
SNAPSHOT_INTERVAL = 1000  # ticks
FLUSH_INTERVAL = 0.05  # s between writes of buffered records
ENCODE_BATCH = 64  # ticks encoded at a time (a run killed loses at most these, and the unwritten ones)


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
        """ns since the first record."""
        return time.perf_counter_ns() - self.origin_ns()

    def origin_ns(self) -> int:
        """The perf_counter ns of the first record: the log's wall-clock zero."""
        if self._started is None:
            self._started = time.perf_counter_ns()
        return self._started

    def ticks(self, ticks, walls, rows: np.ndarray, layout: dict) -> None:
        """TICK records for consecutive rows, built as one array (a record a row costs a quarter of
        what building each with ``_record`` does). ``walls``: ns since the first record."""
        count, width = rows.shape
        records = np.zeros(count, np.dtype([("length", "<u4"), ("kind", "u1"), ("tick", "<u4"), ("wall", "<i8"),
                                            ("digest", "V8"), ("row", "<f8", (width,)), ("crc", "<u4")]))
        records["length"] = TICK_PREFIX.size + 8 * width
        records["kind"] = TICK
        records["tick"] = ticks
        records["wall"] = walls
        records["row"] = rows
        offset, size = layout["command"]
        hashed = memoryview(np.concatenate([rows[:, :offset], rows[:, offset + size:]], axis=1)).cast("B")
        stride = 8 * (width - size)
        records["digest"] = np.frombuffer(b"".join(hashlib.blake2b(hashed[start:start + stride], digest_size=8).digest()
                                                   for start in range(0, count * stride, stride)), "V8")
        step = records.dtype.itemsize
        data = memoryview(records).cast("B")
        records["crc"] = [zlib.crc32(data[start + 4:start + step - 4]) for start in range(0, count * step, step)]
        self._buffer.write(data)

    def flush_due(self, wall: int) -> bool:
        return wall >= self._next_flush_ns

    def packets(self, packets) -> None:
        """PACKET records of (direction, tick, wall ns, bytes), encoded together."""
        parts = []
        for direction, tick, wall, data in packets:
            head = PACKET_HEAD.pack(PACKET_PREFIX.size + len(data), PACKET, direction, tick, wall)
            parts += (head, data, CRC.pack(zlib.crc32(data, zlib.crc32(head[4:]))))
        self._buffer.write(b"".join(parts))

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

    def __init__(self, path: Path, header: dict, trace: Trace):
        """``trace``: the run's trace, whose row k tick k records once it is finished."""
        self.writer = LogWriter(path, header)
        self._trace = trace
        self.current_tick = 0
        # Records not yet encoded: ticks as (tick, wall ns), packets as (direction, tick, wall ns,
        # bytes). They are encoded every ENCODE_BATCH ticks, the ticks as one array, which costs a
        # quarter of encoding each as it comes.
        self._pending: list = []
        self._packets: list = []

    def tick(self, tick: int, state) -> None:
        """Record a finished tick, whose row of the trace must not change afterwards; packets from
        now on belong to the next tick. ``state`` is the simulation's state after it, as the
        tick's pages (a tuple of vectors that end to end are the flat state)."""
        self.ticks(tick, 1, state)

    def batch_limit(self, first: int) -> int:
        """How many ticks from ``first`` on one call of :meth:`ticks` may hold: a tick due for a
        SNAPSHOT must end its call, since the recorder needs the state after it."""
        return -first % SNAPSHOT_INTERVAL + 1

    def ticks(self, first: int, count: int, state, packets=()) -> None:
        """Record ``count`` finished ticks from ``first`` on, as :meth:`tick` would one by one:
        ``packets`` holds two for each, its SENSORS and its reply (direction, tick, wall ns since
        the first record, bytes), in tick order. ``state`` is the state after the last tick; at
        most :meth:`batch_limit` ticks come in one call."""
        wall = self.writer.wall_ns()
        tick, end = first, first + count
        while tick < end:
            # Encoding points depend on ticks only, so the file's bytes do not depend on timing
            # nor on how many ticks come in one call.
            stop = min(end, tick + ENCODE_BATCH - len(self._pending), tick + self.batch_limit(tick))
            self._packets += packets[2 * (tick - first):2 * (stop - first)]
            self._pending += [(t, wall) for t in range(tick, stop)]
            tick = stop
            if (stop - 1) % SNAPSHOT_INTERVAL == 0:
                if stop != end:
                    raise ValueError(f"tick {stop - 1} is due for a snapshot: it must end a call of Recorder.ticks")
                self._encode_pending()
                self.writer.snapshot(stop - 1, np.concatenate([np.asarray(page) for page in state]))
            elif len(self._pending) >= ENCODE_BATCH:
                self._encode_pending()
        self.current_tick = end
        if self.writer.flush_due(wall):
            self.writer.flush()

    def packet(self, direction: int, data: bytes) -> None:
        """Bytes sent (0) or received (1) now, belonging to the tick in progress."""
        self._packets.append((direction, self.current_tick, self.writer.wall_ns(), data))

    def exchanged(self, first_tick: int, entries: np.ndarray, answered: int, state) -> None:
        """Record what the compiled exchange did (a slice of its journal, from ``first_tick`` on),
        as the loop that calls the tick once per tick records it: for each of the first
        ``answered`` entries its SENSORS, its reply and the tick itself; then the SENSORS of an
        entry handed back unanswered, if it was sent. ``state``: the state after the last tick
        flown, which is the last answered unless a tick was handed back (a tick due for a
        SNAPSHOT ends its batch, so its state is this one either way)."""
        origin = self.writer.origin_ns()
        sent, received = entries["sent"], entries["received"]
        sent_lengths, received_lengths = entries["sent_length"].tolist(), entries["received_length"].tolist()
        sent_walls, received_walls = (entries["sent_ns"] - origin).tolist(), (entries["received_ns"] - origin).tolist()
        packets = []
        for index in range(answered):
            tick = first_tick + index
            packets += ((0, tick, sent_walls[index], sent[index, :sent_lengths[index]].tobytes()),
                        (1, tick, received_walls[index], received[index, :received_lengths[index]].tobytes()))
        self.ticks(first_tick, answered, state, packets)
        if len(entries) > answered and sent_lengths[answered]:
            self._packets.append((0, self.current_tick, sent_walls[answered],
                                  sent[answered, :sent_lengths[answered]].tobytes()))

    def _encode_pending(self) -> None:
        """Each write holds its TICK records, then its PACKET records; every one carries its tick and time."""
        if self._pending:
            ticks, walls = zip(*self._pending)
            self.writer.ticks(ticks, walls, self._trace.held(ticks), self._trace.layout)
            self._pending.clear()
        self.writer.packets(self._packets)
        self._packets.clear()

    def close(self, footer: dict) -> None:
        self._encode_pending()
        self.writer.close(footer)


