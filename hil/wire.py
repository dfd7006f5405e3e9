"""The native wire protocol: messages, framing and a resynchronising stream reader.

A frame is ``COBS(payload || CRC-32(payload) little-endian) || 0x00``; the payload is one
msgpack array ``[type, seq, tick, ...fields]``. docs/protocol.md is the reference, byte by
byte, with test vectors that tests/test_wire.py checks against this module.

Every limit is enforced before anything is allocated from a length the peer declared: a
frame longer than :data:`MAX_FRAME` is dropped while it is still being read, and msgpack is
unpacked with caps on every array, string and binary length.
"""

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Union

import msgpack

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 512  # bytes of msgpack in one frame
MAX_FRAME = MAX_PAYLOAD + 4 + (MAX_PAYLOAD + 4) // 254 + 1  # COBS-encoded payload and CRC, no delimiter
MAX_ENCODED = MAX_FRAME + 1  # a whole frame, delimiter included: the largest datagram
MAX_TEXT = 200  # bytes of UTF-8 in a STATUS or GOODBYE text
MAX_VALUES = 64  # floats in one SENSORS or ACTUATORS message
MAX_SENSORS = 16
MAX_PARAM_VALUES = 48  # floats in one PARAM: 48 float64 and a name fit the payload limit
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32: every float on the wire fits one

HELLO, SENSORS, ACTUATORS, HEARTBEAT, STATUS, GOODBYE, PARAM, PARAM_ACK = 1, 2, 3, 4, 5, 6, 7, 8
SEVERITIES = ("debug", "info", "warning", "error", "critical")
(GOODBYE_NORMAL, GOODBYE_VERSION_MISMATCH, GOODBYE_LAYOUT_MISMATCH, GOODBYE_TIMEOUT, GOODBYE_ERROR,
 GOODBYE_PARAMETER) = range(6)
UINT32 = 2**32


class FrameError(ValueError):
    """A frame that cannot be accepted; ``kind`` is a counter name: crc, cobs, msgpack, message, oversize."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class NonFinite(ValueError):
    """A float that cannot go on the wire: ``index`` into the message's ``field``, and its ``value``."""

    def __init__(self, field_name: str, index: int, value: float):
        super().__init__(f"{field_name}[{index}] is {value!r}: the protocol carries finite float32 values only")
        self.field = field_name
        self.index = index
        self.value = value


@dataclass(frozen=True)
class SensorSpec:
    name: str
    fields: int  # float values per reading
    rate_hz: float


@dataclass(frozen=True)
class Hello:
    seq: int
    version: int
    role: str  # "hil" or "firmware"
    vehicle: str
    actuators: int
    tick_rate_hz: int
    sensors: tuple[SensorSpec, ...]
    tick: int = 0
    # A firmware's only: the parameter set it takes over the link before tick 0 ("" for none). A
    # HELLO without it has 9 elements, one with it 10.
    params: str = ""


@dataclass(frozen=True)
class Sensors:
    seq: int
    tick: int
    fresh: int  # bit i set: sensor i of the HELLO layout has a new reading in ``values``
    values: tuple[float, ...]  # the fresh readings, concatenated in layout order


@dataclass(frozen=True)
class Actuators:
    seq: int
    tick: int  # the SENSORS tick this answers
    values: tuple[float, ...]


@dataclass(frozen=True)
class Heartbeat:
    seq: int
    tick: int


@dataclass(frozen=True)
class Status:
    seq: int
    tick: int
    severity: int
    text: str


@dataclass(frozen=True)
class Goodbye:
    seq: int
    tick: int
    code: int
    reason: str


@dataclass(frozen=True)
class Param:
    """Parameter ``index`` of a set of ``count`` that hil gives a firmware before tick 0."""

    seq: int
    tick: int
    index: int
    count: int
    name: str
    values: tuple[float, ...]  # written as float64: a parameter is the scenario's number to the bit


@dataclass(frozen=True)
class ParamAck:
    """The firmware took PARAM ``index``; for the last of the set, it also took the set as a whole."""

    seq: int
    tick: int
    index: int


@dataclass(frozen=True)
class ParameterSet:
    """What hil gives a firmware whose HELLO asks for parameter set ``name``: one PARAM per entry."""

    name: str
    entries: tuple[tuple[str, tuple[float, ...]], ...]


Message = Union[Hello, Sensors, Actuators, Heartbeat, Status, Goodbye, Param, ParamAck]


# ---- framing -----------------------------------------------------------------------------------

def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (the zlib and Ethernet CRC): check value 0xCBF43926 for b"123456789"."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result holds no zero byte.

    As the reference encoder: input that ends exactly at a full 254-byte block gets no
    trailing empty block. Works on the runs between zeros (C-speed splits), not byte by byte.
    """
    out = bytearray()
    runs = data.split(b"\x00")
    last = len(runs) - 1
    for index, run in enumerate(runs):
        while len(run) >= 254:
            out.append(255)
            out += run[:254]
            run = run[254:]
            if not run and index == last:
                return bytes(out)
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    index = 0
    while index < len(data):
        code = data[index]
        if code == 0:
            raise FrameError("cobs", f"zero byte inside a frame at offset {index}")
        end = index + code
        if end > len(data):
            raise FrameError("cobs", f"block at offset {index} runs {end - len(data)} bytes past the frame")
        block = data[index + 1:end]
        if 0 in block:
            raise FrameError("cobs", "zero byte inside a block")
        out += block
        index = end
        if code != 255 and index < len(data):
            out.append(0)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """Wrap a msgpack payload: COBS(payload || CRC-32 LE) followed by the 0x00 delimiter."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return cobs_encode(payload + struct.pack("<I", crc32(payload))) + b"\x00"


def unframe(encoded: bytes) -> bytes:
    """The payload of one frame given without its delimiter; raises :class:`FrameError`."""
    if len(encoded) > MAX_FRAME:
        raise FrameError("oversize", f"{len(encoded)} bytes, limit {MAX_FRAME}")
    decoded = cobs_decode(encoded)
    if len(decoded) < 5:
        raise FrameError("cobs", f"{len(decoded)} bytes decoded, need at least a 1-byte payload and the CRC")
    payload, (received,) = decoded[:-4], struct.unpack("<I", decoded[-4:])
    expected = crc32(payload)
    if received != expected:
        raise FrameError("crc", f"CRC {received:08x} but payload gives {expected:08x}")
    return payload


# ---- messages ----------------------------------------------------------------------------------

def _finite32(value: float) -> bool:
    """A float the wire carries: finite and within float32 (NaN fails both comparisons)."""
    return -FLOAT32_MAX <= value <= FLOAT32_MAX


def _writable(values, name: str, finite=_finite32) -> list[float]:
    """Floats to write, each ``finite`` (by default: finite and within float32, as all but a PARAM's
    values); raises :class:`NonFinite` (the wire has no NaN)."""
    floats = [float(v) for v in values]
    if not all(map(finite, floats)):
        bad = next(i for i, v in enumerate(floats) if not finite(v))
        raise NonFinite(name, bad, floats[bad])
    return floats


def pack(message: Message) -> bytes:
    """The msgpack payload of a message (floats as float32 but PARAM's, integers in their shortest form)."""
    if isinstance(message, Param):
        if len(message.values) > MAX_PARAM_VALUES:
            raise ValueError(f"parameter {message.name}: {len(message.values)} values, the limit is {MAX_PARAM_VALUES}")
        values = _writable(message.values, f"parameter {message.name}", math.isfinite)
        return msgpack.packb([PARAM, message.seq, message.tick, message.index, message.count, message.name, values],
                             use_single_float=False)
    if isinstance(message, Hello):
        body = [HELLO, message.seq, message.tick, message.version, message.role, message.vehicle,
                message.actuators, message.tick_rate_hz,
                [[s.name, s.fields, *_writable((s.rate_hz,), f"sensor {s.name} rate_hz")] for s in message.sensors]]
        if message.params:
            body.append(message.params)
    elif isinstance(message, Sensors):
        body = [SENSORS, message.seq, message.tick, message.fresh, _writable(message.values, "values")]
    elif isinstance(message, Actuators):
        body = [ACTUATORS, message.seq, message.tick, _writable(message.values, "values")]
    elif isinstance(message, Heartbeat):
        body = [HEARTBEAT, message.seq, message.tick]
    elif isinstance(message, Status):
        body = [STATUS, message.seq, message.tick, message.severity, message.text]
    elif isinstance(message, Goodbye):
        body = [GOODBYE, message.seq, message.tick, message.code, message.reason]
    elif isinstance(message, ParamAck):
        body = [PARAM_ACK, message.seq, message.tick, message.index]
    else:
        raise TypeError(f"not a protocol message: {message!r}")
    return msgpack.packb(body, use_single_float=True)


def encode(message: Message) -> bytes:
    """One complete frame, delimiter included."""
    return frame(pack(message))


def _unpack(payload: bytes):
    try:
        return msgpack.unpackb(payload, max_array_len=MAX_VALUES, max_str_len=MAX_TEXT * 4, max_bin_len=0,
                               max_map_len=0, max_ext_len=0, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, UnicodeDecodeError) as error:
        raise FrameError("msgpack", str(error)) from None


def _uint(value, name, limit=UINT32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise FrameError("message", f"{name} must be an unsigned integer below {limit}, got {value!r}")
    return value


def _text(value, name) -> str:
    if not isinstance(value, str) or len(value.encode()) > MAX_TEXT:
        raise FrameError("message", f"{name} must be a string of at most {MAX_TEXT} bytes")
    return value


def _floats(value, name, finite=_finite32, limit=MAX_VALUES) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, float) for v in value):
        raise FrameError("message", f"{name} must be an array of floats, at most {limit}")
    if not all(map(finite, value)):
        within = "finite" if finite is math.isfinite else "finite and within float32"
        raise FrameError("message", f"{name} must be {within}, got {value!r}")
    return tuple(value)


_ARITY = {HELLO: (9, 10), SENSORS: (5,), ACTUATORS: (4,), HEARTBEAT: (3,), STATUS: (5,), GOODBYE: (5,), PARAM: (7,),
          PARAM_ACK: (4,)}


def parse(payload: bytes) -> Message:
    """A message from its msgpack payload; raises :class:`FrameError` naming what is wrong."""
    body = _unpack(payload)
    if not isinstance(body, list) or not body:
        raise FrameError("message", "the payload must be a msgpack array [type, seq, tick, ...]")
    kind = body[0]
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in _ARITY:
        raise FrameError("message", f"unknown message type {kind!r}")
    if len(body) not in _ARITY[kind]:
        raise FrameError("message", f"message type {kind} has {' or '.join(map(str, _ARITY[kind]))} elements, "
                                    f"got {len(body)}")
    seq, tick = _uint(body[1], "seq"), _uint(body[2], "tick")
    if kind == HELLO:
        sensors = body[8]
        if not isinstance(sensors, list) or len(sensors) > MAX_SENSORS:
            raise FrameError("message", f"HELLO sensors must be an array of at most {MAX_SENSORS}")
        specs = []
        for entry in sensors:
            # rate_hz, the one float field that may come as an integer: it is informational.
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], (float, int))
                    and not isinstance(entry[2], bool) and _finite32(entry[2])):
                raise FrameError("message", "each HELLO sensor is [name, fields, rate_hz], rate_hz a finite number")
            specs.append(SensorSpec(_text(entry[0], "sensor name"), _uint(entry[1], "sensor fields", MAX_VALUES + 1),
                                    float(entry[2])))
        role = _text(body[4], "role")
        return Hello(seq, _uint(body[3], "version"), role, _text(body[5], "vehicle"),
                     _uint(body[6], "actuators", MAX_VALUES + 1), _uint(body[7], "tick_rate_hz"), tuple(specs), tick,
                     _text(body[9], "params") if len(body) == 10 else "")
    if kind == SENSORS:
        return Sensors(seq, tick, _uint(body[3], "fresh"), _floats(body[4], "values"))
    if kind == ACTUATORS:
        return Actuators(seq, tick, _floats(body[3], "values"))
    if kind == HEARTBEAT:
        return Heartbeat(seq, tick)
    if kind == STATUS:
        return Status(seq, tick, _uint(body[3], "severity", len(SEVERITIES)), _text(body[4], "text"))
    if kind == GOODBYE:
        return Goodbye(seq, tick, _uint(body[3], "code"), _text(body[4], "reason"))
    if kind == PARAM:
        count = _uint(body[4], "count")
        if count == 0:
            raise FrameError("message", "PARAM count must be at least 1")
        return Param(seq, tick, _uint(body[3], "index", count), count, _text(body[5], "name"),
                     _floats(body[6], "values", math.isfinite, MAX_PARAM_VALUES))
    return ParamAck(seq, tick, _uint(body[3], "index"))


def decode(encoded: bytes) -> Message:
    """A message from one frame without its delimiter."""
    return parse(unframe(encoded))


# ---- byte streams ------------------------------------------------------------------------------

@dataclass
class StreamCounters:
    frames: int = 0
    garbage_bytes: int = 0  # bytes dropped: oversize runs and frames that failed to decode
    resyncs: int = 0  # times the reader dropped data and picked up at the next delimiter
    errors: dict = field(default_factory=dict)  # FrameError.kind -> count

    def count(self, kind: str):
        self.errors[kind] = self.errors.get(kind, 0) + 1


class FrameReader:
    """Splits a byte stream (serial, TCP, a pty) into messages, resynchronising after noise.

    ``feed(data)`` returns every message completed by ``data``; bad frames are counted, never
    raised. A run of more than :data:`MAX_FRAME` bytes without a delimiter is dropped as it
    arrives, so noise cannot grow the buffer.
    """

    def __init__(self):
        self.counters = StreamCounters()
        self._buffer = bytearray()
        self._discarding = False

    @property
    def idle(self) -> bool:
        """Between frames: no part of one buffered, not dropping an oversize run."""
        return not self._buffer and not self._discarding

    def feed(self, data: bytes) -> list[Message]:
        messages = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._discarding:
                if len(self._buffer) + len(chunk) > MAX_FRAME:
                    self.counters.count("oversize")
                    self.counters.resyncs += 1
                    self.counters.garbage_bytes += len(self._buffer)
                    self._buffer.clear()
                    self._discarding = True
                else:
                    self._buffer += chunk
            if self._discarding:
                self.counters.garbage_bytes += len(chunk)
            if end < 0:
                return messages
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                encoded = bytes(self._buffer)
                self._buffer.clear()
                try:
                    message = decode(encoded)
                except FrameError as error:
                    self.counters.count(error.kind)
                    self.counters.resyncs += 1
                    self.counters.garbage_bytes += len(encoded) + 1
                else:
                    self.counters.frames += 1
                    messages.append(message)
            start = end + 1
