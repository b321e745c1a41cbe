"""ONNX decoder step: one token in, logits and the grown KV cache out, runnable in onnxruntime.

:func:`write_onnx_decoder` writes the whole llama forward pass for one position:

======================== ========= =========================================================
name                     type      shape
======================== ========= =========================================================
``token`` (input)        int64     ``[1]``: the token at this position
``pos`` (input)          int64     ``[1]``: its position, 0-based (``< seq_len``)
``past_key.N`` (input)   float32   ``[1, n_kv_heads, past, head_dim]`` per layer N; past = pos
``past_value.N`` (input) float32   same
``logits`` (output)      float32   ``[1, vocab]``: next-token logits
``present_key.N`` (out)  float32   ``[1, n_kv_heads, past + 1, head_dim]``: feed back as past
``present_value.N``      float32   same
======================== ========= =========================================================

The first step passes empty caches (``past = 0``). The arithmetic is the reference's: RMSNorm
(eps 1e-5), RoPE on adjacent pairs from float32 tables (so q/k rows stay in llama2.c order;
``tinytelem.rope_layout = meta``), grouped-query attention, SwiGLU, tied or untied classifier.

Weights: a float model writes float32 ``MatMul`` weights. A quantized model (``.tlm``) keeps its
own levels and float16 scales: every quantized matrix is a ``com.microsoft.MatMulNBits``
(``accuracy_level`` :data:`ACCURACY_LEVEL`) with 2, 4 or 8 bits; onnxruntime has no 3-bit
kernel, so 3-bit levels are stored, exactly, as 4-bit codes. The 8-bit embedding is a blocked
``DequantizeLinear`` feeding the ``Gather``; a tied classifier is a second ``MatMulNBits`` on the
same levels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.gguf_io import TensorInfo
from tinytelem.models.llama2c import LlamaModel
from tinytelem.models.onnx_write import _emit_dq, _emit_mnb

__all__ = ["ACCURACY_LEVEL", "write_onnx_decoder"]

F32 = npt.NDArray[np.float32]
_EPS: Final = 1e-5
ACCURACY_LEVEL: Final = 0
"""MatMulNBits ``accuracy_level``: 0 computes in float32 with the dequantized weights, so the
graph matches our float reference of the same quantized weights (4 would quantize activations
to int8 in onnxruntime's own way, which matches neither of our engines exactly)."""


class _Graph:
    """Nodes and initializers under construction, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.opset = 21
        self._n = 0

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        name = out or f"t{self._n}_{kind}"
        domain = "com.microsoft" if kind == "MatMulNBits" else ""
        self.nodes.append(helper.make_node(kind, inputs, [name], name=f"n{self._n}_{kind}",
                                           domain=domain, **attrs))
        return name

    def rmsnorm(self, x: str, w: str) -> str:
        ms = self.op("ReduceMean", [self.op("Mul", [x, x]), "axes_last"], keepdims=1)
        inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [ms, "eps"])])])
        return self.op("Mul", [w, self.op("Mul", [inv, x])])


def write_onnx_decoder(model: Any, path: str | Path) -> list[TensorInfo]:
    """Write a decoder step (see the module docstring) from a float or a quantized model.

    Raises:
        ModelError: A model of another kind, or an unwritable path.
    """
    import onnx
    from onnx import TensorProto, helper

    from tinytelem.models.quant import QuantizedModel, dequantize_model, rope_tables

    qts: dict[str, Any] = {}
    if isinstance(model, QuantizedModel):
        qts = dict(model.tensors)
        fmodel = dequantize_model(model)
    else:
        fmodel = model
    if not isinstance(fmodel, LlamaModel):
        raise ModelError(f"cannot write {type(model).__name__} as ONNX; pass a LlamaModel")
    c = fmodel.config
    hd, group = c.head_dim, c.n_heads // c.n_kv_heads
    g = _Graph()
    g.const("axes_last", np.array([-1], dtype=np.int64))
    g.const("eps", np.array(_EPS, dtype=np.float32))
    g.const("inv_sqrt_hd", np.array(1.0 / np.sqrt(np.float32(hd)), dtype=np.float32))
    cos, sin = rope_tables(c)
    g.const("rope_cos", cos)
    g.const("rope_sin", sin)
    for key, shape in (("q_pairs", [1, c.n_heads, hd // 2, 2]),
                       ("k_pairs", [1, c.n_kv_heads, hd // 2, 2]),
                       ("q_heads", [1, c.n_heads, 1, hd]), ("k_heads", [1, c.n_kv_heads, 1, hd]),
                       ("q_groups", [c.n_kv_heads, group, hd]), ("row", [1, -1]),
                       ("rope_shape", [1, 1, hd // 2, 1])):
        g.const(key, np.array(shape, dtype=np.int64))
    written: list[TensorInfo] = []
    w = fmodel.weights

    def matmul(x: str, native: str, arr: F32) -> str:
        """``x @ W.T`` for the (out, in) matrix ``arr``, in the tensor's stored form."""
        hf = names.hf_name(names.native_to_gguf(native))
        canon = names.native_to_gguf(native)
        qt = qts.get(native)
        if qt is None or isinstance(qt, np.ndarray):
            b = g.const(hf, np.ascontiguousarray(np.asarray(arr, dtype=np.float32).T))
            written.append(TensorInfo(canon, arr.shape, "f32", arr.nbytes))
            return g.op("MatMul", [x, b])
        # onnxruntime has no 3-bit kernel: 3-bit levels (-4..3, or 0..7 with zero points) are
        # stored exactly in 4-bit codes.
        bits = 4 if qt.bits == 3 else qt.bits
        out = f"{hf}_y"
        node = _emit_mnb(hf, x, out, qt.q, qt.scales.astype(np.float32), qt.zeros, bits,
                         qt.group_size, qt.symmetric, g.inits, arr.shape[1])
        node.attribute.append(helper.make_attribute("accuracy_level", ACCURACY_LEVEL))
        g.nodes.append(node)
        written.append(TensorInfo(canon, arr.shape, f"mnb{bits}", qt.nbytes()))
        return out

    # Embedding table: float, or the 8-bit levels behind a blocked DequantizeLinear.
    emb_q = qts.get("tok_embeddings")
    emb_name = names.EMBEDDING.hf
    if emb_q is None or isinstance(emb_q, np.ndarray):
        table = g.const(emb_name, np.ascontiguousarray(w.token_embedding))
        written.append(TensorInfo("token_embd.weight", w.token_embedding.shape, "f32",
                                  w.token_embedding.nbytes))
    else:
        lv = emb_q.q[:, : c.dim]
        table, qtype, opset = _emit_dq(emb_name, lv, emb_q.scales.astype(np.float32),
                                       emb_q.zeros, emb_q.bits, emb_q.group_size,
                                       emb_q.symmetric, True, g.inits, g.nodes)
        g.opset = max(g.opset, opset)
        written.append(TensorInfo("token_embd.weight", w.token_embedding.shape, qtype,
                                  emb_q.nbytes()))
    x = g.op("Gather", [table, "token"], axis=0)  # [1, dim]
    cos_p = g.op("Reshape", [g.op("Gather", ["rope_cos", "pos"], axis=0), "rope_shape"])
    sin_p = g.op("Reshape", [g.op("Gather", ["rope_sin", "pos"], axis=0), "rope_shape"])

    def rope(v: str, pairs: str, heads: str) -> str:
        a, b = (f"{v}_even", f"{v}_odd")
        g.nodes.append(helper.make_node("Split", [g.op("Reshape", [v, pairs])], [a, b],
                                        name=f"{v}/Split", axis=-1, num_outputs=2))
        ra = g.op("Sub", [g.op("Mul", [a, cos_p]), g.op("Mul", [b, sin_p])])
        rb = g.op("Add", [g.op("Mul", [a, sin_p]), g.op("Mul", [b, cos_p])])
        return g.op("Reshape", [g.op("Concat", [ra, rb], axis=-1), heads])

    inputs = [helper.make_tensor_value_info("token", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("pos", TensorProto.INT64, [1])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, c.vocab_size])]
    for i in range(c.n_layers):
        for kind in ("key", "value"):
            dims: list[int | str] = [1, c.n_kv_heads, "past", hd]
            inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT,
                                                        dims))
            outputs.append(helper.make_tensor_value_info(
                f"present_{kind}.{i}", TensorProto.FLOAT, [1, c.n_kv_heads, "present", hd]))
        norm = g.const(f"model.layers.{i}.input_layernorm.weight", w.rms_att[i])
        h = g.rmsnorm(x, norm)
        q = rope(matmul(h, f"layers.{i}.wq", w.wq[i]), "q_pairs", "q_heads")
        k = rope(matmul(h, f"layers.{i}.wk", w.wk[i]), "k_pairs", "k_heads")
        v = g.op("Reshape", [matmul(h, f"layers.{i}.wv", w.wv[i]), "k_heads"])
        keys = g.op("Concat", [f"past_key.{i}", k], f"present_key.{i}", axis=2)
        vals = g.op("Concat", [f"past_value.{i}", v], f"present_value.{i}", axis=2)
        # Query heads h use kv head h // group: [n_kv, group, hd] x [n_kv, hd, T].
        qg = g.op("Reshape", [q, "q_groups"])
        kt = g.op("Transpose", [g.op("Squeeze", [keys, g.const(f"ax0_{i}",
                                                               np.array([0], np.int64))])],
                  perm=[0, 2, 1])
        scores = g.op("Mul", [g.op("MatMul", [qg, kt]), "inv_sqrt_hd"])
        probs = g.op("Softmax", [scores], axis=-1)
        att = g.op("MatMul", [probs, g.op("Squeeze", [vals, f"ax0_{i}"])])
        x = g.op("Add", [x, matmul(g.op("Reshape", [att, "row"]), f"layers.{i}.wo", w.wo[i])])
        norm = g.const(f"model.layers.{i}.post_attention_layernorm.weight", w.rms_ffn[i])
        h = g.rmsnorm(x, norm)
        gate = matmul(h, f"layers.{i}.w1", w.w1[i])
        up = matmul(h, f"layers.{i}.w3", w.w3[i])
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        x = g.op("Add", [x, matmul(g.op("Mul", [silu, up]), f"layers.{i}.w2", w.w2[i])])
    x = g.rmsnorm(x, g.const(names.FINAL_NORM.hf, w.rms_final))
    if c.shared_classifier and emb_q is not None and not isinstance(emb_q, np.ndarray):
        # The integer engine runs the tied classifier as a quantized matmul on the embedding's
        # levels; MatMulNBits does the same (its packed copy of the levels is the price).
        node = _emit_mnb(f"{emb_name}.classifier", x, "logits", emb_q.q,
                         emb_q.scales.astype(np.float32), emb_q.zeros, emb_q.bits,
                         emb_q.group_size, emb_q.symmetric, g.inits, c.dim)
        node.attribute.append(helper.make_attribute("accuracy_level", ACCURACY_LEVEL))
        g.nodes.append(node)
    elif c.shared_classifier:
        g.op("Gemm", [x, table], "logits", transB=1)
    else:
        y = matmul(x, "output", w.wcls)
        g.op("Identity", [y], "logits")
    graph = helper.make_graph(g.nodes, f"{fmodel.name or 'model'}-decoder-step", inputs,
                              outputs, g.inits)
    imports = [helper.make_opsetid("", g.opset), helper.make_opsetid("com.microsoft", 1)]
    proto = helper.make_model(graph, opset_imports=imports, producer_name="tinytelem")
    proto.ir_version = 11 if g.opset >= 25 else 10
    meta = {"tinytelem.config": json.dumps(vars(c)), "tinytelem.rope_layout": "meta",
            "tinytelem.naming": "hf", "tinytelem.graph": "decoder-step",
            "num_attention_heads": str(c.n_heads), "num_key_value_heads": str(c.n_kv_heads),
            "max_position_embeddings": str(c.seq_len)}
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)  # structure; com.microsoft ops have no shape inference here
    try:
        onnx.save(proto, str(path))
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return written
