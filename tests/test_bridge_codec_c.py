"""The C codec against the shared vectors and against the Python codec (random payloads and corruption)."""

from __future__ import annotations

import math
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import codec, spec
from firmware_bridge import messages as M
from firmware_bridge.checksum import crc32
from tests.bridge_fixtures import Harness, load_vectors, requires_gcc
from tests.test_bridge_protocol import corruptions, payloads, u32

pytestmark = requires_gcc
VECTORS = load_vectors()
# vx_frame_status_t in vx_codec.h
C_STATUS = {"cobs": 1, "short": 2, "crc": 3, "version": 4, "type": 5, "size": 6, "oversize": 7}


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    rc, err = h.close()
    assert rc == 0, err


def _c_fields(answer: str) -> tuple[list[str], dict[str, str]]:
    """Split a frame_dec answer into header words and payload fields."""
    words = answer.split()
    fields = dict(w.split("=", 1) for w in words[6:])
    return words[:6], fields


def _same(py_value, c_text: str) -> bool:
    if isinstance(py_value, str):
        raw = py_value.encode("ascii")
        return bytes.fromhex(c_text).rstrip(b"\x00") == raw
    if isinstance(py_value, float):
        # 9 significant digits identify a binary32 value: round the text back to binary32.
        c = struct.unpack("<f", struct.pack("<f", float(c_text)))[0] if math.isfinite(float(c_text)) else float(c_text)
        return (math.isnan(py_value) and math.isnan(c)) or c == py_value
    return int(c_text) == py_value


def test_crc_and_cobs_vectors(harness):
    for vec in VECTORS["crc32"]:
        assert int(harness.cmd(f"crc {vec['data'] or '-'}"), 16) == vec["crc"]
    for vec in VECTORS["cobs"]:
        assert harness.cmd(f"cobs_enc {vec['decoded'] or '-'}") == (vec["encoded"] or "-")
        assert harness.cmd(f"cobs_dec {vec['encoded']}") == (vec["decoded"] or "-")


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["message"])
def test_frame_vectors(harness, vec):
    wire = harness.cmd(f"frame_enc {vec['msg_type']} {vec['flags']} {vec['seq']} {vec['timestamp_ms']} "
                       f"{vec['payload']}")
    assert wire == vec["wire"]
    header, fields = _c_fields(harness.cmd(f"frame_dec {vec['wire'][:-2]}"))
    assert header == ["OK", str(vec["msg_type"]), str(vec["flags"]), str(vec["seq"]), str(vec["timestamp_ms"]),
                      vec["message"]]
    assert list(fields) == list(vec["fields"])
    for name, value in vec["fields"].items():
        assert _same(value, fields[name]), (name, value, fields[name])
    assert harness.cmd(f"msg_rt {vec['msg_type']} {vec['payload']}") == vec["payload"]


@pytest.mark.parametrize("vec", VECTORS["invalid_frames"], ids=lambda v: v["why"])
def test_invalid_frame_vectors(harness, vec):
    assert harness.cmd(f"frame_dec {vec['block']}") == f"ERR {C_STATUS[vec['why']]}"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_crc_and_cobs_agree_on_random_data(harness, data):
    hexed = data.hex() or "-"
    assert int(harness.cmd(f"crc {hexed}"), 16) == crc32(data)
    encoded = codec.cobs_encode(data)
    assert harness.cmd(f"cobs_enc {hexed}") == encoded.hex()
    assert harness.cmd(f"cobs_dec {encoded.hex()}") == hexed


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_cobs_decoders_agree_on_arbitrary_input(harness, data):
    try:
        expected = codec.cobs_decode(data).hex() or "-"
    except codec.FrameError:
        expected = "ERR"
    assert harness.cmd(f"cobs_dec {data.hex()}") == expected


@settings(max_examples=300, deadline=None)
@given(payloads, u32, u32, st.integers(0, 255))
def test_python_encodes_c_decodes(harness, typed, seq, ts, flags):
    msg_type, payload = typed
    wire = codec.encode_frame(msg_type, payload, seq=seq, timestamp_ms=ts, flags=flags)
    header, fields = _c_fields(harness.cmd(f"frame_dec {wire[:-1].hex()}"))
    assert header[:5] == ["OK", str(msg_type), str(flags), str(seq), str(ts)]
    msg = M.unpack(msg_type, payload)
    for f in msg.SPEC.fields:
        py_value = getattr(msg, f.name)
        if f.code.endswith("s"):
            assert bytes.fromhex(fields[f.name]) == payload[_offset(msg.SPEC, f.name):][:int(f.code[:-1])]
        else:
            assert _same(py_value, fields[f.name]), (f.name, py_value, fields[f.name])
    assert harness.cmd(f"msg_rt {msg_type} {payload.hex()}") == payload.hex()


def _offset(message_spec: spec.MessageSpec, name: str) -> int:
    pos = 0
    for f in message_spec.fields:
        if f.name == name:
            return pos
        pos += struct.calcsize("<" + f.code)
    raise KeyError(name)


@settings(max_examples=300, deadline=None)
@given(payloads, u32, u32, st.integers(0, 255))
def test_c_encodes_python_decodes(harness, typed, seq, ts, flags):
    msg_type, payload = typed
    wire = bytes.fromhex(harness.cmd(f"frame_enc {msg_type} {flags} {seq} {ts} {payload.hex()}"))
    f = codec.decode_frame(wire[:-1])
    assert (f.msg_type, f.seq, f.timestamp_ms, f.flags, f.payload) == (msg_type, seq, ts, flags, payload)


@settings(max_examples=1500, deadline=None)
@given(corruptions())
def test_c_accepts_no_corrupted_frame(harness, pair):
    original, corrupted = pair
    pieces = [p for p in corrupted.split(b"\x00") if p]
    for piece in pieces:
        answer = harness.cmd(f"frame_dec {piece.hex()}")
        if answer.startswith("OK"):
            assert piece == original, "C accepted a corrupted frame"


def test_sanitized_core_survives_random_garbage_and_frame_fragments():
    """ASan/UBSan build of the real core: random bytes, fragments of valid frames, oversize runs."""
    h = Harness(sanitize=True)
    rng = random.Random(1234)
    h.core_init()
    from tests.bridge_fixtures import control, hello, setpoint

    valid = [hello(1, 0), setpoint(2, 1, 0.2, 0.1), control(3, 2, 1, spec.Op.ARM), control(4, 3, 2, 99),
             setpoint(5, 4, float("nan"), 0.0)]
    fed = 0
    for i in range(400):
        kind = rng.random()
        if kind < 0.3:
            chunk = os.urandom(rng.randint(1, 400))
        elif kind < 0.6:
            frame = rng.choice(valid)
            cut = rng.randint(0, len(frame))
            chunk = frame[:cut] if rng.random() < 0.5 else frame[cut:]
        elif kind < 0.7:
            chunk = b"\x01" * rng.randint(100, 2000)  # endless run without a delimiter
        else:
            frame = bytearray(rng.choice(valid))
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            chunk = bytes(frame)
        h.rx(chunk)
        fed += len(chunk)
        if i % 20 == 0:
            h.advance(30)
    h.rx(hello(1000, 5000))
    s = h.status()
    assert s["crc_errors"] + s["malformed"] + s["oversize"] > 100
    assert s["state"] in (0, 1, 2, 3)
    h.tx()  # drain
    rc, err = h.close()
    assert rc == 0, err
    assert "runtime error" not in err and "AddressSanitizer" not in err, err
    assert fed > 10000
