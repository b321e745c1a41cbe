"""The .tlm container: byte layout, round trips, and typed errors for damaged files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models import qinfer
from tinytelem.models.llama2c import builtin_model
from tinytelem.models.qtensor import QuantTensor
from tinytelem.models.quant import QuantizedModel, quantize_model
from tinytelem.models.tlm import ENTRY, HEADER, parse_tlm, read_tlm, serialize_tlm, write_tlm


@pytest.fixture(scope="module")
def qmodel() -> QuantizedModel:
    return quantize_model(builtin_model(2), 4, 32, per_tensor_bits={"wo": 32, "w1": 3})


def _same(a: QuantizedModel, b: QuantizedModel) -> None:
    assert list(a.tensors) == list(b.tensors)
    for (name, x), (_, y) in zip(a, b, strict=True):
        assert type(x) is type(y), name
        if isinstance(x, QuantTensor):
            assert isinstance(y, QuantTensor)
            assert (x.bits, x.group_size, x.symmetric, x.shape) == \
                (y.bits, y.group_size, y.symmetric, y.shape)
            assert np.array_equal(x.q, y.q) and np.array_equal(x.scales, y.scales)
            assert (x.zeros is None and y.zeros is None) or np.array_equal(x.zeros, y.zeros)
        else:
            assert x.tobytes() == y.tobytes(), name


def test_header_layout_byte_by_byte(qmodel: QuantizedModel) -> None:
    data = serialize_tlm(qmodel, alignment=16)
    assert HEADER.size == 192 and ENTRY.size == 80
    assert data[0:4] == b"TLM1"
    assert struct.unpack_from("<HHIII", data, 4) == (1, 0, 192, 3, 16)  # shared | rope flags
    assert struct.unpack_from("<I", data, 20)[0] == len(data)
    count, table, esize, data_off = struct.unpack_from("<IIII", data, 24)
    assert count == len(qmodel.tensors) and table == 192 and esize == 80
    assert data_off == -(-(192 + 80 * count) // 16) * 16
    assert struct.unpack_from("<8I", data, 56) == (64, 172, 5, 8, 4, 512, 512, 8)
    assert struct.unpack_from("<2f", data, 88) == (10000.0, pytest.approx(1e-5))
    bits, sym, group = struct.unpack_from("<BBH", data, 96)
    assert (bits, sym, group) == (4, 1, 32)
    assert data[120:152].rstrip(b"\0") == b"builtin-260k"
    assert data[152:184] == bytes.fromhex(qmodel.source_sha256)
    # First table entry: tok_embeddings, Q8 symmetric (0x18), 2-D, group 32, (512, 64).
    e = data[192:272]
    assert e[:32].rstrip(b"\0") == b"tok_embeddings"
    assert (e[32], e[33], struct.unpack_from("<H", e, 34)[0]) == (0x18, 2, 32)
    assert struct.unpack_from("<4I", e, 36) == (512, 64, 0, 0)
    d_off, d_size, s_off, s_size, z_off, z_size = struct.unpack_from("<6I", e, 52)
    assert (d_off, d_size, s_size, z_off, z_size) == (data_off, 512 * 64, 2 * 512 * 2, 0, 0)
    assert s_off % 16 == 0 and s_off >= d_off + d_size
    raw = np.frombuffer(data, np.int8, d_size, d_off).reshape(512, 64)
    emb = qmodel.tensors["tok_embeddings"]
    assert isinstance(emb, QuantTensor) and np.array_equal(raw, emb.q)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


@pytest.mark.parametrize("alignment", [4, 16, 32, 64])
def test_round_trip_and_alignment(tmp_path: Path, qmodel: QuantizedModel, alignment: int
                                  ) -> None:
    path = tmp_path / "m.tlm"
    size = write_tlm(qmodel, path, alignment)
    assert size == path.stat().st_size
    back, infos, align = parse_tlm(path.read_bytes())
    assert align == alignment
    _same(qmodel, back)
    assert back.name == qmodel.name and back.source_sha256 == qmodel.source_sha256
    assert back.metadata == qmodel.metadata | {"per_tensor_bits": {"wo": 32, "w1": 3}}
    for info in infos:
        for off, n in (info.data, info.scales, info.zeros):
            assert n == 0 or off % alignment == 0
    w1 = next(i for i in infos if i.name == "layers.0.w1")
    assert w1.type_code == 0x13 and w1.group_size == 32
    ids = [1, 72, 101, 108]
    a, b = qinfer.QTransformer(qmodel), qinfer.QTransformer(read_tlm(path))
    for pos, tok in enumerate(ids):
        assert a.forward(tok, pos).tobytes() == b.forward(tok, pos).tobytes()


def test_asymmetric_and_separate_classifier_round_trip() -> None:
    m = builtin_model(4)
    m.config = type(m.config)(**{**vars(m.config), "shared_classifier": False})
    qm = quantize_model(m, 2, 16, symmetric=False, method="search")
    assert "output" in qm.tensors
    data = serialize_tlm(qm, 32)
    assert struct.unpack_from("<I", data, 12)[0] == 2  # rope tables, not shared
    back = parse_tlm(data)[0]
    _same(qm, back)
    assert not back.config.shared_classifier


def _patched(data: bytes, offset: int, fmt: str, *values: object, crc: bool = True) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    if crc:
        struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    return bytes(buf)


def test_damaged_files_give_typed_errors(tmp_path: Path, qmodel: QuantizedModel) -> None:
    data = serialize_tlm(qmodel)
    entry1 = 192 + 80  # layers.0.attention_norm (F32)
    entry2 = 192 + 160  # layers.0.wq (Q4 sym)
    cases = {
        "not a .tlm": b"GGUF" + data[4:],
        "shorter than a header": data[:100],
        "truncated": data[:-10],
        "CRC-32 mismatch": data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],
        "version 2.0": _patched(data, 4, "<H", 2),
        "unsupported tensor type code 0x15": _patched(data, entry2 + 32, "<B", 0x15),
        "absurd shape": _patched(data, entry2 + 36, "<I", 0),
        "misaligned": _patched(data, entry1 + 52, "<I",
                               struct.unpack_from("<I", data, entry1 + 52)[0] + 4),
        "its type and shape need": _patched(data, entry2 + 56, "<I", 7),
        "overlap": _patched(data, entry2 + 52, "<I",
                            struct.unpack_from("<I", data, entry1 + 52)[0]),
        "alignment 3 invalid": _patched(data, 16, "<I", 3),
        "unknown flags": _patched(data, 12, "<I", 0x80),
        "head_dim": _patched(data, 84, "<I", 9),
        "n_layers=0": _patched(data, 64, "<I", 0),
    }
    for needle, bad in cases.items():
        with pytest.raises(ModelError, match="at file offset") as info:
            parse_tlm(bad, "bad.tlm")
        assert needle in str(info.value), (needle, str(info.value))
    with pytest.raises(ModelError, match="cannot read"):
        read_tlm(tmp_path / "missing.tlm")
    with pytest.raises(ModelError, match="alignment 12"):
        serialize_tlm(qmodel, 12)
    with pytest.raises(ModelError, match="cannot write"):
        write_tlm(qmodel, tmp_path / "no" / "dir.tlm")


def test_f16_tensors_are_readable(qmodel: QuantizedModel) -> None:
    """F16 (type 1) is part of the format even though the quantizer does not emit it."""
    data = serialize_tlm(qmodel)
    entry = 192 + 80  # layers.0.attention_norm, 64 float32 values
    off, _size = struct.unpack_from("<II", data, entry + 52)
    gains = np.frombuffer(data, "<f4", 64, off)
    half = gains.astype("<f2").tobytes()
    buf = bytearray(data)
    buf[off: off + len(half)] = half
    struct.pack_into("<B", buf, entry + 32, 1)
    struct.pack_into("<I", buf, entry + 56, len(half))
    struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    back = parse_tlm(bytes(buf))[0]
    assert np.array_equal(back.tensors["layers.0.attention_norm"],
                          gains.astype(np.float16).astype(np.float32))
