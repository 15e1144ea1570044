"""Protocol table, generated header, Python codec and messages (pure Python; the C side is in test_bridge_codec_c)."""

from __future__ import annotations

import math
import re
import struct
import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_bridge import codec, spec
from firmware_bridge import messages as M
from firmware_bridge.checksum import crc32
from firmware_bridge.errors import CrcError, FrameError, ProtocolError
from tests.bridge_fixtures import load_vectors

VECTORS = load_vectors()
MSG_TYPES = [m.msg_type for m in spec.MESSAGES]


# ------------------------------------------------------------------ the table and the generated header


def test_committed_header_matches_the_generator():
    committed = spec.HEADER_PATH.read_text()
    assert committed == spec.generate_c_header(), "run: python -m firmware_bridge.spec --write"
    assert spec.main(["--check"]) == 0


def test_header_carries_every_constant_with_its_unit_and_the_schema_hash():
    text = spec.HEADER_PATH.read_text()
    assert f"#define VX_SCHEMA_HASH 0x{spec.SCHEMA_HASH:08X}u" in text
    for c in spec.CONSTANTS:
        assert re.search(rf"#define VX_{c.name} \S+ /\* {re.escape(c.unit or '-')}: ", text), c.name
    assert "#define VX_WATCHDOG_TIMEOUT_MS 250u /* ms:" in text
    assert "#define VX_MAX_LINEAR_M_S 0.5f /* m/s:" in text


def test_safety_constants_match_the_requirements():
    # docs/architecture.md and the README, "Safety model": 250 ms without a valid setpoint, ramp to zero within 100 ms.
    assert spec.CONST["WATCHDOG_TIMEOUT_MS"] == 250
    assert spec.CONST["STOP_RAMP_MS"] <= 100
    assert spec.CONST["SETPOINT_PERIOD_MS"] == 50
    assert spec.CONST["RECONNECT_BACKOFF_MIN_MS"] == 500 and spec.CONST["RECONNECT_BACKOFF_MAX_MS"] == 5000
    # A control's retry window is its TTL: it must fit the firmware's TTL limit.
    assert spec.CONST["CONTROL_ATTEMPTS"] * spec.CONST["CONTROL_ACK_TIMEOUT_MS"] <= spec.CONST["TTL_MAX_MS"]


def test_schema_hash_changes_with_any_table_change(monkeypatch):
    before = spec.schema_hash()
    assert before == spec.SCHEMA_HASH
    changed = tuple(spec.Constant(c.name, c.value + 1 if c.name == "WATCHDOG_TIMEOUT_MS" else c.value, c.unit, c.doc)
                    for c in spec.CONSTANTS)
    monkeypatch.setattr(spec, "CONSTANTS", changed)
    assert spec.schema_hash() != before
    monkeypatch.undo()
    fields = list(spec.MESSAGES[1].fields)
    fields[0], fields[1] = fields[1], fields[0]  # same sizes, swapped order
    monkeypatch.setattr(spec, "MESSAGES", (spec.MESSAGES[0], spec.MessageSpec(
        spec.MESSAGES[1].name, spec.MESSAGES[1].msg_type, tuple(fields), ""), *spec.MESSAGES[2:]))
    assert spec.schema_hash() != before


def test_message_classes_follow_the_table():
    for cls in M.MESSAGE_CLASSES:
        assert M.field_names(cls) == tuple(f.name for f in cls.SPEC.fields), cls.__name__
        assert cls.SPEC.size <= spec.MAX_PAYLOAD
    assert {cls.SPEC.msg_type for cls in M.MESSAGE_CLASSES} == set(spec.MsgType)
    # Host-to-MCU types below 0x80, MCU-to-host types from 0x80: the firmware relies on it.
    assert all(t < 0x80 for t in (spec.MsgType.HELLO, spec.MsgType.SETPOINT, spec.MsgType.CONTROL))
    assert all(t >= 0x80 for t in spec.MsgType if t.name not in ("HELLO", "SETPOINT", "CONTROL"))


# ------------------------------------------------------------------ shared vectors


@pytest.mark.parametrize("vec", VECTORS["crc32"], ids=lambda v: v["data"][:16] or "empty")
def test_crc_vectors(vec):
    data = bytes.fromhex(vec["data"])
    assert crc32(data) == vec["crc"] == zlib.crc32(data)


@pytest.mark.parametrize("vec", VECTORS["cobs"], ids=lambda v: v["decoded"][:12] or "empty")
def test_cobs_vectors(vec):
    decoded, encoded = bytes.fromhex(vec["decoded"]), bytes.fromhex(vec["encoded"])
    assert codec.cobs_encode(decoded) == encoded
    assert codec.cobs_decode(encoded) == decoded


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["message"])
def test_frame_vectors_encode_and_decode(vec):
    cls = M.CLASS_BY_TYPE[vec["msg_type"]]
    msg = cls(**vec["fields"])
    assert M.pack(msg).hex() == vec["payload"]
    wire = codec.encode_frame(vec["msg_type"], M.pack(msg), seq=vec["seq"], timestamp_ms=vec["timestamp_ms"],
                              flags=vec["flags"])
    assert wire.hex() == vec["wire"]
    frame = codec.decode_frame(wire[:-1])
    assert (frame.msg_type, frame.seq, frame.timestamp_ms, frame.flags) == (
        vec["msg_type"], vec["seq"], vec["timestamp_ms"], vec["flags"])
    assert M.unpack(frame.msg_type, frame.payload) == msg


@pytest.mark.parametrize("vec", VECTORS["invalid_frames"], ids=lambda v: v["why"])
def test_invalid_frame_vectors_are_rejected(vec):
    block = bytes.fromhex(vec["block"])
    expected = CrcError if vec["why"] == "crc" else FrameError
    with pytest.raises(expected):
        codec.decode_frame(block)
    reader = codec.FrameReader()
    assert reader.feed(block + b"\x00") == []
    c = reader.counters
    assert (c.crc_errors, c.malformed, c.oversize) == {
        "crc": (1, 0, 0), "oversize": (0, 0, 1)}.get(vec["why"], (0, 1, 0))


# ------------------------------------------------------------------ properties

payloads = st.sampled_from(spec.MESSAGES).flatmap(
    lambda m: st.tuples(st.just(int(m.msg_type)), st.binary(min_size=m.size, max_size=m.size)))
u32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=300, deadline=None)
@given(payloads, u32, u32, st.integers(0, 255))
def test_frames_round_trip(typed, seq, ts, flags):
    msg_type, payload = typed
    wire = codec.encode_frame(msg_type, payload, seq=seq, timestamp_ms=ts, flags=flags)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert len(wire) - 1 <= spec.MAX_ENCODED_FRAME
    f = codec.decode_frame(wire[:-1])
    assert (f.msg_type, f.seq, f.timestamp_ms, f.flags, f.payload) == (msg_type, seq, ts, flags, payload)


@st.composite
def corruptions(draw):
    """A valid frame and a different byte string made from it by flips, replacement, truncation or insertion."""
    msg_type, payload = draw(payloads)
    wire = codec.encode_frame(msg_type, payload, seq=draw(u32), timestamp_ms=draw(u32))
    body = bytearray(wire[:-1])
    kind = draw(st.sampled_from(["flip", "replace", "truncate", "insert", "burst"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(body) - 1))
            body[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "replace":
        i = draw(st.integers(0, len(body) - 1))
        body[i] = draw(st.integers(0, 255))
    elif kind == "truncate":
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, len(body)))
        body[i:i] = draw(st.binary(min_size=1, max_size=8))
    else:
        i = draw(st.integers(0, len(body) - 1))
        n = draw(st.integers(1, 12))
        body[i:i + n] = draw(st.binary(min_size=n, max_size=n))
    corrupted = bytes(body)
    assume(corrupted != wire[:-1])
    return wire[:-1], corrupted


@settings(max_examples=1500, deadline=None)
@given(corruptions())
def test_no_corrupted_frame_is_accepted(pair):
    original, corrupted = pair
    reader = codec.FrameReader()
    # Whatever pieces the corruption leaves (a 0x00 may split it), no accepted frame differs from the original.
    frames = reader.feed(corrupted + b"\x00")
    for f in frames:
        assert codec.encode_frame(f.msg_type, f.payload, seq=f.seq, timestamp_ms=f.timestamp_ms,
                                  flags=f.flags)[:-1] == original
    if b"\x00" not in corrupted:
        with pytest.raises(ProtocolError):
            codec.decode_frame(corrupted)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(payloads.map(lambda t: ("frame", t)), st.binary(min_size=1, max_size=300).map(
    lambda b: ("garbage", b))), max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_reader_resynchronises_after_garbage_in_any_chunking(items, chunk_sizes):
    stream = bytearray()
    expected = []
    for i, (kind, value) in enumerate(items):
        if kind == "frame":
            msg_type, payload = value
            stream += codec.encode_frame(msg_type, payload, seq=i, timestamp_ms=i)
            expected.append((msg_type, i, payload))
        else:
            stream += value + b"\x00"  # garbage, then a delimiter as any real stream eventually has
    reader = codec.FrameReader()
    got, pos, k = [], 0, 0
    while pos < len(stream):
        n = chunk_sizes[k % len(chunk_sizes)]
        got += reader.feed(bytes(stream[pos:pos + n]))
        pos += n
        k += 1
    # Every frame survives the garbage around it, in order. (Garbage forms a valid frame with
    # probability ~2^-32 per piece, so extra frames are not asserted away.)
    decoded = iter((f.msg_type, f.seq, f.payload) for f in got)
    assert all(e in decoded for e in expected)


def test_reader_bounds_memory_on_an_endless_run():
    reader = codec.FrameReader()
    for _ in range(100):
        assert reader.feed(b"\x55" * 1000) == []
    assert len(reader._buf) <= spec.MAX_ENCODED_FRAME
    good = codec.encode_frame(spec.MsgType.ACK, M.pack(M.Ack(1, 1, 0, 0, 1)), seq=5, timestamp_ms=6)
    frames = reader.feed(b"\x00" + good)
    assert [f.seq for f in frames] == [5]
    assert reader.counters.oversize == 1 and reader.counters.frames_ok == 1


def test_encode_refuses_an_oversize_payload():
    with pytest.raises(FrameError, match="exceeds MAX_PAYLOAD"):
        codec.encode_frame(spec.MsgType.ACK, b"x" * (spec.MAX_PAYLOAD + 1), seq=0, timestamp_ms=0)


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(finite32, finite32, st.integers(0, 0xFFFF))
def test_setpoint_message_round_trip(v, w, ttl):
    msg = M.Setpoint(v, w, ttl)
    assert M.unpack(spec.MsgType.SETPOINT, M.pack(msg)) == msg


def test_pack_rejects_values_that_do_not_fit():
    with pytest.raises(FrameError):
        M.pack(M.Setpoint(0.1, 0.0, -1))
    with pytest.raises(FrameError, match="longer than"):
        M.pack(M.HelloAck(0, 0, 0, 0, 0, "x" * 25, 0.0, 0.0))


def test_floats_travel_as_ieee754_binary32():
    payload = M.pack(M.Setpoint(0.1, math.inf, 1))
    assert payload[:4] == struct.pack("<f", 0.1)
    assert math.isinf(M.unpack(spec.MsgType.SETPOINT, payload).angular_rad_s)
