"""GGUF round trips through gguf-py's reader and our reader; llama.cpp's layout facts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.gguf_io import (
    canonical_names,
    hf_to_meta,
    meta_to_hf,
    read_gguf,
    tensor_items,
    write_gguf,
)
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.reference import generate
from tinytelem.models.tokenizer import load_tokenizer

gguf = pytest.importorskip("gguf")


def test_f32_roundtrip_same_tokens(stories260k: Path, tok512: Path, tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    out = tmp_path / "s.gguf"
    write_gguf(m, out, "f32", tokenizer=tok)
    reader = gguf.GGUFReader(out)  # the package's own reader accepts it
    names = {t.name for t in reader.tensors}
    assert names == set(canonical_names(m.config))
    assert "output.weight" not in names  # tied classifier, as llama.cpp writes it
    q = reader.get_tensor([t.name for t in reader.tensors].index("blk.0.attn_q.weight"))
    assert list(q.shape) == [64, 64] and q.tensor_type == gguf.GGMLQuantizationType.F32
    g = read_gguf(out)
    for name, arr in tensor_items(m).items():
        assert np.array_equal(tensor_items(g.model)[name], arr), name
    ids = tok.encode("Once upon a time")
    assert generate(g.model, ids, 48) == generate(m, ids, 48)
    assert g.tokenizer is not None and g.tokenizer.encode("Once upon a time") == ids
    assert g.tokenizer.decode_all(generate(g.model, ids, 20)) == tok.decode_all(
        generate(m, ids, 20))
    assert g.metadata["general.architecture"] == "llama"


@pytest.mark.parametrize(("qtype", "file_type"), [("f32", "ALL_F32"), ("f16", "MOSTLY_F16"),
                                                  ("q4_0", "MOSTLY_Q4_0"),
                                                  ("q3_k", "MOSTLY_Q3_K_S")])
def test_file_type_is_written_so_llama_cpp_need_not_guess(qtype: str, file_type: str,
                                                          tmp_path: Path) -> None:
    out = tmp_path / f"m-{qtype}.gguf"
    write_gguf(builtin_model(1), out, qtype)
    assert read_gguf(out).metadata["general.file_type"] == gguf.LlamaFileType[file_type].value


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k"])
def test_quantized_gguf_reads_back_gguf_dequantization(qtype: str, tmp_path: Path) -> None:
    m = builtin_model(3)
    out = tmp_path / f"m-{qtype}.gguf"
    written = write_gguf(m, out, qtype)
    g = read_gguf(out)
    types = {t.name: t.qtype for t in g.tensors}
    assert types == {t.name: t.qtype for t in written}
    # 64-wide rows: q8_0/q4_0 directly, q4_k falls back to q4_0; hidden=172 rows go f16.
    want = "q8_0" if qtype == "q8_0" else "q4_0"
    assert types["blk.0.attn_q.weight"] == want
    assert types["blk.0.ffn_down.weight"] == "f16"
    assert types["blk.0.attn_norm.weight"] == "f32"
    gt = getattr(gguf.GGMLQuantizationType, want.upper())
    w = tensor_items(m)["blk.2.ffn_up.weight"]
    expect = gguf.quants.dequantize(gguf.quants.quantize(w, gt), gt)
    assert np.array_equal(tensor_items(g.model)["blk.2.ffn_up.weight"], expect)


def test_kquants_written_for_wide_rows(tmp_path: Path) -> None:
    """A 256-wide model takes q2_k/q3_k/q4_k as asked; gguf-py dequantizes them."""
    from dataclasses import replace

    from tinytelem.models.gguf_io import model_from_tensors

    m = builtin_model(1)
    cfg = replace(m.config, dim=256, hidden_dim=512, n_layers=1, n_heads=4, n_kv_heads=4)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in canonical_names(cfg):
        shape = {"token_embd.weight": (cfg.vocab_size, 256),
                 "blk.0.ffn_down.weight": (256, 512), "blk.0.ffn_gate.weight": (512, 256),
                 "blk.0.ffn_up.weight": (512, 256)}.get(name)
        if shape is None:
            shape = (256,) if "norm" in name else (256, 256)
        arrays[name] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    wide = model_from_tensors(cfg, arrays, name="wide", source="test")
    for qtype, bound in (("q2_k", 0.4), ("q3_k", 0.22), ("q4_k", 0.1)):
        out = tmp_path / f"w-{qtype}.gguf"
        write_gguf(wide, out, qtype)
        g = read_gguf(out)
        assert {t.qtype for t in g.tensors if len(t.shape) == 2} == {qtype}
        a = tensor_items(g.model)["blk.0.attn_q.weight"]
        b = arrays["blk.0.attn_q.weight"]
        assert float(np.sqrt(((a - b) ** 2).mean()) / b.std()) < bound


def test_rope_permutation_is_an_involution_pair() -> None:
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    hf = meta_to_hf(w, 8)
    assert not np.array_equal(hf, w)
    assert np.array_equal(hf_to_meta(hf, 8), w)
    # HF's first half of a head holds the even (first-of-pair) rows of Meta's layout.
    assert np.array_equal(hf[:8], w[0:16:2])


def test_bad_files_raise_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(ModelError, match="offset 0"):
        read_gguf(bad)
    with pytest.raises(ModelError, match=r"cannot read|does not exist"):
        read_gguf(tmp_path / "missing.gguf")
    good = tmp_path / "good.gguf"
    write_gguf(builtin_model(0), good, "f32")
    data = good.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"trunc\.gguf: not a readable GGUF file .* truncated"):
        read_gguf(tmp_path / "trunc.gguf")
    with pytest.raises(ModelError, match="cannot be written"):
        write_gguf(builtin_model(0), tmp_path / "x.gguf", "q5_k")
    with pytest.raises(ModelError, match="pass a LlamaModel"):
        write_gguf(object(), tmp_path / "x.gguf")


def test_non_llama_and_unsupported_rope(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "gpt.gguf"), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="only 'llama'"):
        read_gguf(tmp_path / "gpt.gguf")


def test_quantized_model_input(tmp_path: Path) -> None:
    from tinytelem.models.quant import dequantize_model, quantize_model

    qm = quantize_model(builtin_model(2), 4, 32)
    write_gguf(qm, tmp_path / "q.gguf", "f32")
    g = read_gguf(tmp_path / "q.gguf")
    ref = tensor_items(dequantize_model(qm))
    for name, arr in tensor_items(g.model).items():
        assert np.array_equal(arr, ref[name])


@pytest.mark.parametrize("kind", ["gguf", "onnx"])
def test_every_corrupt_file_is_a_model_error_that_says_why(kind: str, tmp_path: Path) -> None:
    """Truncations and byte flips: each one a ModelError that names the file and says why.

    Truncations are reported as such; flips (in the header and first tensors) as corrupt,
    incomplete or inconsistent. A reader that read past the damage would fail here.
    """
    from tinytelem.models.onnx_io import read_onnx
    from tinytelem.models.onnx_write import write_onnx

    src = tmp_path / f"m.{kind}"
    if kind == "gguf":
        write_gguf(builtin_model(0), src, "q4_0")
    else:
        write_onnx(builtin_model(0), src, 4)
    reader = read_gguf if kind == "gguf" else read_onnx
    data = src.read_bytes()
    rng = np.random.default_rng(7)
    for i in range(60):
        b = bytearray(data)
        if i % 2:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            for _ in range(3):
                b[int(rng.integers(0, 2000))] = int(rng.integers(0, 256))
        bad = tmp_path / f"x.{kind}"
        bad.write_bytes(bytes(b))
        why = "truncated" if i % 2 else "corrupt|incomplete|inconsistent"
        with pytest.raises(ModelError, match=rf"^{re.escape(str(bad))}: .*({why})"):
            reader(bad)


def test_nan_weights_are_rejected_with_offset(tmp_path: Path) -> None:
    good = tmp_path / "g.gguf"
    write_gguf(builtin_model(0), good, "q8_0")
    t = next(t for t in gguf.GGUFReader(good).tensors if t.name == "blk.0.attn_q.weight")
    data = bytearray(good.read_bytes())
    data[t.data_offset: t.data_offset + 2] = np.float16(np.nan).tobytes()  # first block's d
    (tmp_path / "nan.gguf").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"blk.0.attn_q.weight at offset {t.data_offset}"):
        read_gguf(tmp_path / "nan.gguf")


def test_reads_legacy_types_we_do_not_write(tmp_path: Path) -> None:
    """Q4_1, Q5_0, Q5_1 (quantized by gguf-py) come back as gguf-py dequantizes them."""
    m = builtin_model(5)
    path = tmp_path / "legacy.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    c = m.config
    w.add_context_length(c.seq_len)
    w.add_embedding_length(c.dim)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_block_count(c.n_layers)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    kinds = [gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q5_0,
             gguf.GGMLQuantizationType.Q5_1]
    expect = {}
    for i, (name, arr) in enumerate(tensor_items(m).items()):
        if arr.ndim == 2 and arr.shape[1] % 32 == 0:
            kind = kinds[i % 3]
            packed = gguf.quants.quantize(arr, kind)
            w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)
            expect[name] = gguf.quants.dequantize(packed, kind)
        else:
            w.add_tensor(name, arr)
            expect[name] = arr
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(path)
    assert {t.qtype for t in g.tensors} == {"q4_1", "q5_0", "q5_1", "f32"}
    for name, arr in tensor_items(g.model).items():
        assert np.array_equal(arr, expect[name]), name
    assert g.tokenizer is None


@pytest.mark.slow
def test_llama_cpp_generates_our_text_from_our_f32_gguf(stories260k: Path, tok512: Path,
                                                        tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'tinytelem[llamacpp]'"
        ", which compiles llama.cpp: ~12 min on 2 cores)")
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    out = tmp_path / "s-f32.gguf"
    write_gguf(m, out, "f32", tokenizer=tok)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, n_threads=1, verbose=False)
    prompt = "Once upon a time"
    ids = tok.encode(prompt)
    assert llm.tokenize(prompt.encode(), add_bos=True) == ids  # our tokenizer keys, its encoder
    want = generate(m, ids, len(ids) + 99)[len(ids):]
    got: list[int] = []
    for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        if t in (llm.token_bos(), llm.token_eos()) or len(got) == len(want):
            break
        got.append(t)
    assert got == want and len(want) == 100
    assert llm.detokenize(got).decode() == tok.decode_all([1, *want])
