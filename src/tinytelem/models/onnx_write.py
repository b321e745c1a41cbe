"""ONNX "weights graph" writer for llama-style models, through ``onnx``.

:func:`write_onnx` produces a weights graph, not a whole decoder: every matrix is
a quantized initializer behind a blocked ``DequantizeLinear`` (or one ``MatMulNBits``) feeding a
``MatMul`` with a one-row input (``x_dim`` or ``x_hidden``), the embedding feeds a ``Gather`` on
``token``, and the norm gains a ``Mul``. It passes ``onnx.checker`` and runs in onnxruntime;
outputs are named ``<canonical name>.y``.
Its names and bit layouts are the ones :mod:`tinytelem.models.onnx_io` reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.gguf_io import (
    TensorInfo,
    meta_to_hf,
    tensor_items,
)
from tinytelem.models.llama2c import LlamaModel

__all__ = ["write_onnx"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def _pack_bits(codes: U8, bits: int) -> U8:
    b = ((codes.reshape(-1, 1).astype(np.uint16) >> np.arange(bits, dtype=np.uint16)) & 1)
    out: U8 = np.packbits(b.astype(np.uint8).reshape(-1), bitorder="little")
    return out


def _quant_tensor(w: F32, bits: int, block: int, symmetric: bool, given: Any) -> Any:
    """The QuantTensor to write: the given one, or ``w`` zero-padded to whole groups."""
    from tinytelem.models.qtensor import QuantTensor, quantize_matrix

    if isinstance(given, QuantTensor):
        return given
    extra = -w.shape[1] % block
    return quantize_matrix(np.pad(w, ((0, 0), (0, extra))), bits, block, symmetric)


def write_onnx(model: Any, path: str | Path, bits: int = 4, block_size: int = 32, *,
               symmetric: bool = True, style: str = "qdq",
               rope_layout: str = "hf") -> list[TensorInfo]:
    """Write a weights graph (see module docstring) from a float or a group-wise quantized model.

    Args:
        model: A LlamaModel (quantized here with ``quantize_matrix``) or a QuantizedModel (its
            levels and float16 scales are written as they are).
        path: Output ``.onnx`` file.
        bits: 2, 4 or 8 for QDQ (3-bit levels are written as INT4, which holds them exactly);
            2, 3, 4 or 8 for ``style="matmulnbits"``.
        block_size: Weights per scale along the input dimension.
        symmetric: INT (scale only) or UINT with zero points.
        style: ``"qdq"`` (DequantizeLinear + MatMul) or ``"matmulnbits"`` (com.microsoft).
        rope_layout: ``"hf"`` writes q/k rows in HF order (what the names promise), ``"meta"``
            keeps llama2.c order; recorded in the metadata so the reader undoes it.

    Raises:
        ModelError: For bits/style the format cannot hold, or an unwritable path.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tinytelem.models.qtensor import QuantTensor
    from tinytelem.models.quant import QuantizedModel, dequantize_model

    if style not in ("qdq", "matmulnbits"):
        raise ModelError(f"ONNX style {style!r} is unknown; use qdq or matmulnbits")
    qts: dict[str, Any] = {}
    if isinstance(model, QuantizedModel):
        qts = {names.native_to_gguf(n): model.tensors[n]
               for n in names.native_names(model.config)}
        model = dequantize_model(model)
    if not isinstance(model, LlamaModel):
        raise ModelError(f"cannot write {type(model).__name__} as ONNX; pass a LlamaModel")
    cfg = model.config
    inits: list[Any] = []
    nodes: list[Any] = []
    outputs: list[Any] = []
    written: list[TensorInfo] = []
    opset = 21
    for canon, arr in tensor_items(model).items():
        hf = names.hf_name(canon)
        out_name = f"{canon}.y"
        w = np.asarray(arr, dtype=np.float32)
        heads = cfg.n_heads if ".attn_q." in canon else cfg.n_kv_heads
        permute = rope_layout == "hf" and (".attn_q." in canon or ".attn_k." in canon)
        if w.ndim == 1:
            inits.append(numpy_helper.from_array(w, hf))
            nodes.append(helper.make_node("Mul", ["x_dim", hf], [out_name], name=f"{hf}/Mul"))
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, cfg.dim]))
            written.append(TensorInfo(canon, w.shape, "f32", w.nbytes))
            continue
        given = qts.get(canon)
        gs = given.group_size if isinstance(given, QuantTensor) else block_size
        q = None if given is not None and not isinstance(given, QuantTensor) else (
            _quant_tensor(w, bits, gs, symmetric, given))
        if permute:
            w = meta_to_hf(w, heads)
        if q is None:  # a float tensor in a quantized model stays float
            # MatMul takes B as (in, out); Gather looks rows up in the (vocab, dim) table.
            table = w if canon == "token_embd.weight" else w.T
            inits.append(numpy_helper.from_array(np.ascontiguousarray(table), hf))
            wname, qtype, nbytes = hf, "f32", w.nbytes
            node_in = hf
        else:
            levels = q.q.astype(np.int8 if q.symmetric else np.uint8)
            if style == "qdq" or canon == "token_embd.weight":
                levels = levels[:, : w.shape[1]]  # drop zero padding; the last block is short
            scales = q.scales.astype(np.float32)
            zeros = None if q.symmetric else q.zeros
            if permute:
                levels = meta_to_hf(levels, heads)
                scales = meta_to_hf(scales, heads)
                zeros = None if zeros is None else meta_to_hf(zeros, heads)
            if style == "matmulnbits" and canon != "token_embd.weight":
                x = "x_dim" if w.shape[1] == cfg.dim else "x_hidden"
                node = _emit_mnb(hf, x, out_name, levels, scales, zeros, q.bits, gs,
                                 q.symmetric, inits, w.shape[1])
                nodes.append(node)
                outputs.append(helper.make_tensor_value_info(
                    out_name, TensorProto.FLOAT, [1, w.shape[0]]))
                written.append(TensorInfo(canon, w.shape, f"mnb{q.bits}", q.nbytes()))
                continue
            wname, qtype, opset_need = _emit_dq(hf, levels, scales, zeros, q.bits, gs,
                                                 q.symmetric, canon == "token_embd.weight",
                                                 inits, nodes)
            opset = max(opset, opset_need)
            nbytes = q.nbytes()
            node_in = wname
        if canon == "token_embd.weight":
            nodes.append(helper.make_node("Gather", [node_in, "token"], [out_name],
                                          name=f"{hf}/Gather", axis=0))
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                         [1, cfg.dim]))
        else:
            x = "x_dim" if w.shape[1] == cfg.dim else "x_hidden"
            nodes.append(helper.make_node("MatMul", [x, node_in], [out_name], name=f"{hf}/MatMul"))
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                         [1, w.shape[0]]))
        written.append(TensorInfo(canon, tuple(arr.shape), qtype, nbytes))
    inputs = [helper.make_tensor_value_info("x_dim", TensorProto.FLOAT, [1, cfg.dim]),
              helper.make_tensor_value_info("x_hidden", TensorProto.FLOAT, [1, cfg.hidden_dim]),
              helper.make_tensor_value_info("token", TensorProto.INT64, [1])]
    graph = helper.make_graph(nodes, f"{model.name or 'model'}-weights", inputs, outputs, inits)
    imports = [helper.make_opsetid("", opset)]
    if style == "matmulnbits":
        imports.append(helper.make_opsetid("com.microsoft", 1))
    proto = helper.make_model(graph, opset_imports=imports, producer_name="tinytelem")
    proto.ir_version = 11 if opset >= 25 else 10
    meta = {"tinytelem.config": json.dumps(vars(cfg)), "tinytelem.rope_layout": rope_layout,
            "tinytelem.naming": "hf", "num_attention_heads": str(cfg.n_heads),
            "num_key_value_heads": str(cfg.n_kv_heads),
            "max_position_embeddings": str(cfg.seq_len)}
    onnx.helper.set_model_props(proto, meta)
    if style == "qdq":
        onnx.checker.check_model(proto, full_check=True)
    try:
        onnx.save(proto, str(path))
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return written


def _emit_dq(hf: str, levels: Any, scales: F32, zeros: Any, bits: int, gs: int,
             symmetric: bool, is_embedding: bool, inits: list[Any],
             nodes: list[Any]) -> tuple[str, str, int]:
    """Quantized initializer + blocked DequantizeLinear; returns (output, type, opset)."""
    import ml_dtypes
    from onnx import helper, numpy_helper

    store_bits = 4 if bits == 3 else bits
    kind = {(2, True): ml_dtypes.int2, (2, False): ml_dtypes.uint2, (4, True): ml_dtypes.int4,
            (4, False): ml_dtypes.uint4, (8, True): np.int8, (8, False): np.uint8}[
                (store_bits, symmetric)]
    # Embedding: (vocab, dim) blocked along axis 1 for Gather; matrices: (in, out), axis 0.
    lv = levels if is_embedding else levels.T
    sc = scales if is_embedding else scales.T
    axis = 1 if is_embedding else 0
    inputs = [f"{hf}_quantized", f"{hf}_scale"]
    inits.append(numpy_helper.from_array(np.ascontiguousarray(lv).astype(kind), inputs[0]))
    inits.append(numpy_helper.from_array(np.ascontiguousarray(sc, dtype=np.float32), inputs[1]))
    if zeros is not None:
        z = zeros if is_embedding else zeros.T
        inputs.append(f"{hf}_zero_point")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(z).astype(kind), inputs[2]))
    out = f"{hf}_dequantized"
    nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=f"{hf}/DQ",
                                  axis=axis, block_size=gs))
    name = f"{'int' if symmetric else 'uint'}{store_bits}"
    return out, name, 25 if store_bits == 2 else 21


def _emit_mnb(hf: str, x: str, out: str, levels: Any, scales: F32, zeros: Any, bits: int, gs: int,
              symmetric: bool, inits: list[Any], k: int) -> Any:
    """MatMulNBits with B packed from (possibly zero-padded) levels; K is the true width."""
    from onnx import helper, numpy_helper

    n, kpad = levels.shape
    nb = kpad // gs
    off = 1 << (bits - 1)
    codes = (levels.astype(np.int16) + (off if symmetric else 0)).astype(np.uint8)
    blob = np.stack([_pack_bits(r, bits) for r in codes.reshape(n * nb, gs)])
    inputs = [x, f"{hf}_Q{bits}", f"{hf}_scales"]
    inits.append(numpy_helper.from_array(blob.reshape(n, nb, gs * bits // 8), inputs[1]))
    inits.append(numpy_helper.from_array(
        np.ascontiguousarray(scales, dtype=np.float32).reshape(-1), inputs[2]))
    if zeros is not None:
        zp = np.concatenate([_pack_bits(np.asarray(r, dtype=np.uint8), bits)
                             for r in np.asarray(zeros).reshape(n, nb)])
        inputs.append(f"{hf}_zero_points")
        inits.append(numpy_helper.from_array(zp, inputs[3]))
    return helper.make_node("MatMulNBits", inputs, [out], name=f"{hf}/MatMulNBits",
                            domain="com.microsoft", K=k, N=n, bits=bits, block_size=gs)
