"""The flight log: one append-only file per run, every record framed and checksummed.

Layout: the 8-byte magic ``HILLOG\\x00\\x01``, then records::

    u32 LE  length of the payload
    u8      kind
    bytes   payload
    u32 LE  CRC-32 of the kind byte and the payload

Records are appended and never rewritten, so a run killed at any instant leaves a file whose
every complete record reads back. The recorder encodes records in groups of 64 ticks (and at
each SNAPSHOT): the group's TICK records in tick order, then its PACKET records in the order
they were sent and received (each carries its tick and wall time). It writes what is encoded
every 50 ms, so a killed run loses at most the last 50 ms and 64 ticks, and in lockstep with
the exchange compiled into the tick loop, the loop in flight, which returns every 20 ms.

A reader (:class:`LogReader` a chunk at a time, :func:`read` whole) goes on past a damaged
record to the next intact one and reports every damaged span with the ticks it lost; a header
that is not one hil writes is refused (:class:`LogError`).

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
import math
import os
import re
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
TICK_PREFIX = struct.Struct("<Iq8s")
PACKET_PREFIX = struct.Struct("<BIq")
PACKET_HEAD = struct.Struct("<IB" + PACKET_PREFIX.format.lstrip("<"))  # record length and kind, then the prefix
CRC = struct.Struct("<I")
SNAPSHOT_INTERVAL = 1000  # ticks
FLUSH_INTERVAL = 0.05  # s between writes of buffered records
ENCODE_BATCH = 64  # ticks encoded at a time (a run killed loses at most these, and the unwritten ones)


def file_name(text: str, limit: int = 64) -> str:
    """``text`` (a scenario's name, a test's id) cut down to letters, digits, ``.``, ``-`` and ``_``
    and ``limit`` characters: a name that cannot place a file outside its folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:limit] or "run"


def claim(parent: Path, stem: str, suffix: str = ".hillog", *, numbered: bool = False, folder: bool = False) -> Path:
    """A new path in ``parent``, made at once so that no other process takes it: ``stem + suffix``,
    or when that is taken ``stem-2 + suffix``, ``stem-3 + suffix``... (``numbered``: from
    ``stem-1``); an empty file, or with ``folder`` an empty folder. Two runs started in the same
    second under the same name each keep their own. Makes ``parent``; OSError when it cannot."""
    parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        path = parent / (f"{stem}-{number}{suffix}" if numbered or number > 1 else f"{stem}{suffix}")
        try:
            if folder:
                path.mkdir()
            else:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            number += 1


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


class LogError(ValueError):
    """Not a hil flight log, or its header is not one hil writes: bad input that no reading mends."""


FORMAT = 1
MAX_HEADER = 8 * 1024 * 1024  # bytes of a HEADER or FOOTER record: a scenario's text, a run's summary
MAX_WIDTH = 4096  # columns of a row: hil's rows hold about 60; a layout beyond this is crafted, not recorded
# The true state's columns as hil writes them, which log, replay, export and plot read by name.
STATE_COLUMN_SIZES = {"position": 3, "velocity": 3, "attitude": 4, "angular_rate": 3}
MAX_PACKET = 1024 * 1024  # bytes of a PACKET record: a frame, or what one read of a serial port returned
MAX_SNAPSHOT = 1024 * 1024  # bytes of a SNAPSHOT record: a flat state of a few hundred numbers
MAX_RATE_HZ = 1_000_000.0
READ_SIZE = 1024 * 1024  # bytes read at a time: a reader holds about this and the record it is reading
CHUNK_TICKS = 4096  # rows in one chunk of LogReader.chunks


@dataclass
class Damage:
    """A span of bytes that holds no intact record, and the ticks it cost."""

    offset: int
    length: int
    reason: str  # why the record at ``offset`` did not read
    after_tick: int  # the last tick read before the span (-1: none)
    next_tick: int | None = None  # the first tick after the span that the log holds or the run flew; None: unknown

    @property
    def ticks_lost(self) -> tuple[int, int | None] | None:
        """(first, last) tick the span lost (last None: every tick from first on); None: no tick lost."""
        first = self.after_tick + 1
        if self.next_tick is None:
            return first, None
        return (first, self.next_tick - 1) if self.next_tick > first else None

    def __str__(self) -> str:
        lost = self.ticks_lost
        if lost is None:
            cost = "no tick lost"
        elif lost[1] is None:  # how many the run flew after it, only a footer would say
            cost = f"no tick after tick {self.after_tick} is in the log" if lost[0] else "no tick is in the log"
        else:
            cost = f"ticks {lost[0]}–{lost[1]} lost" if lost[1] > lost[0] else f"tick {lost[0]} lost"
        return f"bytes {self.offset}–{self.offset + self.length - 1} ({self.length} B): {self.reason}; {cost}"


@dataclass
class Chunk:
    """Consecutive TICK records' rows: row i is tick ``first + i``."""

    first: int
    rows: np.ndarray  # (ticks, width) float64
    snapshot: np.ndarray | None = None  # the flat state after the chunk's last tick, where the log holds one

    @property
    def ticks(self) -> np.ndarray:
        return np.arange(self.first, self.first + len(self.rows))


def check_header(header, path) -> dict:
    """``header`` if it is one hil writes (each field's type and range, the layout's columns),
    else :class:`LogError` naming the file and the field."""
    def refuse(name, message):
        raise LogError(f"{path}: header field {name}: {message}")

    if not isinstance(header, dict):
        raise LogError(f"{path}: the header is a {type(header).__name__}, not a map: not a hil flight log")
    expected = {"format": "an integer", "hil": "a string", "scenario": "a string", "scenario_text": "a string",
                "seed": "an integer", "duration": "a number", "rate_hz": "a number", "runtime": "a string",
                "layout": "a map", "versions": "a map", "started_utc": "a string"}
    types = {"an integer": (int,), "a number": (int, float), "a string": (str,), "a map": (dict,)}
    for name, kind in expected.items():
        if name not in header:
            refuse(name, "missing")
        if not isinstance(header[name], types[kind]) or isinstance(header[name], bool):
            refuse(name, f"expected {kind}, got {type(header[name]).__name__}")
    if header["format"] != FORMAT:
        refuse("format", f"{header['format']} is not a format this hil reads ({FORMAT})")
    if not 0 <= header["seed"] < 2**63:
        refuse("seed", f"{header['seed']} is outside 0 to 2**63 - 1")
    if not (math.isfinite(header["duration"]) and header["duration"] > 0):
        refuse("duration", f"{header['duration']!r} s is not a positive, finite length")
    if not (math.isfinite(header["rate_hz"]) and 0 < header["rate_hz"] <= MAX_RATE_HZ):
        refuse("rate_hz", f"{header['rate_hz']!r} is outside 0 (excluded) to {MAX_RATE_HZ:g} Hz")
    if not all(isinstance(value, str) for value in header["versions"].values()):
        refuse("versions", "expected a map of names to version strings")
    spans = []
    for name, span in header["layout"].items():
        if not isinstance(name, str):
            refuse("layout", f"column name {name!r} is not a string")
        if not (isinstance(span, list) and len(span) == 2 and all(type(value) is int for value in span)):
            refuse(f"layout.{name}", f"expected [offset, size], two integers, got {span!r:.80}")
        offset, size = span
        # A zero-width column is real: ``fresh`` in a scenario without sensors.
        if not (0 <= offset < MAX_WIDTH and 0 <= size <= MAX_WIDTH - offset):
            refuse(f"layout.{name}", f"[{offset}, {size}] lies outside a row of at most {MAX_WIDTH} columns")
        if name in STATE_COLUMN_SIZES and size != STATE_COLUMN_SIZES[name]:
            refuse(f"layout.{name}", f"{size} columns where hil writes {STATE_COLUMN_SIZES[name]}")
        spans.append((offset, size, name))
    if "command" not in header["layout"]:
        refuse("layout", "no command column")
    sensors = sum(name.startswith("reading.") for name in header["layout"])
    if "fresh" in header["layout"] and header["layout"]["fresh"][1] != sensors:
        refuse("layout.fresh", f"{header['layout']['fresh'][1]} columns for {sensors} sensors (reading.* columns)")
    end = 0
    for offset, size, name in sorted(spans):
        if offset != end:
            refuse(f"layout.{name}", f"starts at column {offset} where column {end} was due (columns follow each "
                                     f"other without gaps or overlaps)")
        end = offset + size
    return header


def _check_footer(footer) -> dict:
    """``footer`` if what hil reads of a footer has the types hil writes; else ValueError."""
    if not isinstance(footer, dict):
        raise ValueError(f"a {type(footer).__name__}, not a map")
    checks = {"passed": lambda v: isinstance(v, bool), "failure": lambda v: v is None or isinstance(v, str),
              "ticks": lambda v: type(v) is int and v >= 0,
              "outcomes": lambda v: isinstance(v, list) and all(
                  isinstance(o, dict) and isinstance(o.get("passed"), bool) and isinstance(o.get("name", ""), str)
                  for o in v),
              "link": lambda v: isinstance(v, list) and all(
                  isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in v)}
    for name, check in checks.items():
        if name in footer and not check(footer[name]):
            raise ValueError(f"field {name} is not what hil writes: {footer[name]!r:.80}")
    return footer


class _Window:
    """A file's bytes from an offset on, read ahead :data:`READ_SIZE` at a time; bytes well
    before the last offset asked for are let go."""

    def __init__(self, handle, offset: int):
        handle.seek(offset)
        self._handle, self._base, self._data, self._end = handle, offset, bytearray(), False

    def get(self, offset: int, size: int) -> bytes:
        """The file's bytes from ``offset``, ``size`` of them or fewer at the end of the file."""
        if offset - self._base > READ_SIZE:
            del self._data[:offset - self._base]
            self._base = offset
        while self._base + len(self._data) < offset + size and not self._end:
            more = self._handle.read(max(READ_SIZE, offset + size - self._base - len(self._data)))
            self._end = not more
            self._data += more
        return bytes(self._data[offset - self._base:offset + size - self._base])


def _lengths_fit(kinds, lengths, width: int):
    """Whether records of these kinds may have these lengths (NumPy arrays or plain ints)."""
    return (((kinds == TICK) & (lengths == TICK_PREFIX.size + 8 * width))
            | ((kinds == PACKET) & (lengths >= PACKET_PREFIX.size) & (lengths <= MAX_PACKET))
            | ((kinds == SNAPSHOT) & (lengths >= 4) & (lengths <= MAX_SNAPSHOT) & ((lengths - 4) % 8 == 0))
            | ((kinds == FOOTER) & (lengths <= MAX_HEADER)))


def _frame(window: _Window, offset: int, fits):
    """(kind, payload) of the record at ``offset`` if ``fits(kind, length)`` and its CRC holds; else why not."""
    head = window.get(offset, 5)
    if len(head) < 5:
        return f"cut inside a record header ({len(head)} of 5 bytes)"
    length, kind = struct.unpack("<IB", head)
    name = KIND_NAMES.get(kind, f"kind-{kind}")
    if not fits(kind, length):
        return f"no record hil writes starts here (a {name} record of {length} bytes)"
    body = window.get(offset + 4, length + 5)
    if len(body) < length + 5:
        return f"cut inside a {name} record ({len(body) + 4} of {length + 9} bytes)"
    if zlib.crc32(body[:-4]) != CRC.unpack_from(body, length + 1)[0]:
        return f"CRC mismatch in a {name} record"
    return kind, body[1:-4]


def _parse(kind: int, payload: bytes, last_tick: int):
    if kind == TICK:
        tick, wall, digest = TICK_PREFIX.unpack_from(payload)
        if tick <= last_tick:
            raise ValueError(f"tick {tick} comes after tick {last_tick}")
        return tick, wall, digest, np.frombuffer(payload, "<f8", offset=TICK_PREFIX.size)
    if kind == PACKET:
        return (*PACKET_PREFIX.unpack_from(payload), payload[PACKET_PREFIX.size:])
    if kind == SNAPSHOT:
        return struct.unpack_from("<I", payload)[0], np.frombuffer(payload, "<f8", offset=4)
    return _check_footer(msgpack.unpackb(payload, raw=False))


class LogReader:
    """A flight log read in bounded memory: about :data:`READ_SIZE` and the record being read.

    Opening reads only the magic and the header, and refuses (:class:`LogError`) a file that is
    not a hil flight log or whose header is not one hil writes. Reading goes on past damage: a
    record that is cut, fails its CRC or does not parse starts a damaged span, which ends where
    the next intact record starts (the next offset with a plausible length and kind whose CRC
    holds and whose content parses). After a pass, :attr:`damage` holds every span.
    """

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                raise LogError(f"{self.path}: not a hil flight log (it does not start with hil's magic bytes)")
            found = _frame(_Window(handle, len(MAGIC)), len(MAGIC),
                           lambda kind, length: kind == HEADER and length <= MAX_HEADER)
        if isinstance(found, str):
            raise LogError(f"{self.path}: its header record does not read: {found}")
        try:
            header = msgpack.unpackb(found[1], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise LogError(f"{self.path}: its header record does not parse: {error}") from None
        self.header = check_header(header, self.path)
        self.layout = {name: tuple(span) for name, span in header["layout"].items()}
        self.width = sum(size for _, size in self.layout.values())
        self.rate = float(header["rate_hz"])
        self._body = len(MAGIC) + 9 + len(found[1])
        self.damage: list[Damage] = []
        self.footer: dict | None = None
        self.intact = 1  # intact records read, the header's included
        self.read_whole = False  # a pass has reached the end of the file

    @property
    def complete(self) -> bool:
        """Read to its end, undamaged, with a footer."""
        return self.read_whole and not self.damage and self.footer is not None

    def require(self, *columns: str) -> None:
        """:class:`LogError` unless the layout has these columns (what a command reads of a row)."""
        missing = [name for name in columns if name not in self.layout]
        if missing:
            raise LogError(f"{self.path}: header field layout: no {', '.join(missing)} column")

    def records(self):
        """(kind, value) for each intact record after the header, in file order: TICK (tick, wall
        ns, digest, row), PACKET (direction, tick, wall ns, bytes), SNAPSHOT (tick, flat state),
        FOOTER (map). A new pass starts at each call."""
        self.damage, self.footer, self.intact, self.read_whole = [], None, 1, False
        last_tick, offset, waiting = -1, self._body, []  # waiting: damage before any tick read since
        with open(self.path, "rb") as handle:
            window = _Window(handle, offset)
            while True:
                found = self._record_at(window, offset, last_tick)
                if isinstance(found, str):
                    if not window.get(offset, 1):
                        break
                    reason = found
                    found, end = self._next_record(window, offset + 1, last_tick)
                    waiting.append(Damage(offset, end - offset, reason, last_tick))
                    self.damage.append(waiting[-1])
                    if found is None:
                        break
                kind, value, offset = found
                self.intact += 1
                if kind == TICK:
                    last_tick = value[0]
                    for damage in waiting:
                        damage.next_tick = last_tick
                    waiting.clear()
                elif kind == FOOTER:
                    self.footer = value
                yield kind, value
        if self.footer is not None and "ticks" in self.footer:
            for damage in waiting:  # the run's own count of its ticks tells what the end lost
                damage.next_tick = max(self.footer["ticks"], last_tick + 1)
        self.read_whole = True

    def _record_at(self, window: _Window, offset: int, last_tick: int):
        """(kind, value, end) of the intact record at ``offset``, or why there is none."""
        found = _frame(window, offset, lambda kind, length: _lengths_fit(kind, length, self.width))
        if isinstance(found, str):
            return found
        kind, payload = found
        try:
            return kind, _parse(kind, payload, last_tick), offset + len(payload) + 9
        except (ValueError, TypeError, struct.error, msgpack.UnpackException) as error:
            return f"{KIND_NAMES[kind]} record does not parse: {error}"

    def _next_record(self, window: _Window, offset: int, last_tick: int):
        """The first intact record from ``offset`` on as ``_record_at`` gives it, and its offset;
        (None, the file's size) if there is none. Offsets whose length and kind could start a
        record are found with NumPy a block at a time, blocks growing from a few records' length
        (the next record is usually close); only those offsets are checked whole."""
        size = 4096
        while True:
            block = np.frombuffer(window.get(offset, size + 4), np.uint8)
            size = min(2 * size, READ_SIZE)
            starts = len(block) - 4
            if starts <= 0:
                return None, offset + len(block)
            lengths = sum(block[i:i + starts].astype(np.uint32) << (8 * i) for i in range(4))
            for start in np.flatnonzero(_lengths_fit(block[4:4 + starts], lengths, self.width)).tolist():
                found = self._record_at(window, offset + start, last_tick)
                if not isinstance(found, str):
                    return found, offset + start
            offset += starts

    def chunks(self, size: int = CHUNK_TICKS):
        """The log's TICK records as :class:`Chunk` s of at most ``size`` consecutive ticks; a
        chunk ends at a gap in the ticks and at a tick the log holds a snapshot of."""
        first, rows = None, []

        def chunk(snapshot=None):
            done = Chunk(first, np.array(rows).reshape(len(rows), self.width), snapshot)
            rows.clear()
            return done

        for kind, value in self.records():
            if kind == TICK:
                tick, row = value[0], value[3]
                if rows and (tick != first + len(rows) or len(rows) == size):
                    yield chunk()
                if not rows:
                    first = tick
                rows.append(row)
            elif kind == SNAPSHOT and rows and value[0] == first + len(rows) - 1:
                yield chunk(value[1])
        if rows:
            yield chunk()


@dataclass
class FlightLog:
    """A whole log in memory (see :class:`LogReader` for one read in bounded memory)."""

    path: Path
    header: dict
    ticks: list = field(default_factory=list)  # (tick, wall_ns, digest)
    rows: list = field(default_factory=list)  # one float64 array per tick
    packets: list = field(default_factory=list)  # (direction, tick, wall_ns, bytes)
    snapshots: list = field(default_factory=list)  # (tick, np.ndarray)
    footer: dict | None = None
    damage: list = field(default_factory=list)  # Damage: every span that held no intact record
    records: int = 0  # intact records

    @property
    def complete(self) -> bool:
        return not self.damage and self.footer is not None


def read(path) -> FlightLog:
    """Every intact record of a log, and every damaged span; :class:`LogError` if it is not a hil flight log."""
    reader = LogReader(path)
    log = FlightLog(reader.path, reader.header)
    for kind, value in reader.records():
        if kind == TICK:
            log.ticks.append(value[:3])
            log.rows.append(value[3])
        elif kind == PACKET:
            log.packets.append(value)
        elif kind == SNAPSHOT:
            log.snapshots.append(value)
    log.footer, log.damage, log.records = reader.footer, reader.damage, reader.intact
    return log


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


