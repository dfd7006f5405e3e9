"""The wire codec against the reference's test vectors, and against hostile input."""

import re
import struct
import tracemalloc

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT

from hil import wire

FUZZ = settings(max_examples=15_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def doc_vectors():
    text = (ROOT / "docs" / "protocol.md").read_text().split("<!-- test-vectors -->")[1]
    found = re.findall(r"```\npayload ([0-9a-f ]+)\nframe   ([0-9a-f ]+)\n```", text)
    return [(bytes.fromhex(p), bytes.fromhex(f)) for p, f in found]


def test_the_reference_has_its_test_vectors():
    assert len(doc_vectors()) == 11


@pytest.mark.parametrize("payload, encoded", doc_vectors())
def test_reference_vectors_decode_and_reencode_byte_for_byte(payload, encoded):
    assert encoded.endswith(b"\x00") and b"\x00" not in encoded[:-1]
    assert wire.unframe(encoded[:-1]) == payload
    message = wire.decode(encoded[:-1])
    assert wire.pack(message) == payload
    assert wire.encode(message) == encoded


def test_crc_check_value():
    assert wire.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize("data, encoded", [
    (b"\x00", "01 01"), (b"\x00\x00", "01 01 01"), (bytes.fromhex("11220033"), "03 11 22 02 33"),
    (bytes.fromhex("11223344"), "05 11 22 33 44"), (bytes(range(1, 255)), "ff " + bytes(range(1, 255)).hex(" ")),
    (bytes(range(1, 256)), "ff " + bytes(range(1, 255)).hex(" ") + " 02 ff"),
    (bytes(range(0, 255)), "01 ff " + bytes(range(1, 255)).hex(" ")),
])
def test_cobs_matches_the_reference_edge_cases(data, encoded):
    assert wire.cobs_encode(data) == bytes.fromhex(encoded)
    assert wire.cobs_decode(bytes.fromhex(encoded)) == data


def test_a_stream_resynchronises_after_noise_and_counts_it():
    reader = wire.FrameReader()
    good = [wire.encode(wire.Heartbeat(i, i)) for i in range(3)]
    stream = good[0] + b"\x13\x37noise\xff" * 50 + b"\x00" + good[1] + bytes(3000) + b"\x42" * 2000 + b"\x00" + good[2]
    messages = []
    for offset in range(0, len(stream), 7):  # arrives in dribbles, as on a serial line
        messages += reader.feed(stream[offset:offset + 7])
    assert [m.seq for m in messages] == [0, 1, 2]
    assert reader.counters.resyncs >= 2 and reader.counters.errors.get("oversize") == 1
    assert reader.counters.garbage_bytes >= 2000


def assert_rejected_or_valid(data: bytes):
    try:
        message = wire.decode(data)
    except wire.FrameError as error:
        assert error.kind in ("crc", "cobs", "msgpack", "message", "oversize")
    else:
        assert wire.decode(wire.encode(message)[:-1]) == message


def corpus() -> list[bytes]:
    """Frames of every message type, varied in size (built once: drawing them is the slow part of a fuzz case)."""
    frames = []
    for i in range(40):
        values = tuple(float(v) for v in range(i % 18))
        frames += [wire.encode(m)[:-1] for m in (
            wire.Sensors(i * 7919, i * 104729, (1 << (i % 5)) - 1, values),
            wire.Actuators(i, 2**32 - 1 - i, (0.0, 0.25 * (i % 4), 1.0, -0.5)),
            wire.Heartbeat(i, i * 31), wire.Status(i, i, i % 5, "x" * (i * 5)),
            wire.Goodbye(i, i, i % 5, "bye" * i),
            wire.Hello(i, 1, "hil", "quadrotor", 4, 1000, tuple(wire.SensorSpec(f"s{j}", j, 10.0) for j in range(i % 17))),
        )]
    return frames


CORPUS = corpus()


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_frame_errors(data):
    assert_rejected_or_valid(data.replace(b"\x00", b"\x01"))
    wire.FrameReader().feed(data)


# Each example below checks a whole family of cases (every bit of a byte, every cut of a frame):
# Hypothesis's own cost per example is far above that of a decode.
FAMILIES = settings(FUZZ, max_examples=6_250)


@pytest.mark.slow
@FAMILIES
@given(st.sampled_from(CORPUS), st.integers(0, 2**20))
def test_bit_flips_are_caught(encoded, position):
    """8 cases an example, 50,000 in all: each bit of one byte of a valid frame, flipped."""
    index = position % len(encoded)
    for bit in range(8):
        flipped = bytearray(encoded)
        flipped[index] ^= 1 << bit
        # A flip that makes a delimiter splits the frame; no part of it may pass as a message.
        assert wire.FrameReader().feed(bytes(flipped) + b"\x00") == []


@FAMILIES
@given(st.sampled_from(CORPUS), st.integers(0, 2**20))
def test_truncated_frames_are_rejected(encoded, position):
    """Up to 16 cases an example: cuts of a valid frame from a random length on."""
    start = position % len(encoded)
    for length in range(start, min(start + 16, len(encoded))):
        with pytest.raises(wire.FrameError):
            wire.decode(encoded[:length])


bombs = st.one_of(
    st.builds(lambda n: b"\xdd" + struct.pack(">I", n), st.integers(65, 2**32 - 1)),  # array32 of n elements
    st.builds(lambda n: b"\xdc" + struct.pack(">H", n), st.integers(65, 2**16 - 1)),  # array16
    st.builds(lambda n: b"\xdb" + struct.pack(">I", n), st.integers(801, 2**32 - 1)),  # str32
    st.builds(lambda n: b"\xc6" + struct.pack(">I", n), st.integers(1, 2**32 - 1)),  # bin32
    st.builds(lambda n: b"\xdf" + struct.pack(">I", n), st.integers(1, 2**32 - 1)),  # map32
    st.builds(lambda d: b"\x91" * d, st.integers(1, 500)),  # deep nesting
)


@pytest.mark.slow
@settings(FUZZ, max_examples=10_000)
@given(bombs, st.binary(max_size=32))
def test_msgpack_bombs_are_refused_before_allocation(bomb, tail):
    payload = (bomb + tail)[: wire.MAX_PAYLOAD]
    with pytest.raises(wire.FrameError):
        wire.decode(wire.frame(payload)[:-1])


def test_bombs_allocate_nothing_large():
    huge = [b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\x91" * 500]
    tracemalloc.start()
    for payload in huge:
        with pytest.raises(wire.FrameError):
            wire.decode(wire.frame(payload)[:-1])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 256 * 1024


def test_an_oversized_frame_is_refused_before_decoding():
    with pytest.raises(wire.FrameError) as caught:
        wire.decode(b"\x01" * (wire.MAX_FRAME + 1))
    assert caught.value.kind == "oversize"


def test_messages_with_wrong_fields_are_named():
    bad = msgpack.packb([3, 1, 2, "not floats"])
    with pytest.raises(wire.FrameError, match="values must be an array of floats"):
        wire.parse(bad)
    with pytest.raises(wire.FrameError, match="unknown message type 99"):
        wire.parse(msgpack.packb([99, 0, 0]))


NON_FINITE = [float("nan"), float("inf"), float("-inf"), 1e39]  # 1e39: a finite float64 past float32


@pytest.mark.parametrize("value", NON_FINITE)
def test_a_float_that_is_not_finite_float32_is_a_message_error_on_receipt(value):
    """§3: floats are finite and fit float32; a NaN throttle must never reach the physics."""
    for body in ([3, 1, 2, [0.5, value, 0.5, 0.5]], [2, 1, 2, 1, [value] * 6],
                 [1, 0, 0, 1, "firmware", "quadrotor", 4, 0, [["imu", 6, value]]]):
        with pytest.raises(wire.FrameError, match="finite") as caught:
            wire.decode(wire.frame(msgpack.packb(body))[:-1])  # float64: msgpack's default
        assert caught.value.kind == "message"


@pytest.mark.parametrize("value", NON_FINITE)
def test_hil_never_writes_a_float_that_is_not_finite_float32(value):
    for message in (wire.Sensors(1, 7, 1, (0.0, 0.0, value)), wire.Actuators(1, 7, (value,) * 4),
                    wire.Hello(0, 1, "hil", "quadrotor", 4, 1000, (wire.SensorSpec("imu", 6, value),))):
        with pytest.raises(wire.NonFinite) as caught:
            wire.encode(message)
    assert caught.value.index == 0 and "finite" in str(caught.value)
    with pytest.raises(wire.NonFinite) as caught:
        wire.encode(wire.Sensors(1, 7, 1, (0.0, 0.0, value)))
    assert caught.value.field == "values" and caught.value.index == 2


def test_integers_are_refused_where_a_float_is_expected_except_in_hello_rate_hz():
    """§3's warning to authors: a packer that writes 0.0 as the integer 0 makes a message error."""
    with pytest.raises(wire.FrameError, match="array of floats") as caught:
        wire.parse(msgpack.packb([3, 1, 2, [0, 0.5, 0.5, 0.5]]))
    assert caught.value.kind == "message"
    hello = wire.parse(msgpack.packb([1, 0, 0, 1, "firmware", "quadrotor", 4, 0, [["imu", 6, 250]]]))
    assert hello.sensors[0].rate_hz == 250.0 and isinstance(hello.sensors[0].rate_hz, float)


def test_every_msgpack_string_and_array_form_is_read_within_the_limits():
    """§3: a receiver reads str8, str16, str32 and array16, array32 alike; hil writes the shortest forms."""
    status = bytes([0x95, 0x05, 0x01, 0x02, 0x01])
    for header in (b"\xa5", b"\xd9\x05", b"\xda\x00\x05", b"\xdb\x00\x00\x00\x05"):
        assert wire.parse(status + header + b"armed") == wire.Status(1, 2, 1, "armed")
    values = b"\xca\x3f\x00\x00\x00" * 4
    for header in (b"\x94", b"\xdc\x00\x04", b"\xdd\x00\x00\x00\x04"):
        assert wire.parse(b"\x94\x03\x01\x02" + header + values) == wire.Actuators(1, 2, (0.5,) * 4)
    long_text = "é" * 150  # 300 bytes: a str16, well-formed but over the 200-byte limit
    with pytest.raises(wire.FrameError) as caught:
        wire.parse(status + b"\xda" + struct.pack(">H", 300) + long_text.encode())
    assert caught.value.kind == "message"
    assert wire.pack(wire.Status(1, 2, 1, "x" * 200))[5:7] == b"\xd9\xc8"  # str8, never str16


def test_a_run_of_254_bytes_decodes_with_and_without_a_trailing_01_block():
    """§2: hil writes no trailing 01 after a full block at the end of a frame, and reads both forms."""
    data = bytes(range(1, 255))
    assert wire.cobs_encode(data) == b"\xff" + data
    assert wire.cobs_decode(b"\xff" + data) == data
    assert wire.cobs_decode(b"\xff" + data + b"\x01") == data
    # A frame whose payload and CRC are one 254-byte run: it ends on a full block.
    payload = next(p for p in (bytes([1 + i % 255]) * 250 for i in range(255)) if 0 not in struct.pack("<I", wire.crc32(p)))
    encoded = wire.frame(payload)[:-1]
    assert len(encoded) == 255 and encoded[0] == 0xFF
    assert wire.unframe(encoded) == wire.unframe(encoded + b"\x01") == payload
