"""COBS against the classic examples of the literature, plus properties and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytelem.errors import ProtocolError
from tinytelem.protocol import cobs

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "protocol_v1.json").read_text("utf-8")
)
COBS_CASES = [
    (c["name"], bytes.fromhex(c["decoded"]), bytes.fromhex(c["encoded"])) for c in VECTORS["cobs"]
]


@pytest.mark.parametrize(("name", "decoded", "encoded"), COBS_CASES, ids=[c[0] for c in COBS_CASES])
def test_known_vectors(name: str, decoded: bytes, encoded: bytes) -> None:
    assert cobs.encode(decoded) == encoded
    assert cobs.decode(encoded) == decoded


def test_literature_examples_inline() -> None:
    # Written out by hand (not from the JSON) so a bad regeneration cannot hide a change.
    assert cobs.encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs.encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"
    run = bytes(range(1, 255))
    assert cobs.encode(run) == b"\xff" + run  # no code byte after a final full block
    assert cobs.encode(run + b"\xff") == b"\xff" + run + b"\x02\xff"
    assert cobs.encode(run + b"\x00") == b"\xff" + run + b"\x01\x01"


def test_decoder_accepts_redundant_final_code() -> None:
    run = bytes(range(1, 255))
    assert cobs.decode(b"\xff" + run + b"\x01") == run


@pytest.mark.parametrize(
    ("encoded", "match"),
    [
        (b"\x03\x11\x00\x22", "zero byte inside an encoded frame at offset 2"),
        (b"\x05\x11\x22", "code 5 at offset 0 runs past the frame end"),
        (b"\x02\x11\x04\x01", "code 4 at offset 2"),
    ],
)
def test_malformed(encoded: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        cobs.decode(encoded)


@given(st.binary(max_size=2000))
def test_round_trip_and_no_zero(data: bytes) -> None:
    enc = cobs.encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs.max_encoded_len(len(data))
    assert cobs.decode(enc) == data


@given(st.lists(st.sampled_from([b"\x00", b"\x01", b"\xab" * 253, b"\xcd" * 254]), max_size=8))
def test_round_trip_around_block_boundaries(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert cobs.decode(cobs.encode(data)) == data


@given(st.binary(min_size=1, max_size=600).filter(lambda b: 0 not in b))
def test_decode_never_raises_other_errors(data: bytes) -> None:
    try:
        out = cobs.decode(data)
    except ProtocolError:
        return
    assert cobs.encode(out) in (data, data[:-1])  # canonical, or the redundant final 0x01


def test_max_encoded_len() -> None:
    assert cobs.max_encoded_len(0) == 1
    assert cobs.max_encoded_len(254) == 256
    assert len(cobs.encode(b"\x01" * 254)) == 255
