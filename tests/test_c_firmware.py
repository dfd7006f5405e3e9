"""The C side of the wire protocol (firmware_stubs/c/) against hil/wire.py, and the C firmware end to end.

- hil_proto: the doc's test vectors and random messages encode byte for byte as hil.wire does;
  decoding agrees with hil.wire on valid frames and, error kind included, on thousands of
  corrupted ones (one process invocation of the test_vectors program);
- quad_pid.c: the C controller tracks the Python one (firmware_stubs/quad_pid.py) to rounding;
- c_build: cached builds, rebuilt when a source changes, clear errors;
- hil_quad_pid: HELLO, lockstep SENSORS/ACTUATORS, STATUS, duplicates and GOODBYE over real
  UDP on loopback and over a pseudo-terminal, and its exit statuses.
"""

import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
import tty

import numpy as np
import pytest

from support import ROOT
from hil import wire
from hil.firmware_stubs import c_build, command_line

pytestmark = pytest.mark.skipif(shutil.which((c_build.compiler() or ["cc"])[0]) is None,
                                reason="no C compiler ($CC or cc)")

SENSOR_LAYOUT = (wire.SensorSpec("imu", 6, 1000.0), wire.SensorSpec("baro", 2, 50.0), wire.SensorSpec("mag", 3, 100.0),
                 wire.SensorSpec("gps", 6, 10.0))
AT_REST = {"imu": [0.0, 0.0, 0.0, 0.0, 0.0, -9.80665], "baro": [101325.0, 288.15], "mag": [2e-5, 0.0, 4e-5],
           "gps": [0.0] * 6}


@pytest.fixture(scope="module")
def test_vectors():
    return c_build.build_test_vectors()


@pytest.fixture(scope="module")
def firmware():
    return c_build.build("hil_quad_pid")


def run_lines(program, lines: list[str]) -> list[str]:
    result = subprocess.run([str(program)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# ---- the canonical text form test_vectors reads and prints ----------------------------------------

def _f(value: float) -> str:
    return struct.pack(">d", value).hex()


def _s(text: str) -> str:
    return text.encode().hex() or "-"


def canon(m: wire.Message) -> str:
    if isinstance(m, wire.Hello):
        parts = [1, m.seq, m.tick, m.version, _s(m.role), _s(m.vehicle), m.actuators, m.tick_rate_hz, len(m.sensors)]
        for s in m.sensors:
            parts += [_s(s.name), s.fields, _f(s.rate_hz)]
        parts.append(_s(m.params))
    elif isinstance(m, wire.Param):
        parts = [7, m.seq, m.tick, m.index, m.count, _s(m.name), len(m.values), *map(_f, m.values)]
    elif isinstance(m, wire.ParamAck):
        parts = [8, m.seq, m.tick, m.index]
    elif isinstance(m, wire.Sensors):
        parts = [2, m.seq, m.tick, m.fresh, len(m.values), *map(_f, m.values)]
    elif isinstance(m, wire.Actuators):
        parts = [3, m.seq, m.tick, len(m.values), *map(_f, m.values)]
    elif isinstance(m, wire.Heartbeat):
        parts = [4, m.seq, m.tick]
    elif isinstance(m, wire.Status):
        parts = [5, m.seq, m.tick, m.severity, _s(m.text)]
    else:
        parts = [6, m.seq, m.tick, m.code, _s(m.reason)]
    return " ".join(map(str, parts))


def python_decode(encoded: bytes) -> str:
    try:
        return "OK " + canon(wire.decode(encoded))
    except wire.FrameError as error:
        return f"ERR {error.kind}"


def doc_vectors() -> dict[str, bytes]:
    names = ["hello_hil", "hello_firmware", "sensors", "actuators", "heartbeat", "status", "goodbye",
             "hello_firmware_params", "param", "param_ack", "goodbye_parameter"]
    text = (ROOT / "docs" / "protocol.md").read_text()
    frames = [bytes.fromhex(m) for m in re.findall(r"^frame\s+([0-9a-f ]+)$", text, re.MULTILINE)]
    return dict(zip(names, frames)) if len(frames) == len(names) else {}


# ---- (a) encoding and decoding agree with hil.wire ----------------------------------------------------

VECTOR_MESSAGES = {
    "hello_hil": wire.Hello(0, 1, "hil", "quadrotor", 4, 1000, SENSOR_LAYOUT),
    "hello_firmware": wire.Hello(0, 1, "firmware", "quadrotor", 4, 1000, SENSOR_LAYOUT),
    "sensors": wire.Sensors(21, 20, 0b0011, (0, 0, 0, 0, 0, -9.80665, 101325.0, 288.15)),
    "actuators": wire.Actuators(20, 20, (0.0, 0.5, 0.25, 1.0)),
    "heartbeat": wire.Heartbeat(3, 0),
    "status": wire.Status(21, 20, 1, "armed"),
    "goodbye": wire.Goodbye(4000, 20000, 0, "run complete"),
    "hello_firmware_params": wire.Hello(0, 1, "firmware", "quadrotor", 4, 1000, SENSOR_LAYOUT, params="quad_pid"),
    "param": wire.Param(1, 0, 4, 22, "inertia", (0.012, 0.012, 0.022)),
    "param_ack": wire.ParamAck(5, 0, 4),
    "goodbye_parameter": wire.Goodbye(6, 0, wire.GOODBYE_PARAMETER, "parameter mass: expected 1 value, got 3"),
}
COBS_INPUTS = {
    "cobs_00": b"\x00", "cobs_00_00": b"\x00\x00", "cobs_11_22_00_33": b"\x11\x22\x00\x33",
    "cobs_11_22_33_44": b"\x11\x22\x33\x44", "cobs_01_to_fe": bytes(range(1, 255)),
    "cobs_01_to_ff": bytes(range(1, 256)), "cobs_00_to_fe": bytes(range(0, 255)),
}


def test_the_docs_test_vectors_encode_as_hil_wire_and_the_doc_say(test_vectors):
    out = run_lines(test_vectors, ["V"])
    assert out[-1] == "END"
    produced = {name: value for _, name, value in (line.split() for line in out[:-1])}
    for name, message in VECTOR_MESSAGES.items():
        assert bytes.fromhex(produced[name]) == wire.encode(message), name
    for name, frame in doc_vectors().items():
        assert bytes.fromhex(produced[name]) == frame, f"{name}: C differs from docs/protocol.md"
    for name, data in COBS_INPUTS.items():
        assert bytes.fromhex(produced[name]) == wire.cobs_encode(data), name
    assert produced["crc_check"] == "cbf43926"


def random_text(rng: random.Random, max_bytes: int = wire.MAX_TEXT) -> str:
    alphabet = "abcxyz _-,.0123456789" + "é€ñ" + "\U0001F681"
    while True:
        text = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 31, 32, 60, 100, 200])))
        if len(text.encode()) <= max_bytes:
            return text


INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32 - 1]
# The edges of what the wire carries: no NaN or infinity, which neither side writes (see
# test_floats_that_are_not_finite_float32_are_refused_both_ways_as_hil_wire_does).
FLOATS = [0.0, -0.0, 1.0, -1.5, 1e-3, 9.80665, 101325.0, 3.4028234663852886e38, -3.4028234663852886e38, 1e-40,
          1e-45]


def random_message(rng: random.Random) -> wire.Message:
    def uint():
        return rng.choice(INTS) if rng.random() < 0.5 else rng.randrange(2**32)

    def floats(n):
        return tuple(rng.choice(FLOATS) if rng.random() < 0.3 else rng.uniform(-1e5, 1e5) for _ in range(n))

    kind = rng.randrange(1, 9)
    if kind == wire.HELLO:
        sensors = tuple(wire.SensorSpec(random_text(rng, 20), rng.randrange(65), rng.choice([0.0, 10.0, 333.3, 1e4]))
                        for _ in range(rng.randrange(0, 17)))
        return wire.Hello(uint(), uint(), random_text(rng, 60), random_text(rng, 60), rng.randrange(65), uint(),
                          sensors, uint(), rng.choice(["", "", random_text(rng, 30)]))
    if kind == wire.PARAM:
        count = rng.randrange(1, 2**32)
        values = tuple(rng.choice([*FLOATS, 1e300, -5e-324, 0.1]) if rng.random() < 0.3 else rng.uniform(-1e9, 1e9)
                       for _ in range(rng.randrange(wire.MAX_PARAM_VALUES + 1)))
        return wire.Param(uint(), uint(), rng.randrange(count), count, random_text(rng, 40), values)
    if kind == wire.PARAM_ACK:
        return wire.ParamAck(uint(), uint(), uint())
    if kind == wire.SENSORS:
        return wire.Sensors(uint(), uint(), uint(), floats(rng.randrange(65)))
    if kind == wire.ACTUATORS:
        return wire.Actuators(uint(), uint(), floats(rng.randrange(65)))
    if kind == wire.HEARTBEAT:
        return wire.Heartbeat(uint(), uint())
    if kind == wire.STATUS:
        return wire.Status(uint(), uint(), rng.randrange(5), random_text(rng))
    return wire.Goodbye(uint(), uint(), uint(), random_text(rng))


def test_random_messages_encode_and_decode_as_hil_wire_does(test_vectors):
    rng = random.Random(1)
    messages = []
    while len(messages) < 400:
        message = random_message(rng)
        try:
            wire.encode(message)
        except ValueError:  # over the 512-byte payload limit: C must refuse it too, checked below
            continue
        messages.append(message)
    lines = []
    for message in messages:
        lines += [f"E {canon(message)}", f"D {wire.encode(message)[:-1].hex()}"]
    out = run_lines(test_vectors, lines)
    assert len(out) == len(lines)
    for message, encoded, decoded in zip(messages, out[0::2], out[1::2]):
        frame = wire.encode(message)
        assert encoded == "F " + frame.hex(), message
        assert decoded == python_decode(frame[:-1]), message


def test_messages_at_and_over_the_limits(test_vectors):
    lines = ["X status 200", "X status 201", "X goodbye 200", "X goodbye 201", "X sensors 64", "X sensors 65",
             "X actuators 64", "X actuators 65", "X status 31", "X status 32", "X actuators 15", "X actuators 16"]
    out = run_lines(test_vectors, lines)
    values = tuple(float(v) for v in range(64))
    assert out[0] == "F " + wire.encode(wire.Status(1, 2, 1, "a" * 200)).hex()
    assert out[2] == "F " + wire.encode(wire.Goodbye(1, 2, 0, "a" * 200)).hex()
    assert out[4] == "F " + wire.encode(wire.Sensors(1, 2, 3, values)).hex()
    assert out[6] == "F " + wire.encode(wire.Actuators(1, 2, values)).hex()
    assert out[1] == out[3] == out[5] == out[7] == "ERR encode"
    # the shortest forms change at 32 characters (fixstr -> str8) and 16 elements (fixarray -> array16)
    assert out[8:] == ["F " + wire.encode(m).hex() for m in (
        wire.Status(1, 2, 1, "a" * 31), wire.Status(1, 2, 1, "a" * 32), wire.Actuators(1, 2, values[:15]),
        wire.Actuators(1, 2, values[:16]))]
    big = wire.Hello(0, 1, "hil", "v" * 150, 4, 1000, tuple(wire.SensorSpec("s" * 20, 6, 1.0) for _ in range(16)))
    with pytest.raises(ValueError):
        wire.encode(big)  # payload over 512 bytes
    assert run_lines(test_vectors, [f"E {canon(big)}"]) == ["ERR encode"]


# ---- (b) corrupted frames: rejected as hil.wire rejects them, without crashing -------------------------

def _frame_any(payload: bytes) -> bytes:
    """A frame without its delimiter, for payloads of any length (wire.frame refuses long ones)."""
    return wire.cobs_encode(payload + struct.pack("<I", wire.crc32(payload)))


SPECIAL_PAYLOADS = [
    bytes([0xdd, 0xff, 0xff, 0xff, 0xff]),  # array32 of 4 billion elements
    bytes([0xdc, 0xff, 0xff]) + b"\x01" * 10,  # array16 of 65535
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff]) + b"a" * 8,  # str32 of 4 GiB
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xd9, 0xff]) + b"a" * 20,  # str8 of 255, truncated
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xda, 0x01, 0x2c]) + b"a" * 300,  # 300-byte string: over 200
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xd9, 0xc8]) + b"a" * 200,  # exactly 200 bytes: fine
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xa2, 0xed, 0xa0]),  # a UTF-16 surrogate: not UTF-8
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xa2, 0xc0, 0x80]),  # overlong encoding of NUL
    bytes([0x95, 0x05, 0x01, 0x02, 0x01, 0xa1, 0x00]),  # a NUL character: valid UTF-8
    bytes([0x93, 0x04, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff]),  # bin32 of 4 GiB
    bytes([0x93, 0x04, 0x01, 0xc4, 0x00]),  # empty binary
    bytes([0x93, 0x04, 0x01, 0x80]),  # empty map
    bytes([0x93, 0x04, 0x01, 0x81, 0x01, 0x01]),  # a map
    bytes([0x93, 0x04, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff]),  # map32 of 4 billion pairs
    bytes([0x93, 0x04, 0x01, 0xc7, 0x00, 0x05]),  # empty ext
    bytes([0x93, 0x04, 0x01, 0xc7, 0x00, 0xff]),  # empty timestamp
    bytes([0x93, 0x04, 0x01, 0xc7, 0x00, 0xa0]),  # empty ext of a reserved (negative) type
    bytes([0x93, 0x04, 0x01, 0xd4, 0x01, 0x00]),  # fixext 1
    bytes([0x93, 0x04, 0x01, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),  # ext32 of 4 GiB
    bytes([0x93, 0x04, 0x01, 0xc1]),  # never used
    bytes([0x93, 0x04, 0x01, 0xc0]),  # nil
    bytes([0x93, 0x04, 0x01, 0xc3]),  # true
    bytes([0x93, 0x04, 0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0x02]),  # int64 seq
    bytes([0x93, 0x04, 0xff, 0x02]),  # negative seq
    bytes([0x93, 0x04, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0x02]),  # seq of 2**32
    bytes([0x93, 0x04, 0xce, 0xff, 0xff, 0xff, 0xff, 0x02]),  # seq of 2**32 - 1
    bytes([0x93, 0xca, 0x40, 0x80, 0, 0, 0x01, 0x02]),  # type 4.0
    bytes([0x93, 0xd0, 0x04, 0x01, 0x02]),  # type as int8
    bytes([0x93, 0x04, 0x01, 0x02, 0x00]),  # extra data
    bytes([0x94, 0x04, 0x01, 0x02]),  # too few elements
    bytes([0x90]),  # empty array
    bytes([0x04]),  # not an array
    bytes([0x91] * 400 + [0x01]),  # deeply nested
    bytes([0x95, 0x02, 0x01, 0x02, 0x01, 0x91, 0xcb]) + struct.pack(">d", 1.5),  # float64 value
    bytes([0x95, 0x02, 0x01, 0x02, 0x01, 0x91, 0x01]),  # an int where a float belongs
    bytes([0x95, 0x02, 0x01, 0x02, 0x01, 0xdc, 0x00, 0x41]) + b"\xca\x00\x00\x00\x00" * 65,  # 65 values
    bytes([0x95, 0x02, 0x01, 0x02, 0x01, 0xdc, 0x00, 0x40]) + b"\xca\x00\x00\x00\x00" * 64,  # 64 values
    bytes([0x95, 0x05, 0x01, 0x02, 0x05, 0xa0]),  # severity 5
    bytes([0x99, 0x01, 0x00, 0x00, 0x01, 0xa0, 0xa0, 0x04, 0x00, 0xdc, 0x00, 0x11])
    + bytes([0x93, 0xa1, 0x61, 0x01, 0x00]) * 17,  # 17 sensors
    bytes([0x99, 0x01, 0x00, 0x00, 0x01, 0xa0, 0xa0, 0x04, 0x00, 0x91, 0x93, 0xa1, 0x61, 0x41, 0x00]),  # 65 fields
    bytes([0x99, 0x01, 0x00, 0x00, 0x01, 0xa0, 0xa0, 0x04, 0x00, 0x91, 0x93, 0xa1, 0x61, 0x01, 0xff]),  # rate -1
    bytes([0x99, 0x01, 0x00, 0x00, 0x01, 0xa0, 0xa0, 0x41, 0x00, 0x90]),  # 65 actuators
    bytes([0x99, 0x01, 0x00, 0x00, 0x01, 0xa0, 0xa0, 0x04, 0x00, 0x91, 0x92, 0xa1, 0x61, 0x01]),  # 2-element sensor
]


def corrupted_frames(rng: random.Random, count: int) -> list[bytes]:
    """Frames (without delimiter) that are mostly wrong, at every layer."""
    valid = [wire.encode(random_message(rng))[:-1] for _ in range(80)]
    valid = [f for f in valid if len(f) <= wire.MAX_FRAME]
    payloads = [wire.unframe(f) for f in valid]
    specials = list(SPECIAL_PAYLOADS) + [bytes([0x95, 0x05, 0x01, 0x02, 0x01]) + p[-6:] for p in SPECIAL_PAYLOADS]
    frames = [_frame_any(p) for p in specials]
    markers = [0x00, 0x01, 0x7f, 0x80, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xc7, 0xca, 0xcb, 0xcc, 0xcf, 0xd0,
               0xd3, 0xd4, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff]
    while len(frames) < count:
        how = rng.randrange(8)
        frame = bytearray(rng.choice(valid))
        if how == 0:  # bit flips on the wire
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        elif how == 1:  # truncated or extended on the wire
            frame = frame[:rng.randrange(len(frame))] if rng.random() < 0.6 else frame + bytes(
                rng.randrange(1, 256) for _ in range(rng.randrange(1, 8)))
        elif how == 2:  # oversize or random noise
            frame = bytearray(rng.randrange(1, 256) for _ in range(rng.choice([5, 50, 519, 520, 521, 600, 1500])))
        else:  # a payload changed, with a valid CRC: the msgpack and message layers see it
            payload = bytearray(rng.choice(payloads))
            for _ in range(rng.randrange(1, 4)):
                where = rng.randrange(len(payload))
                change = rng.randrange(4)
                if change == 0:
                    payload[where] = rng.choice(markers)
                elif change == 1:
                    payload[where] ^= 1 << rng.randrange(8)
                elif change == 2:
                    payload[where:where] = bytes([rng.choice(markers)] + [rng.choice([0, 0xff, 1])] * rng.randrange(5))
                else:
                    del payload[where:where + rng.randrange(1, 4)]
                if not payload:
                    payload = bytearray([rng.choice(markers)])
            frame = bytearray(_frame_any(bytes(payload)))
        frames.append(bytes(frame))
    return frames


def test_corrupted_frames_are_rejected_like_hil_wire_rejects_them(test_vectors):
    rng = random.Random(7)
    frames = corrupted_frames(rng, 4000)
    out = run_lines(test_vectors, [f"D {f.hex() or '-'}" for f in frames])
    assert len(out) == len(frames)
    kinds = set()
    for frame, got in zip(frames, out):
        expected = python_decode(frame)
        assert got == expected, f"frame {frame.hex()}: C {got}, hil.wire {expected}"
        kinds.add(expected.split()[1] if expected.startswith("ERR") else "ok")
    # the mutations reach every layer
    assert {"ok", "crc", "cobs", "msgpack", "message", "oversize"} <= set(kinds)


def test_the_stream_reader_resynchronises_and_counts_like_hil_wire(test_vectors):
    rng = random.Random(11)
    frames = corrupted_frames(rng, 300)
    good = [wire.encode(random_message(rng)) for _ in range(100)]
    noise = bytes(rng.randrange(1, 256) for _ in range(2000)) + b"\x00"
    pieces = [f + b"\x00" for f in frames] + good + [b"\x00", noise]
    rng.shuffle(pieces)
    stream = b"".join(pieces) + bytes(rng.randrange(1, 256) for _ in range(700))  # ends inside an oversize run
    flushed = b"\x00" * 3 + good[0] + good[1]
    out = run_lines(test_vectors, [f"R {stream.hex()}", f"R {flushed.hex()}"])
    ends = [i for i, line in enumerate(out) if line.startswith("END")]
    assert len(ends) == 2
    for (start, end), data in zip([(0, ends[0]), (ends[0] + 1, ends[1])], [stream, flushed]):
        reader = wire.FrameReader()
        expected = [f"MSG {canon(m)}" for m in reader.feed(data)]
        assert [line for line in out[start:end] if line.startswith("MSG")] == expected
        c = reader.counters
        counts = [c.frames, c.garbage_bytes, c.resyncs] + [c.errors.get(k, 0) for k in
                                                           ("crc", "cobs", "msgpack", "message", "oversize")]
        assert out[end] == "END " + " ".join(map(str, counts))
        drops = [line.split()[1] for line in out[start:end] if line.startswith("DROP")]
        assert {k: drops.count(k) for k in set(drops)} == {k: v for k, v in c.errors.items() if v}


def test_cobs_and_crc_primitives(test_vectors):
    rng = random.Random(3)
    blobs = [bytes(rng.choice([0, 1, 0xff, rng.randrange(256)]) for _ in range(rng.randrange(0, 800)))
             for _ in range(200)]
    lines = []
    for blob in blobs:
        lines += [f"C {blob.hex() or '-'}", f"U {wire.cobs_encode(blob).hex()}", f"K {blob.hex() or '-'}"]
    out = run_lines(test_vectors, lines)
    for blob, (encoded, decoded, crc) in zip(blobs, zip(out[0::3], out[1::3], out[2::3])):
        assert encoded == "C " + wire.cobs_encode(blob).hex()
        assert decoded == "U " + (blob.hex() or "-")
        assert crc == f"K {wire.crc32(blob):08x}"
    # a standard encoder's trailing empty block after a full one decodes to the same bytes
    assert run_lines(test_vectors, ["U ff" + bytes(range(1, 255)).hex() + "01"]) == ["U " + bytes(range(1, 255)).hex()]


def test_sensor_layout_and_unpacking(test_vectors):
    hello = wire.Hello(0, 1, "hil", "quadrotor", 4, 1000, (wire.SensorSpec("extra", 2, 5.0),) + SENSOR_LAYOUT)
    imu, baro, mag, gps = AT_REST["imu"], AT_REST["baro"], AT_REST["mag"], [1.0, 2.0, -3.0, 0.5, 0.25, 0.0]
    sensors = [
        wire.Sensors(1, 0, 0b11111, (7.0, 8.0) + tuple(imu + baro + mag + gps)),  # everything
        wire.Sensors(2, 1, 0b00010, (0.5,) * 6),  # the IMU only: the others stay as they were
        wire.Sensors(3, 2, 0b00000, ()),  # nothing fresh
        wire.Sensors(4, 3, 0b00011, (0.5,) * 6),  # values too short for extra + imu: dropped
        wire.Sensors(5, 4, 0b100000, ()),  # a bit for a sensor hil does not have: dropped
        wire.Sensors(6, 5, 0b00001, (1.0, 2.0)),  # only a sensor the firmware does not need
    ]
    lines = [f"H {wire.encode(hello)[:-1].hex()}"] + [f"S {wire.encode(s)[:-1].hex()}" for s in sensors]
    for layout in (SENSOR_LAYOUT[:3], (wire.SensorSpec("imu", 9, 1.0),)):
        lines.append(f"H {wire.encode(wire.Hello(0, 1, 'hil', 'quadrotor', 4, 1000, layout))[:-1].hex()}")
    out = run_lines(test_vectors, lines)

    def readings(values):
        return " ".join(_f(float(np.float32(v))) for v in values)

    assert out[0] == "LAYOUT 0 0"
    assert out[1] == "UNPACK 1 1 1 1 1 " + readings(imu + baro + mag + gps)
    assert out[2] == "UNPACK 1 1 0 0 0 " + readings([0.5] * 6 + baro + mag + gps)
    assert out[3] == "UNPACK 1 0 0 0 0 " + readings([0.5] * 6 + baro + mag + gps)
    assert out[4] == out[5] == "UNPACK 0"
    assert out[6] == "UNPACK 1 0 0 0 0 " + readings([0.5] * 6 + baro + mag + gps)
    assert out[7] == "LAYOUT 1 3"  # gps missing
    assert out[8] == "LAYOUT 2 0"  # imu with 9 fields


# ---- (c) building ----------------------------------------------------------------------------------------

def test_build_caches_the_binary_and_rebuilds_when_a_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "jax"))
    sources = tmp_path / "c"
    shutil.copytree(c_build.SOURCE_DIR, sources)
    monkeypatch.setattr(c_build, "SOURCE_DIR", sources)
    first = c_build.build("test_vectors")
    assert first.parent == tmp_path / "jax" / "firmware"  # under the cache directory, nowhere else
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    again = c_build.build("test_vectors")
    assert again == first and again.stat().st_mtime_ns == stamp  # not compiled again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left behind
    header = sources / "hil_proto.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    changed = c_build.build("test_vectors")
    assert changed != first and changed.is_file() and first.stat().st_mtime_ns == stamp
    assert run_lines(changed, ["K 313233343536373839"]) == ["K cbf43926"]


def test_a_compiler_error_is_reported_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "jax"))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(RuntimeError, match=r"compiling test_vectors failed: .*false.* exited with status 1"):
        c_build.build("test_vectors")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(RuntimeError, match="no C compiler"):
        c_build.build("test_vectors")
    monkeypatch.delenv("CC")
    sources = tmp_path / "c"
    shutil.copytree(c_build.SOURCE_DIR, sources)
    monkeypatch.setattr(c_build, "SOURCE_DIR", sources)
    broken = sources / "test_vectors.c"
    broken.write_text(broken.read_text() + "\nint broken(void) { return }\n")
    with pytest.raises(RuntimeError, match=r"(?s)compiler output:.*test_vectors\.c.*error"):
        c_build.build("test_vectors")
    assert not [p for p in (tmp_path / "jax" / "firmware").iterdir() if p.name.startswith(".")]


# ---- the controller against the Python one --------------------------------------------------------------

def test_the_c_controller_tracks_the_python_one():
    """Open-loop readings through both controllers: same phases, throttles equal to rounding."""
    import jax
    import jax.numpy as jnp

    from hil import scenario
    from hil.firmware_stubs import quad_pid

    params = quad_pid.params_from_scenario(scenario.load(ROOT / "scenarios" / "takeoff_land.yaml"))
    params = quad_pid.QuadPidParams(**{**{f: getattr(params, f) for f in quad_pid.QuadPidParams.__dataclass_fields__},
                                       "arm_at": 0.2, "waypoints": jnp.array([[0.0, 0.0, -0.3], [0.5, 0.2, -0.3]]),
                                       "waypoint_yaw": jnp.array([0.0, 2.5]), "waypoint_hold": jnp.array([0.0, 0.05])})
    step = jax.jit(lambda s, r, f, t: quad_pid.step(params, s, r, f, t))
    rng = np.random.default_rng(5)
    state = quad_pid.init(params)
    readings = {name: np.zeros(len(values)) for name, values in AT_REST.items()}
    lines, expected = [], []
    ticks = 2300
    for k in range(ticks):
        t = k / 1000
        climb = min(max(t - 1.3, 0.0), 0.6)  # a made-up flight: up 0.36 m, drifting north-east, turning
        fresh = {"imu": True, "baro": k % 20 == 0, "mag": k % 10 == 0, "gps": k % 100 == 50}
        yaw = 0.8 * climb
        moving = float(0 < climb < 0.6)
        if fresh["imu"]:
            readings["imu"] = np.array([0.01, -0.02, 0.8 * moving, 0.1, 0.05, -9.80665 - moving]) + rng.normal(0, 0.02, 6)
        if fresh["baro"]:
            readings["baro"] = np.array([101325.0 - 12.0 * climb ** 2 + rng.normal(0, 1.0), 288.15])
        if fresh["mag"]:
            readings["mag"] = np.array([2e-5 * np.cos(yaw), -2e-5 * np.sin(yaw), 4e-5]) + rng.normal(0, 1e-7, 3)
        if fresh["gps"]:
            readings["gps"] = np.array([0.4 * climb, 0.2 * climb, -climb ** 2, 0.4, 0.2, -2 * climb])
        state, command = step(state, readings, {n: np.bool_(v) for n, v in fresh.items()}, np.float64(t))
        expected.append((int(state.phase), int(state.waypoint), np.asarray(command)))
        lines.append(" ".join([_f(t)] + [str(int(fresh[n])) for n in ("imu", "baro", "mag", "gps")]
                              + [_f(v) for n in ("imu", "baro", "mag", "gps") for v in readings[n]]))
    args = command_line(quad_pid.wire_parameters(params))
    result = subprocess.run([str(c_build.build("quad_pid_replay")), *args], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) == ticks
    phases = set()
    for k, (line, (phase, waypoint, command)) in enumerate(zip(out, expected)):
        fields = line.split()
        got = np.array([struct.unpack(">d", bytes.fromhex(h))[0] for h in fields[2:6]])
        assert (int(fields[0]), int(fields[1])) == (phase, waypoint), f"tick {k}"
        np.testing.assert_allclose(got, command, rtol=0, atol=1e-9, err_msg=f"tick {k}")
        phases.add(phase)
    assert phases == {0, 1, 2, 3, 4}  # waiting, spin-up, mission, landing and landed were all compared


# ---- (d) hil_quad_pid end to end ------------------------------------------------------------------------

def hover_arguments(**overrides) -> list[str]:
    from hil import scenario
    from hil.firmware_stubs import quad_pid

    params = quad_pid.params_from_scenario(scenario.load(ROOT / "scenarios" / "hover.yaml"))
    args = command_line(quad_pid.wire_parameters(params))
    for name, value in overrides.items():
        index = next(i for i, a in enumerate(args) if a.startswith(f"{name}="))
        args[index] = f"{name}={value}"
    return args


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Hil:
    """hil's side of a UDP session, written with hil.wire only."""

    def __init__(self, address):
        self.address = address
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(5.0)
        self.seq = 0

    def send(self, message_type, *fields, seq=None):
        message = message_type(self.seq if seq is None else seq, *fields)
        self.socket.sendto(wire.encode(message), self.address)
        self.seq += 1

    def receive(self, skip=(wire.Heartbeat,)) -> wire.Message:
        while True:
            data, sender = self.socket.recvfrom(2048)
            assert sender == self.address and data.endswith(b"\x00")
            message = wire.decode(data[:-1])
            if not isinstance(message, skip):
                return message

    def hello(self, version=1, sensors=SENSOR_LAYOUT):
        self.send(wire.Hello, version, "hil", "quadrotor", 4, 1000, sensors)

    def close(self):
        self.socket.close()


@pytest.fixture
def udp_firmware(firmware):
    processes = []

    def start(*extra, arguments=None):
        port = free_udp_port()
        process = subprocess.Popen([str(firmware), "--udp", f"127.0.0.1:{port}", *(hover_arguments() if arguments is None else arguments),
                                    *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        hil = Hil(("127.0.0.1", port))
        return process, hil

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def handshake(hil, process, **hello):
    """HELLO (with ``hello`` changed) until the firmware answers; returns its reply."""
    for _ in range(50):  # the firmware may not be bound yet: HELLO again, as hil does every 200 ms
        hil.hello(**hello)
        hil.socket.settimeout(0.05)
        try:
            reply = hil.receive()
            break
        except (socket.timeout, ConnectionRefusedError):
            assert process.poll() is None, process.communicate()
    else:
        pytest.fail("no HELLO from hil_quad_pid")
    hil.socket.settimeout(5.0)
    return reply


def sensors_for(tick: int) -> tuple[int, tuple]:
    fresh, values = 0, []
    for index, (name, every) in enumerate((("imu", 1), ("baro", 20), ("mag", 10), ("gps", 100))):
        if tick % every == 0:
            fresh |= 1 << index
            values += AT_REST[name]
    return fresh, tuple(values)


def test_udp_session_hello_lockstep_status_and_goodbye(udp_firmware):
    process, hil = udp_firmware(arguments=hover_arguments(arm_at="0.005"))
    reply = handshake(hil, process)
    assert isinstance(reply, wire.Hello)
    assert (reply.version, reply.role, reply.vehicle, reply.actuators, reply.tick_rate_hz) == (
        1, "firmware", "quadrotor", 4, 0)
    assert [(s.name, s.fields) for s in reply.sensors] == [("imu", 6), ("baro", 2), ("mag", 3), ("gps", 6)]
    assert reply.sensors[0].rate_hz == 1000.0

    statuses, replies = [], []
    for tick in range(30):
        fresh, values = sensors_for(tick)
        hil.send(wire.Sensors, tick, fresh, values)
        if tick == 10:  # the same frame again: a duplicate, dropped without a reply
            hil.send(wire.Sensors, tick, fresh, values, seq=hil.seq - 1)
        if tick == 20:  # values that do not match the mask: dropped
            hil.send(wire.Sensors, tick, 0b0001, (0.0,) * 5)
        while True:
            message = hil.receive()
            if isinstance(message, wire.Status):
                statuses.append((message.tick, message.severity, message.text))
                continue
            assert isinstance(message, wire.Actuators)
            replies.append(message)
            break
    assert [m.tick for m in replies] == list(range(30))  # one reply per SENSORS, same tick, in lockstep
    assert all(len(m.values) == 4 for m in replies)
    assert replies[0].values == (0.0,) * 4  # waiting to arm
    assert all(v == pytest.approx(0.08) for v in replies[10].values)  # spinning up at idle throttle
    assert statuses == [(5, 1, "armed, spinning up")]
    hil.send(wire.Goodbye, 30, wire.GOODBYE_NORMAL, "run complete")
    assert process.wait(5) == 0
    hil.close()


def hover_parameters(**overrides) -> tuple:
    """hover.yaml's quad_pid parameters as PARAMs carry them, with ``overrides`` (name: values)."""
    from hil import scenario
    from hil.firmware_stubs import quad_pid

    pairs = quad_pid.wire_parameters(quad_pid.params_from_scenario(scenario.load(ROOT / "scenarios" / "hover.yaml")))
    return tuple((name, overrides.get(name, values)) for name, values in pairs)


def fly(hil, ticks: int) -> list[tuple[float, ...]]:
    """SENSORS at rest for ``ticks`` ticks in lockstep; the throttles of each reply."""
    replies = []
    for tick in range(ticks):
        hil.send(wire.Sensors, tick, *sensors_for(tick))
        replies.append(hil.receive(skip=(wire.Heartbeat, wire.Status)).values)
    return replies


def test_without_param_options_it_asks_hil_for_its_parameters_and_flies_them_as_given_on_its_command_line(
        udp_firmware):
    pairs = hover_parameters(arm_at=(0.005,))
    process, hil = udp_firmware(arguments=[])
    reply = handshake(hil, process)
    assert isinstance(reply, wire.Hello) and reply.params == "quad_pid"
    hil.send(wire.Sensors, 0, *sensors_for(0))  # before its parameters: not answered
    answers = []
    for index, (name, values) in enumerate(pairs):
        hil.send(wire.Param, 0, index, len(pairs), name, values)
        answers.append(hil.receive())
    assert answers == [wire.ParamAck(answer.seq, 0, index) for index, answer in enumerate(answers)]
    by_link = fly(hil, 30)

    configured, other = udp_firmware(arguments=command_line(pairs))
    assert handshake(other, configured).params == ""  # configured on its command line: it asks for nothing
    assert fly(other, 30) == by_link  # the same controller, bit for bit
    assert by_link[0] == (0.0,) * 4 and by_link[10] == pytest.approx((0.08,) * 4)  # armed at 5 ms: spinning up
    for end in (hil, other):
        end.send(wire.Goodbye, 30, wire.GOODBYE_NORMAL, "run complete")
    assert process.wait(5) == 0 and configured.wait(5) == 0


def test_a_param_sent_again_is_acknowledged_again_one_out_of_order_is_dropped_and_a_bad_one_refused(udp_firmware):
    pairs = hover_parameters()
    process, hil = udp_firmware(arguments=[])
    handshake(hil, process)
    for index in (0, 0, 1, 1):  # each sent twice, as hil does when an acknowledgement is lost
        hil.send(wire.Param, 0, index, len(pairs), *pairs[index])
        ack = hil.receive()
        assert isinstance(ack, wire.ParamAck) and ack.index == index
    hil.send(wire.Param, 0, 3, len(pairs), *pairs[3])  # 2 was lost: dropped, not answered
    hil.socket.settimeout(0.05)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # nothing but the HEARTBEATs of a firmware left waiting
        try:
            assert isinstance(hil.receive(skip=()), wire.Heartbeat)
        except socket.timeout:
            pass
    hil.socket.settimeout(5.0)
    hil.send(wire.Param, 0, 2, len(pairs), "gps_period", (0.1, 0.1, 0.1))
    goodbye = hil.receive()
    assert isinstance(goodbye, wire.Goodbye) and goodbye.code == wire.GOODBYE_PARAMETER
    assert goodbye.reason == "parameter gps_period: expected 1 value, got 3"
    assert process.wait(5) == 1
    stderr = process.communicate()[1]
    assert stderr == "hil_quad_pid: parameter refused: parameter gps_period: expected 1 value, got 3\n"
    hil.close()


def test_a_set_without_a_parameter_it_needs_is_refused_after_its_last_naming_what_is_missing(udp_firmware):
    pairs = [pair for pair in hover_parameters() if pair[0] not in ("mass", "acceptance")]
    process, hil = udp_firmware(arguments=[])
    handshake(hil, process)
    for index, pair in enumerate(pairs[:-1]):
        hil.send(wire.Param, 0, index, len(pairs), *pair)
        assert isinstance(hil.receive(), wire.ParamAck)
    hil.send(wire.Param, 0, len(pairs) - 1, len(pairs), *pairs[-1])
    goodbye = hil.receive()
    assert goodbye.code == wire.GOODBYE_PARAMETER
    assert goodbye.reason == "parameters: missing parameters: mass, acceptance"
    assert process.wait(5) == 1
    hil.close()


def test_udp_peer_is_the_first_hello_sender(udp_firmware):
    process, hil = udp_firmware()
    handshake(hil, process)
    stranger = Hil(hil.address)
    fresh, values = sensors_for(0)
    stranger.send(wire.Sensors, 0, fresh, values)
    stranger.hello()
    hil.send(wire.Sensors, 0, fresh, values)
    assert isinstance(hil.receive(), wire.Actuators)
    stranger.socket.settimeout(0.3)
    with pytest.raises(socket.timeout):
        stranger.receive(skip=())
    stranger.send(wire.Goodbye, 0, 0, "not from the peer")
    time.sleep(0.1)
    assert process.poll() is None  # ignored
    hil.send(wire.Goodbye, 1, 0, "done")
    assert process.wait(5) == 0
    stranger.close()
    hil.close()


def test_a_version_mismatch_is_answered_and_ends_the_firmware(udp_firmware):
    process, hil = udp_firmware()
    reply = handshake(hil, process, version=2)
    assert isinstance(reply, wire.Hello) and reply.version == 1
    goodbye = hil.receive()
    assert isinstance(goodbye, wire.Goodbye) and goodbye.code == wire.GOODBYE_VERSION_MISMATCH
    assert "hil speaks 2, firmware 1" in goodbye.reason
    assert process.wait(5) == 1
    stderr = process.communicate()[1]
    assert stderr.count("\n") == 1 and "protocol version" in stderr
    hil.close()


def test_a_missing_sensor_is_a_layout_mismatch(udp_firmware):
    process, hil = udp_firmware()
    reply = handshake(hil, process, sensors=SENSOR_LAYOUT[:3])
    assert isinstance(reply, wire.Hello)
    goodbye = hil.receive()
    assert goodbye.code == wire.GOODBYE_LAYOUT_MISMATCH and "gps" in goodbye.reason
    assert process.wait(5) == 1
    hil.close()


def test_idle_timeout_exits_3(firmware):
    result = subprocess.run([str(firmware), "--udp", f"127.0.0.1:{free_udp_port()}", *hover_arguments(),
                             "--idle-timeout", "0.3"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "nothing received for 0.3 s" in result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda a: a + ["--param", "mass=1.5"], None),  # a parameter given twice: the last one counts
    (lambda a: a[:2], "missing parameters: baro_period"),
    (lambda a: a + ["--param", "wingspan=3"], "parameter wingspan: unknown parameter"),
    (lambda a: a + ["--param", "inertia=1,2"], "parameter inertia: expected 3 values, got 2"),
    (lambda a: a + ["--param", "mass=heavy"], "parameter mass: 'heavy' is not a list of finite numbers"),
    (lambda a: a + ["--param", "mass=nan"], "parameter mass: 'nan' is not a list of finite numbers"),
    (lambda a: a + ["--param", "waypoint=1,2,3"], "parameter waypoint: expected 5 values (N,E,D,YAW_RAD,HOLD_S), got 3"),
    (lambda a: a + ["--param", "land=2"], "parameter land: expected one value, 0 or 1"),
    (lambda a: a + ["--param", "mass"], "--param 'mass': expected NAME=V[,V...]"),
    (lambda a: [x for i, x in enumerate(a) if "waypoint=" not in a[i] + a[min(i + 1, len(a) - 1)]],
     "no waypoint: give at least one"),
])
def test_bad_arguments_exit_2_with_one_line(firmware, change, message):
    args = change(hover_arguments())
    result = subprocess.run([str(firmware), "--udp", f"127.0.0.1:{free_udp_port()}", *args, "--idle-timeout", "0.2"],
                            capture_output=True, text=True, timeout=10)
    if message is None:  # the reference: the arguments are fine, nothing arrives
        assert result.returncode == 3
        return
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("hil_quad_pid: ")


def test_usage_needs_exactly_one_link(firmware):
    for argv in ([], ["--udp", "127.0.0.1:1", "--port", "/dev/null"], ["--udp", "nonsense"], ["--pty", "--udp", "127.0.0.1:1"],
                 ["--pty", "--port", "/dev/null"], ["--pty", "--baud", "115200"], ["--udp", "127.0.0.1:1", "--baud", "9600"]):
        result = subprocess.run([str(firmware), *argv, *hover_arguments()], capture_output=True, text=True, timeout=10)
        assert result.returncode == 2, argv
        assert result.stderr.count("\n") == 1


def test_serial_session_over_a_pseudo_terminal(firmware):
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    process = subprocess.Popen([str(firmware), "--port", path, "--baud", "921600", *hover_arguments()],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = wire.FrameReader()
    pending = []

    def receive(deadline=5.0):
        end = time.monotonic() + deadline
        while not pending:
            import select
            ready, _, _ = select.select([master], [], [], max(0.0, end - time.monotonic()))
            assert ready, "nothing from the firmware on the pty"
            pending.extend(reader.feed(os.read(master, 4096)))
        return pending.pop(0)

    try:
        first = receive()
        assert isinstance(first, wire.Heartbeat)  # before HELLO the firmware says it is there
        seq = 0

        def send(message_type, *fields):
            nonlocal seq
            os.write(master, b"\x00" + wire.encode(message_type(seq, *fields)))  # a flush byte first, as hil does
            seq += 1

        send(wire.Hello, 1, "hil", "quadrotor", 4, 1000, SENSOR_LAYOUT)
        reply = receive()
        while isinstance(reply, wire.Heartbeat):
            reply = receive()
        assert isinstance(reply, wire.Hello) and reply.role == "firmware"
        os.write(master, bytes(range(1, 256)) * 3 + b"\x00")  # line noise: an oversize run, then resync
        for tick in range(5):
            send(wire.Sensors, tick, *sensors_for(tick))
            message = receive()
            while isinstance(message, wire.Heartbeat):
                message = receive()
            assert isinstance(message, wire.Actuators) and message.tick == tick
        send(wire.Goodbye, 5, 0, "run complete")
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        os.close(master)
        os.close(slave)


def test_open_loop_firmware_builds_and_answers(tmp_path):
    program = c_build.build("hil_open_loop")
    port = free_udp_port()
    process = subprocess.Popen([str(program), "--udp", f"127.0.0.1:{port}", "--param", "throttle=0.1,0.2,0.3,0.4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hil = Hil(("127.0.0.1", port))
    try:
        reply = handshake(hil, process)
        assert reply.sensors == ()
        hil.send(wire.Sensors, 0, *sensors_for(0))
        message = hil.receive()
        assert message.tick == 0 and message.values == pytest.approx((0.1, 0.2, 0.3, 0.4))
        hil.send(wire.Goodbye, 1, 0, "done")
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        hil.close()


def test_floats_that_are_not_finite_float32_are_refused_both_ways_as_hil_wire_does(test_vectors):
    """§3: floats are finite and fit float32. Decoding one (float32 or float64) is a `message` error;
    encoding one fails, so neither side ever writes a NaN."""
    import msgpack

    payloads = []
    for value in (float("nan"), float("inf"), float("-inf"), 1e39):
        for single in (True, False):
            if single and value == 1e39:
                continue  # packed as float32 it becomes inf, covered above
            payloads += [msgpack.packb(body, use_single_float=single) for body in (
                [3, 1, 2, [0.5, value, 0.5, 0.5]], [2, 1, 2, 1, [value] * 6],
                [1, 0, 0, 1, "firmware", "quadrotor", 4, 0, [["imu", 6, value]]])]
            if value != 1e39:  # a PARAM's values are float64: finite is all they must be
                payloads.append(msgpack.packb([7, 1, 0, 0, 1, "mass", [value]], use_single_float=single))
    out = run_lines(test_vectors, [f"P {p.hex()}" for p in payloads])
    assert out == ["ERR message"] * len(payloads)
    for p in payloads:
        with pytest.raises(wire.FrameError) as caught:
            wire.parse(p)
        assert caught.value.kind == "message"
    nan = struct.pack(">d", float("nan")).hex()
    encode = [f"E 3 1 2 4 {_f(0.5)} {nan} {_f(0.5)} {_f(0.5)}", f"E 2 1 2 1 6 {(_f(1e39) + ' ') * 6}".strip(),
              f"E 1 0 0 1 {_s('hil')} {_s('quadrotor')} 4 1000 1 {_s('imu')} 6 {nan} -",
              f"E 7 1 0 0 1 {_s('mass')} 1 {nan}"]
    assert run_lines(test_vectors, encode) == ["ERR encode"] * 4


def test_every_msgpack_string_and_array_form_is_read_as_hil_wire_reads_it(test_vectors):
    """§3: receivers read str8, str16, str32 and array16, array32 alike, within the same limits."""
    status = bytes([0x95, 0x05, 0x01, 0x02, 0x01])
    payloads = [status + header + b"armed" for header in (b"\xa5", b"\xd9\x05", b"\xda\x00\x05",
                                                          b"\xdb\x00\x00\x00\x05")]
    payloads += [b"\x94\x03\x01\x02" + header + b"\xca\x3f\x00\x00\x00" * 4
                 for header in (b"\x94", b"\xdc\x00\x04", b"\xdd\x00\x00\x00\x04")]
    payloads.append(status + b"\xda" + struct.pack(">H", 300) + ("é" * 150).encode())  # 300 bytes: over 200
    out = run_lines(test_vectors, [f"P {p.hex()}" for p in payloads])
    assert out[:4] == ["OK " + canon(wire.Status(1, 2, 1, "armed"))] * 4
    assert out[4:7] == ["OK " + canon(wire.Actuators(1, 2, (0.5,) * 4))] * 3
    assert out[7] == "ERR message"


def test_a_frame_that_ends_on_a_full_cobs_block_decodes_with_and_without_a_trailing_01(test_vectors):
    """§2: hil and hil_proto write no trailing 01 block; both read a frame written with one."""
    # 0.5 is ca 3f 00 00 00; 1.1 has no zero byte: after 0.5's last zero come 50 floats and the
    # CRC, a run of 254 bytes that ends the frame (for a tick whose CRC has no zero byte).
    values = (0.5,) + (1.1,) * 50
    message = next(m for m in (wire.Sensors(1, tick, 1, values) for tick in range(1, 100))
                   if 0 not in struct.pack("<I", wire.crc32(wire.pack(m))))
    encoded = wire.encode(message)[:-1]
    assert encoded[-255] == 0xFF and 0 not in encoded[-254:]  # the last block is full, no 01 after it
    out = run_lines(test_vectors, [f"D {encoded.hex()}", f"D {encoded.hex()}01", f"E {canon(message)}"])
    assert out[:2] == ["OK " + canon(wire.decode(encoded))] * 2 and out[2] == "F " + encoded.hex() + "00"
    assert wire.decode(encoded) == wire.decode(encoded + b"\x01")


def test_udp_takes_one_whole_frame_per_datagram_and_only_hils_once_hello_agrees(udp_firmware):
    """§1: a datagram is one frame. One that carries two is dropped whole and counted (as hil drops
    it), never read as two; once HELLO agrees, other senders are ignored and counted as foreign.
    §3: a SENSORS with a NaN reading is a message error, unanswered."""
    import msgpack

    process, hil = udp_firmware("-v")
    handshake(hil, process)
    fresh, values = sensors_for(0)
    nan = msgpack.packb([wire.SENSORS, hil.seq, 0, fresh, [float("nan"), *values[1:]]], use_single_float=True)
    hil.socket.sendto(wire.frame(nan), hil.address)
    hil.seq += 1
    two = wire.encode(wire.Sensors(hil.seq, 0, fresh, values)) + wire.encode(wire.Sensors(hil.seq + 1, 1, fresh, values))
    hil.socket.sendto(two, hil.address)
    hil.seq += 2
    stranger = Hil(hil.address)
    stranger.hello()
    stranger.send(wire.Sensors, 2, fresh, values)
    hil.send(wire.Sensors, 5, fresh, values)
    reply = hil.receive(skip=(wire.Heartbeat, wire.Status))
    assert isinstance(reply, wire.Actuators) and reply.tick == 5  # nothing answered the two-frame datagram
    hil.send(wire.Goodbye, 5, 0, "done")
    assert process.wait(5) == 0
    counters = process.communicate()[1].splitlines()[-1]
    assert "foreign 2" in counters and "cobs 1 " in counters and "message 1 " in counters
    assert "sensors answered 1," in counters
    stranger.close()
    hil.close()
