"""ONNX weights graphs written here: checker, onnxruntime against our dequantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.models.gguf_io import meta_to_hf, tensor_items
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.onnx_io import read_onnx
from tinytelem.models.onnx_write import write_onnx
from tinytelem.models.quant import dequantize_model, quantize_model
from tinytelem.models.reference import generate

onnx = pytest.importorskip("onnx")

CASES = [("qdq", 4, True), ("qdq", 4, False), ("qdq", 2, True), ("qdq", 2, False),
         ("qdq", 3, True), ("qdq", 8, True), ("matmulnbits", 4, True),
         ("matmulnbits", 2, False), ("matmulnbits", 3, True)]


def _ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    # ORT otherwise fuses DequantizeLinear+MatMul into MatMulNBits, whose CPU kernel may
    # quantize the activations to int8; the unfused kernels compute exactly what we compare.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/NotImplemented types
        pytest.skip(f"onnxruntime {ort.__version__} cannot run this graph: {str(exc)[:160]}")
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


@pytest.mark.parametrize(("style", "bits", "sym"), CASES)
def test_roundtrip_and_onnxruntime(style: str, bits: int, sym: bool, tmp_path: Path) -> None:
    m = builtin_model(4)
    qm = quantize_model(m, bits, 32, sym, per_tensor_bits={"tok_embeddings": bits})
    path = tmp_path / f"m-{style}-{bits}.onnx"
    written = write_onnx(qm, path, bits, 32, symmetric=sym, style=style)
    proto = onnx.load(str(path))
    if style == "qdq":
        onnx.checker.check_model(proto, full_check=True)
    got = read_onnx(path)
    want = tensor_items(dequantize_model(qm))
    for name, arr in tensor_items(got.model).items():
        assert np.array_equal(arr, want[name]), name
    kinds = {t.qtype for t in got.tensors}
    store = 4 if bits == 3 else bits
    expect = f"mnb{bits}" if style == "matmulnbits" else f"{'int' if sym else 'uint'}{store}"
    assert expect in kinds
    assert {t.name for t in written} == set(want)
    assert got.unsupported_ops == []
    rng = np.random.default_rng(0)
    feeds = {"x_dim": rng.standard_normal((1, 64)).astype(np.float32),
             "x_hidden": rng.standard_normal((1, 172)).astype(np.float32),
             "token": np.array([7], dtype=np.int64)}
    outs = _ort_outputs(path, feeds)
    for name, dq in want.items():
        y = outs[f"{name}.y"]
        w = dq
        if ".attn_q." in name or ".attn_k." in name:  # the graph holds HF row order
            w = meta_to_hf(dq, 8 if ".attn_q." in name else 4)
        if name == "token_embd.weight":
            ref = w[7][None]
        elif w.ndim == 1:
            ref = feeds["x_dim"] * w
        else:
            ref = feeds["x_dim" if w.shape[1] == 64 else "x_hidden"] @ w.T
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg=name)


def test_float_model_same_greedy_tokens(stories260k: Path, tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    write_onnx(m, tmp_path / "s.onnx", 8, 32)
    got = read_onnx(tmp_path / "s.onnx")
    qm = quantize_model(m, 8, 32, per_tensor_bits={"tok_embeddings": 8})
    ids = [1, 403, 407, 261, 378]
    assert generate(got.model, ids, 40) == generate(dequantize_model(qm), ids, 40)
