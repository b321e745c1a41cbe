"""llama2.c checkpoint reading, writing and the builtin model."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.llama2c import (
    MAGIC,
    LlamaConfig,
    LlamaModel,
    builtin_model,
    load_checkpoint,
    parse_checkpoint,
    serialize_checkpoint,
)

STORIES_SHA = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"
FIELDS = ("token_embedding", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
          "rms_final", "wcls")


def test_stories260k_header_shapes_and_hash(stories260k: Path) -> None:
    m = load_checkpoint(stories260k)
    assert m.config == LlamaConfig(64, 172, 5, 8, 4, 512, 512, shared_classifier=True)
    assert (m.config.head_dim, m.config.kv_dim) == (8, 32)
    assert m.sha256 == STORIES_SHA
    assert m.name == "stories260K"
    assert m.source == str(stories260k)
    w = m.weights
    assert w.wq.shape == (5, 64, 64) and w.wk.shape == (5, 32, 64) and w.wv.shape == (5, 32, 64)
    assert w.w1.shape == (5, 172, 64) and w.w2.shape == (5, 64, 172) and w.w3.shape == (5, 172, 64)
    assert w.rms_final.shape == (64,) and w.token_embedding.shape == (512, 64)
    assert w.wcls is w.token_embedding
    assert all(getattr(w, f).dtype == np.float32 for f in FIELDS)
    assert not w.wq.flags.writeable
    # spot-check against raw file offsets: the first embedding float and the first wq float
    raw = np.fromfile(stories260k, dtype="<f4", offset=28)
    assert w.token_embedding[0, 0] == raw[0]
    assert w.rms_att[0, 0] == raw[512 * 64]
    assert w.wq[0, 0, 1] == raw[512 * 64 + 5 * 64 + 1]


def _assert_same_weights(a: LlamaModel, b: LlamaModel, atol: float = 0.0) -> None:
    assert a.config == b.config
    for f in FIELDS:
        np.testing.assert_allclose(getattr(a.weights, f), getattr(b.weights, f), atol=atol, rtol=0)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("version", [0, 1])
def test_fp32_round_trip(version: int, shared: bool) -> None:
    m = _small_model(shared)
    data = serialize_checkpoint(m, version)
    back = parse_checkpoint(data, "mem.bin")
    _assert_same_weights(m, back)
    assert (back.weights.wcls is back.weights.token_embedding) == shared
    assert back.sha256 == hashlib.sha256(data).hexdigest()
    assert back.name == "mem"
    if version == 1:
        assert struct.unpack_from("<Ii", data) == (MAGIC, 1)
        assert len(data) % 4 == 0


def test_v0_unshared_header_has_negative_vocab() -> None:
    data = serialize_checkpoint(_small_model(shared=False), 0)
    assert struct.unpack_from("<7i", data)[5] == -16


@pytest.mark.parametrize("shared", [True, False])
def test_v2_q8_dequantizes_within_half_a_step(shared: bool) -> None:
    m = _small_model(shared)
    data = serialize_checkpoint(m, 2, group_size=64)  # backs off to 16 (dim)
    assert struct.unpack_from("<i", data, 37)[0] == 16
    back = parse_checkpoint(data)
    for f in ("token_embedding", "wq", "wk", "w2"):
        orig = getattr(m.weights, f)
        step = np.abs(orig.reshape(-1, 16)).max(axis=1) / 127
        err = np.abs(getattr(back.weights, f) - orig).reshape(-1, 16).max(axis=1)
        assert np.all(err <= step / 2 + 1e-7)
    np.testing.assert_array_equal(back.weights.rms_att, m.weights.rms_att)
    assert (back.weights.wcls is back.weights.token_embedding) == shared


def test_stories_v2_roundtrip_close(stories260k: Path) -> None:
    m = load_checkpoint(stories260k)
    back = parse_checkpoint(serialize_checkpoint(m, 2))
    _assert_same_weights(m, back, atol=0.02)


def _small_model(shared: bool = True) -> LlamaModel:
    cfg = LlamaConfig(16, 24, 2, 4, 2, 16, 8, shared)
    rng = np.random.default_rng(7)
    base = builtin_model(0).weights

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    w = type(base)(
        token_embedding=r(16, 16), rms_att=r(2, 16), wq=r(2, 16, 16), wk=r(2, 8, 16),
        wv=r(2, 8, 16), wo=r(2, 16, 16), rms_ffn=r(2, 16), w1=r(2, 24, 16), w2=r(2, 16, 24),
        w3=r(2, 24, 16), rms_final=r(16), wcls=r(16, 16),
    )
    if shared:
        w.wcls = w.token_embedding
    return LlamaModel(cfg, w, "small", "", "test")


@pytest.mark.parametrize("version", [0, 1, 2])
def test_truncated_and_padded_files_are_rejected(version: int, tmp_path: Path) -> None:
    data = serialize_checkpoint(_small_model(), version)
    for bad, word in ((data[:-1], "short"), (data + b"\0", "long"), (data[:100], "short")):
        p = tmp_path / "bad.bin"
        p.write_bytes(bad)
        with pytest.raises(ModelError, match=rf"bad\.bin.*too {word}"):
            load_checkpoint(p)


def test_stories_truncated(stories260k: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.bin"
    p.write_bytes(stories260k.read_bytes()[:500_000])
    with pytest.raises(ModelError, match=r"cut\.bin.*1056540 bytes, file has 500000"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ((0, 172, 5, 8, 4, 512, 512), "dim=0"),
        ((64, 172, 5, 8, 4, 512, -1), "seq_len=-1"),
        ((64, 172, 100000, 8, 4, 512, 512), "n_layers=100000"),
        ((64, 172, 5, 7, 4, 512, 512), "divide"),
        ((64, 172, 5, 8, 3, 512, 512), "divide"),
        ((48, 172, 5, 16, 4, 512, 512), "odd"),
        ((64, 172, 5, 8, 4, 1 << 24, 512), "vocab_size"),
    ],
)
def test_absurd_headers(fields: tuple[int, ...], match: str) -> None:
    data = struct.pack("<7i", *fields) + b"\0" * 64
    with pytest.raises(ModelError, match=match):
        parse_checkpoint(data, "x.bin")


def test_tiny_and_unknown_version_files() -> None:
    with pytest.raises(ModelError, match=r"shorter than a llama2\.c header"):
        parse_checkpoint(b"\1\2\3", "x.bin")
    with pytest.raises(ModelError, match="version 3 is not supported"):
        parse_checkpoint(struct.pack("<Ii", MAGIC, 3) + b"\0" * 300, "x.bin")
    with pytest.raises(ModelError, match=r"too short for a llama2\.c v1 header"):
        parse_checkpoint(struct.pack("<Ii", MAGIC, 1) + b"\0" * 20, "x.bin")
    v2 = bytearray(serialize_checkpoint(_small_model(), 2))
    struct.pack_into("<i", v2, 37, 5)
    with pytest.raises(ModelError, match="group size 5"):
        parse_checkpoint(bytes(v2), "x.bin")
    with pytest.raises(ModelError, match=r"cannot write llama2\.c version 9"):
        serialize_checkpoint(_small_model(), 9)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model file") as info:
        load_checkpoint(tmp_path / "nope.bin")
    assert isinstance(info.value.__cause__, OSError)


def test_builtin_model_is_deterministic_per_seed() -> None:
    a, b, c = builtin_model(0), builtin_model(0), builtin_model(1)
    assert a.config == load_shape()
    assert a.name == "builtin-260k"
    assert a.sha256 == b.sha256 != c.sha256
    assert len(a.sha256) == 64
    np.testing.assert_array_equal(a.weights.w1, b.weights.w1)
    assert not np.array_equal(a.weights.w1, c.weights.w1)
    assert a.weights.wcls is a.weights.token_embedding
    # its serialized form is a valid v0 file of the stories260K size with the same hash
    data = serialize_checkpoint(a)
    assert len(data) == 1_056_540
    assert parse_checkpoint(data).sha256 == a.sha256


def load_shape() -> LlamaConfig:
    return LlamaConfig(64, 172, 5, 8, 4, 512, 512, shared_classifier=True)
