"""Quantize a whole llama2.c model: per-tensor bits and group sizes, RoPE tables, dequantizing.

:func:`quantize_model` applies :func:`~tinytelem.models.qtensor.quantize_matrix` to every matrix
of a :class:`~tinytelem.models.llama2c.LlamaModel` (with per-tensor overrides of bits and group
size, columns padded to whole groups) and keeps norms in float32; :class:`QuantizedModel` is what
the ``.tlm`` writer, the C exporter and the device twin read. How one matrix is quantized and
packed is :mod:`tinytelem.models.qtensor`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.llama2c import LlamaConfig, LlamaModel, LlamaWeights
from tinytelem.models.qtensor import BITS, GROUP_SIZES, Method, QuantTensor, quantize_matrix

__all__ = [
    "FLOAT_BITS",
    "QuantizedModel",
    "Tensor",
    "dequantize_model",
    "quantize_model",
    "rope_tables",
    "tensor_names",
]

F32 = npt.NDArray[np.float32]
FLOAT_BITS = (32,)
"""Accepted in ``per_tensor_bits`` to keep a matrix in float32."""
ROPE_THETA = 10000.0
NORM_EPS = 1e-5


Tensor = QuantTensor | F32
"""A model tensor: quantized matrix or float32 array (norms, RoPE tables, float matrices)."""


_LAYER_NORMS = names.NORM_KINDS
_LAYER_MATS = names.MATRIX_KINDS
_FIELD = {t.native: t.field for t in names.LAYER}


def tensor_names(config: LlamaConfig) -> list[str]:
    """Native tensor names in ``.tlm`` file order (:func:`tinytelem.models.names.native_names`).

    ``tok_embeddings``, then per layer ``layers.{i}.attention_norm, wq, wk, wv, wo, ffn_norm,
    w1, w2, w3``, then ``norm``, ``output`` (only with a separate classifier), ``rope.cos`` and
    ``rope.sin``.
    """
    return [*names.native_names(config), "rope.cos", "rope.sin"]


def rope_tables(config: LlamaConfig, theta: float = ROPE_THETA) -> tuple[F32, F32]:
    """cos and sin of ``pos * theta^(-2j/head_dim)``, shape (seq_len, head_dim // 2).

    Computed in float64 and rounded once to float32 so the tables are the best float32 values;
    the firmware reads them from the ``.tlm`` instead of calling libm.
    """
    hs = config.head_dim
    freq = 1.0 / theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)
    angle = np.outer(np.arange(config.seq_len, dtype=np.float64), freq)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


@dataclass
class QuantizedModel:
    """A model whose matrices are quantized: what ``.tlm`` holds and qinfer runs.

    Attributes:
        config: Hyper-parameters (``shared_classifier`` means ``output`` is absent and the
            classifier reuses ``tok_embeddings``).
        tensors: By native name (:func:`tensor_names`), in file order.
        name: Model name (at most 31 bytes of UTF-8 survive a ``.tlm``).
        source_sha256: sha256 hex of the float checkpoint it came from ("" when unknown).
        metadata: Free-form JSON-able facts (method, producer); not read by the firmware.
    """

    config: LlamaConfig
    tensors: dict[str, Tensor]
    name: str = ""
    source_sha256: str = ""
    metadata: dict[str, object] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) pairs in file order."""
        return iter(self.tensors.items())

    def param_count(self) -> int:
        """Learned parameters: RoPE tables and group-padding columns excluded."""
        total = 0
        for name, t in self.tensors.items():
            if name.startswith("rope."):
                continue
            if isinstance(t, QuantTensor) or t.ndim == 2:
                cols = self.config.hidden_dim if name.endswith(".w2") else self.config.dim
                total += t.shape[0] * cols
            else:
                total += int(t.size)
        return total

    def weight_bytes(self) -> int:
        """Bytes of tensor data (packed levels, scales, zeros, floats), RoPE tables included."""
        return sum(t.nbytes() if isinstance(t, QuantTensor) else t.nbytes
                   for t in self.tensors.values())

    def bits_per_weight(self) -> float:
        """Stored bits per learned parameter (scales and zero points included)."""
        learned = sum(t.nbytes() if isinstance(t, QuantTensor) else t.nbytes
                      for n, t in self.tensors.items() if not n.startswith("rope."))
        return 8.0 * learned / max(1, self.param_count())


def _bits_for(name: str, default: int, table: Mapping[str, int]) -> int:
    """Exact name first, then its kind (``wq``, ``tok_embeddings``, ``output``)."""
    if name in table:
        return table[name]
    return table.get(name.rsplit(".", 1)[-1], default)


def _pad_columns(matrix: F32, group_size: int) -> F32:
    """Zero columns up to a multiple of the group size (stories260K's hidden_dim is 172).

    A zero weight quantizes to an exact zero (symmetric level 0; the asymmetric range always
    contains 0), so with the input zero-extended the padded matrix computes the same products.
    """
    cols = matrix.shape[1]
    extra = -cols % group_size
    if not extra:
        return matrix
    out: F32 = np.pad(np.asarray(matrix, dtype=np.float32), ((0, 0), (0, extra)))
    return out


def quantize_model(model: LlamaModel, bits: int, group_size: int, symmetric: bool = True,
                   method: Method = "rtn", per_tensor_bits: Mapping[str, int] | None = None,
                   progress: Callable[[str], None] | None = None,
                   per_tensor_group: Mapping[str, int] | None = None) -> QuantizedModel:
    """Quantize every matrix of a llama2.c model group-wise.

    Norm gains stay float32 (a few hundred numbers that scale every activation). The token
    embedding -- also the classifier in stories260K -- is 8-bit by default: it is looked up
    one row at a time (cheap to dequantize) and its errors hit every logit, so low bits cost
    the most accuracy there per byte saved. ``per_tensor_bits`` overrides any matrix, by exact
    name (``layers.3.w2``) or by kind (``w2``, ``tok_embeddings``, ``output``); 32 keeps a
    matrix in float32. ``per_tensor_group`` overrides the group size the same way (a plan from
    ``model optimize`` picks it per tensor: a sensitive matrix may pay for smaller groups).

    A matrix whose input width is not a multiple of ``group_size`` (``w2`` when hidden_dim is
    172) is stored with zero columns appended; its QuantTensor shape is the padded one and the
    engine zero-extends that matmul's input vector.

    Args:
        model: The float model.
        bits: Default width of the layer matrices (2, 3, 4, 8).
        group_size: Group size for every quantized matrix.
        symmetric: Symmetric or asymmetric levels.
        method: ``"rtn"`` or ``"search"``.
        per_tensor_bits: Overrides, see above.
        per_tensor_group: Group-size overrides by exact name or kind (``group_size`` elsewhere).
        progress: Called with each tensor name before it is quantized (progress bars).

    Raises:
        ModelError: For an unsupported width or a group size that does not divide dim/hidden.
    """
    cfg, w = model.config, model.weights
    table = dict(per_tensor_bits or {})
    if bits not in BITS:
        raise ModelError(f"{bits}-bit quantization is not supported; use one of {BITS}")
    for key, value in table.items():
        if value not in BITS + FLOAT_BITS:
            raise ModelError(f"per-tensor bits {key}={value} is not one of {BITS + FLOAT_BITS}")
    groups = dict(per_tensor_group or {})
    lo, hi = GROUP_SIZES
    for key, value in groups.items():
        if not isinstance(value, int) or not lo <= value <= hi or value % 8:
            raise ModelError(f"per-tensor group size {key}={value} is invalid; use a multiple "
                             f"of 8 in {lo}..{hi}")

    def convert(name: str, matrix: F32, default: int) -> Tensor:
        if progress is not None:
            progress(name)
        b = _bits_for(name, default, table)
        if b == 32:
            return np.array(matrix, dtype=np.float32)
        g = _bits_for(name, group_size, groups)
        return quantize_matrix(_pad_columns(matrix, g), b, g, symmetric, method)

    out: dict[str, Tensor] = {"tok_embeddings": convert("tok_embeddings", w.token_embedding, 8)}
    for i in range(cfg.n_layers):
        for kind in _FIELD:
            arr: F32 = getattr(w, _FIELD[kind])[i]
            name = f"layers.{i}.{kind}"
            out[name] = (np.array(arr, dtype=np.float32) if kind in _LAYER_NORMS
                         else convert(name, arr, bits))
    out["norm"] = np.array(w.rms_final, dtype=np.float32)
    if not cfg.shared_classifier:
        out["output"] = convert("output", w.wcls, 8)
    out["rope.cos"], out["rope.sin"] = rope_tables(cfg)
    meta: dict[str, object] = {"bits": bits, "group_size": group_size, "symmetric": symmetric,
                               "method": method}
    if table:
        meta["per_tensor_bits"] = table
    if groups:
        meta["per_tensor_group"] = groups
    return QuantizedModel(cfg, out, name=model.name, source_sha256=model.sha256, metadata=meta)


def _as_float(t: Tensor, cols: int | None = None) -> F32:
    """Float values, cropped to ``cols`` input columns when the matrix was padded."""
    out = t.dequantize() if isinstance(t, QuantTensor) else np.asarray(t, dtype=np.float32)
    return out[:, :cols] if cols is not None else out


def dequantize_model(qmodel: QuantizedModel) -> LlamaModel:
    """The float32 LlamaModel the quantized weights stand for (for eval and float exporters)."""
    cfg, t = qmodel.config, qmodel.tensors
    layers = range(cfg.n_layers)
    width = {"w2": cfg.hidden_dim}
    stacked = {_FIELD[k]: np.stack([_as_float(t[f"layers.{i}.{k}"], width.get(k, cfg.dim)
                                              if k in _LAYER_MATS else None) for i in layers])
               for k in (*_LAYER_NORMS, *_LAYER_MATS)}
    emb = _as_float(t["tok_embeddings"])
    wcls = emb if cfg.shared_classifier else _as_float(t["output"])
    weights = LlamaWeights(token_embedding=emb, rms_final=_as_float(t["norm"]), wcls=wcls,
                           **stacked)
    return LlamaModel(cfg, weights, name=qmodel.name, sha256=qmodel.source_sha256,
                      source=f"dequantized:{qmodel.name}")
