"""ONNX reader for llama-style decoders, through ``onnx``.

Reading (:func:`read_onnx`) recovers the float weights from the graph's constants:

* plain float initializers (fp32/fp16/bf16);
* ``DequantizeLinear`` on INT8/UINT8, INT4/UINT4 (opset 21+) and INT2/UINT2 (opset 25+, the
  first opset whose type list has them in onnx 1.23), per-tensor, per-axis or blocked
  (``block_size``): ``y = (x - zero_point) * scale`` with scale repeated along ``axis``;
* ``com.microsoft.MatMulNBits`` with bits 2, 3, 4 or 8: ``B`` uint8 ``[N, k_blocks, blob]``,
  ``blob = block_size * bits / 8``, codes packed low-bits-first along K; ``scales`` ``[N *
  k_blocks]``; optional ``zero_points`` packed the same way per row (``[N * ceil(k_blocks *
  bits / 8)]``) or unpacked floats; missing zero point = ``2^(bits-1)``;
* ``Transpose`` of a constant.

Names map to the canonical (llama.cpp) names by pattern, whichever convention the exporter
used: HF (``model.layers.3.self_attn.q_proj``, ``mlp.down_proj``, ``input_layernorm``,
``model.norm``, ``lm_head``, ``embed_tokens``), onnxruntime-genai's ``attn``, Meta/llama2.c
(``layers.3.attention.wq``, ``feed_forward.w2``, ``tok_embeddings``) or llama.cpp's own. A
constant consumed as MatMul's ``B`` is stored (in, out) and transposed; MatMulNBits is (out, in).
HF stores q/k rows in rotate-half order; they are un-permuted unless the model's
``metadata_props`` say ``tinytelem.rope_layout = meta``. Head counts and context come from
``metadata_props`` (``tinytelem.config`` JSON, or HF's ``num_attention_heads``,
``num_key_value_heads``, ``max_position_embeddings``).

Writing is :mod:`tinytelem.models.onnx_write`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.gguf_io import (
    TensorInfo,
    hf_to_meta,
    model_from_tensors,
)
from tinytelem.models.llama2c import LlamaConfig, LlamaModel

__all__ = ["OnnxFile", "canonical_onnx_name", "read_onnx", "unpack_bits"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

_KNOWN_OPS: Final = frozenset({
    "MatMul", "Gemm", "Gather", "Mul", "Add", "Sub", "Div", "Pow", "Sqrt", "Reciprocal",
    "ReduceMean", "Reshape", "Transpose", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze",
    "Shape", "Cast", "Softmax", "Sigmoid", "Neg", "Cos", "Sin", "Where", "Expand", "Equal",
    "Range", "Trilu", "Constant", "ConstantOfShape", "Identity", "DequantizeLinear",
    "QuantizeLinear", "MatMulNBits", "SimplifiedLayerNormalization", "RotaryEmbedding",
    "SkipSimplifiedLayerNormalization", "GroupQueryAttention", "Attention", "Gelu", "Silu",
    "Less", "Greater", "Max", "Min", "Exp", "Tanh", "RMSNormalization", "ScatterND"})
# Layer-kind spellings an exporter may use -> GGUF kind: HF's last component, then ours.
_HF_LAYER: Final = {**{t.hf.rsplit(".", 1)[-1]: t.gguf for t in names.LAYER},
                    **{t.native: t.gguf for t in names.LAYER}}
_GG_LAYER: Final = tuple(t.gguf for t in names.LAYER)
_LAYER_RE = re.compile(r"(?:layers|blk|h)[./_](\d+)[./_]")


def canonical_onnx_name(name: str) -> str | None:
    """The canonical tensor name an ONNX initializer / value name stands for, or None."""
    m = _LAYER_RE.search(name)
    if m:
        i = m.group(1)
        for g in _GG_LAYER:
            if re.search(rf"\b{g}\b", name.replace(".", " ").replace("/", " ")):
                return f"blk.{i}.{g}.weight"
        for key, g in _HF_LAYER.items():
            if re.search(rf"(?:^|[./_]){key}(?:$|[./_])", name):
                return f"blk.{i}.{g}.weight"
        return None
    if re.search(r"embed_tokens|tok_embeddings|token_embd|wte", name):
        return "token_embd.weight"
    if re.search(r"lm_head|(?:^|[./])output\.weight|^output(?:$|[._])", name):
        return "output.weight"
    if re.search(r"model[./]norm|output_norm|final_norm|^norm(?:$|[._])|ln_f", name):
        return "output_norm.weight"
    return None


@dataclass
class OnnxFile:
    """What :func:`read_onnx` found."""

    model: LlamaModel
    tensors: list[TensorInfo]
    ops: dict[str, int]
    unsupported_ops: list[str]
    notes: list[str] = field(default_factory=list)


def unpack_bits(data: U8, bits: int, count: int) -> U8:
    """``count`` unsigned codes of ``bits`` each from a little-endian, low-bits-first stream."""
    flat = np.unpackbits(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1),
                         bitorder="little")
    b = flat[: count * bits].reshape(count, bits).astype(np.uint16)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    out: U8 = (b @ weights).astype(np.uint8)
    return out


# ---------------------------------------------------------------- reading

@dataclass
class _Const:
    value: F32
    qtype: str
    nbytes: int
    origin: str = ""  # the initializer this value was derived from (names carry meaning)


def _to_float(arr: Any) -> F32:
    out: F32 = np.asarray(arr).astype(np.float32)
    return out


def _dequantize_linear(node: Any, consts: dict[str, _Const], raw: dict[str, Any]) -> _Const:
    x = raw[node.input[0]]
    scale = _to_float(raw[node.input[1]])
    zp = raw[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    attrs = {a.name: a for a in node.attribute}
    axis = attrs["axis"].i if "axis" in attrs else 1
    block = attrs["block_size"].i if "block_size" in attrs else 0
    xs = np.asarray(x).astype(np.float32)
    zf = np.zeros_like(scale) if zp is None else np.asarray(zp).astype(np.float32)
    if scale.size == 1:
        value = (xs - zf.reshape(())) * scale.reshape(())
    else:
        ax = axis % xs.ndim
        if block:
            s = np.repeat(scale, block, axis=ax).take(range(xs.shape[ax]), axis=ax)
            z = np.repeat(zf, block, axis=ax).take(range(xs.shape[ax]), axis=ax)
        else:
            shape = [1] * xs.ndim
            shape[ax] = xs.shape[ax]
            s, z = scale.reshape(shape), zf.reshape(shape)
        value = (xs - z) * s
    dtype = str(np.asarray(x).dtype)
    bits = {"int2": 2, "uint2": 2, "int4": 4, "uint4": 4}.get(dtype, 8 * np.asarray(x).itemsize)
    nbytes = (xs.size * bits + 7) // 8 + scale.nbytes + (0 if zp is None else
                                                          (zf.size * bits + 7) // 8)
    return _Const(value.astype(np.float32), dtype, int(nbytes))


def _matmul_nbits(node: Any, raw: dict[str, Any]) -> _Const:
    attrs = {a.name: a.i for a in node.attribute}
    k, n, bits, bs = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
    if bits not in (2, 3, 4, 8):
        raise ModelError(f"MatMulNBits node {node.name!r} has bits={bits}; 2, 3, 4, 8 supported")
    b = np.asarray(raw[node.input[1]], dtype=np.uint8)
    nb = (k + bs - 1) // bs
    blob = bs * bits // 8
    if b.size != n * nb * blob:
        raise ModelError(f"MatMulNBits node {node.name!r}: B has {b.size} bytes, expected "
                         f"N*k_blocks*blob = {n}*{nb}*{blob}")
    codes = unpack_bits(b.reshape(n * nb, blob), bits, n * nb * bs).reshape(n, nb, bs)
    scales = _to_float(raw[node.input[2]]).reshape(n, nb)
    zp_name = node.input[3] if len(node.input) > 3 else ""
    zbytes = 0
    if zp_name:
        zraw = np.asarray(raw[zp_name])
        zbytes = zraw.nbytes
        if zraw.dtype == np.uint8:
            per_row = (nb * bits + 7) // 8
            z = np.stack([unpack_bits(r, bits, nb) for r in zraw.reshape(n, per_row)])
            zf = z.astype(np.float32)
        else:
            zf = zraw.astype(np.float32).reshape(n, nb)
    else:
        zf = np.full((n, nb), float(1 << (bits - 1)), dtype=np.float32)
    w = ((codes.astype(np.float32) - zf[..., None]) * scales[..., None]).reshape(n, nb * bs)[:, :k]
    return _Const(w.astype(np.float32), f"mnb{bits}", int(b.nbytes + scales.nbytes + zbytes))


def _config_from(meta: dict[str, str], arrays: dict[str, F32], src: str) -> LlamaConfig:
    if "tinytelem.config" in meta:
        try:
            cfg = LlamaConfig(**json.loads(meta["tinytelem.config"]))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{src}: metadata tinytelem.config is malformed ({exc})") from exc
        cfg.check(src)
        return cfg
    emb = arrays.get("token_embd.weight")
    if emb is None or emb.ndim != 2:
        raise ModelError(f"{src}: no token embedding found; name it embed_tokens / "
                         "tok_embeddings / token_embd")
    layers = {int(m.group(1)) for k in arrays if (m := re.match(r"blk\.(\d+)\.", k))}
    heads = meta.get("num_attention_heads")
    if heads is None or not layers:
        raise ModelError(f"{src}: cannot tell the head count; add metadata_props "
                         "num_attention_heads (and num_key_value_heads) to the model")
    gate = arrays.get("blk.0.ffn_gate.weight")
    hidden = int(gate.shape[0] if gate is not None else 0)
    h = int(heads)
    cfg = LlamaConfig(dim=int(emb.shape[1]), hidden_dim=hidden, n_layers=max(layers) + 1,
                      n_heads=h, n_kv_heads=int(meta.get("num_key_value_heads", h)),
                      vocab_size=int(emb.shape[0]),
                      seq_len=int(meta.get("max_position_embeddings", 512)),
                      shared_classifier="output.weight" not in arrays)
    cfg.check(src)
    return cfg


def read_onnx(path: str | Path) -> OnnxFile:
    """Read an ONNX llama-style model's weights into a float model (see module docstring).

    Raises:
        ModelError: Unparseable file, unknown names or head counts, or inconsistent shapes.
    """
    import onnx

    src = str(path)
    try:
        proto = onnx.load(src)
    except OSError as exc:
        raise ModelError(f"cannot read {src}: {exc.strerror or exc}; check the path") from exc
    except Exception as exc:  # protobuf DecodeError and friends carry no common base
        raise ModelError(f"{src}: not a readable ONNX model ({type(exc).__name__}: {exc}); "
                         "it is truncated or another format") from exc
    try:
        return _read_graph(proto, src)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ModelError(f"{src}: the graph is inconsistent ({type(exc).__name__}: {exc}); a "
                         "node refers to a missing or malformed tensor") from exc


def _read_graph(proto: Any, src: str) -> OnnxFile:
    from onnx import numpy_helper

    g = proto.graph
    meta = {p.key: p.value for p in proto.metadata_props}
    raw: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims is not None:
            raw[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consts: dict[str, _Const] = {}
    for name, a in raw.items():
        arr = np.asarray(a)
        if arr.dtype.kind == "f" or str(arr.dtype) == "bfloat16":
            consts[name] = _Const(_to_float(arr), str(arr.dtype).replace("float", "f"),
                                  int(arr.nbytes))
    ops: dict[str, int] = {}
    found: dict[str, tuple[F32, str, int]] = {}  # canonical -> (out,in) array, type, bytes
    for node in g.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
        if node.op_type == "DequantizeLinear" and node.input[0] in raw:
            consts[node.output[0]] = _dequantize_linear(node, consts, raw)
            consts[node.output[0]].qtype = str(np.asarray(raw[node.input[0]]).dtype)
            _remember_name(consts, node.output[0], node.input[0])
        elif node.op_type == "Transpose" and node.input[0] in consts:
            c = consts[node.input[0]]
            consts[node.output[0]] = _Const(c.value.T.copy(), c.qtype, c.nbytes)
            _remember_name(consts, node.output[0], node.input[0])
        elif node.op_type == "MatMulNBits" and node.input[1] in raw:
            c = _matmul_nbits(node, raw)
            _store(found, node.input[1], node.name, c, c.value)
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in consts:
            c = consts[node.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            value = c.value if trans_b else c.value.T
            _store(found, _orig(consts, node.input[1]), node.name, c, value)
        elif node.op_type == "Gather" and node.input[0] in consts:
            c = consts[node.input[0]]
            _store(found, _orig(consts, node.input[0]), node.name, c, c.value)
        elif node.op_type == "Mul":
            for inp in node.input:
                if inp in consts and consts[inp].value.ndim == 1:
                    c = consts[inp]
                    _store(found, _orig(consts, inp), node.name, c, c.value)
    # Float initializers nobody consumed in a recognised way (torch-style weight dumps).
    for name, c in consts.items():
        canon = canonical_onnx_name(name)
        if canon is not None and canon not in found and name in raw:
            found[canon] = (c.value, c.qtype, c.nbytes)
    arrays = {k: v[0] for k, v in found.items()}
    cfg = _config_from(meta, arrays, src)
    notes: list[str] = []
    layout = meta.get("tinytelem.rope_layout", "hf")
    if layout == "hf":
        for i in range(cfg.n_layers):
            for key, heads in ((f"blk.{i}.attn_q.weight", cfg.n_heads),
                               (f"blk.{i}.attn_k.weight", cfg.n_kv_heads)):
                if key in arrays:
                    arrays[key] = hf_to_meta(arrays[key], heads)
        notes.append("q/k rows un-permuted from HF rotate-half order "
                     "(metadata tinytelem.rope_layout=meta disables this)")
    model = model_from_tensors(cfg, arrays, name=Path(src).stem, source=src)
    infos = [TensorInfo(k, tuple(found[k][0].shape), found[k][1], found[k][2])
             for k in sorted(found)]
    unsupported = sorted(k for k in ops if k.split(".")[-1] not in _KNOWN_OPS)
    return OnnxFile(model, infos, ops, unsupported, notes)


def _remember_name(consts: dict[str, _Const], out: str, src: str) -> None:
    consts[out].origin = _orig(consts, src)


def _orig(consts: dict[str, _Const], name: str) -> str:
    c = consts.get(name)
    return c.origin or name if c is not None else name


def _store(found: dict[str, tuple[F32, str, int]], name: str, node_name: str, c: _Const,
           value: F32) -> None:
    canon = canonical_onnx_name(name) or canonical_onnx_name(node_name)
    if canon is not None:
        found[canon] = (np.ascontiguousarray(value, dtype=np.float32), c.qtype, c.nbytes)
