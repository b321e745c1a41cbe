"""What each operator of the C engine does, as the numbers its instruction count depends on.

The engine calibration (``tinytelem firmware calibrate``) measures instructions per operator
span under QEMU and fits a linear model on these features; the cost model evaluates the same
features for any model shape. Both sides call :func:`forward_ops`, so a feature can never mean
one thing when fitted and another when predicted.

Kinds and their features (``t`` = positions attended, pos + 1):

* ``matvec`` (QKV, ATTN_OUT, FFN, CLASSIFIER): per weight width ``b`` the sums over the op's
  matrix-vector calls of ``calls_b``, ``cols_b`` (activation quantisation is per input element),
  ``rows_b`` (per output row: scale, accumulate, store) and ``macs_b``; plus the element-wise
  work riding in the same span: ``silu`` (hidden units, FFN) and ``resid`` (the residual add).
* ``embed``: ``one``, ``dim`` per width of the embedding table (one row dequantised).
* ``norm``: ``one``, ``dim``. ``rope``: ``one``, ``rot`` (dim + kv_dim elements rotated).
* ``attention``: ``one``, ``heads``, ``heads_t`` (scores and softmax exps), ``dim_t`` (the two
  dot products per cached position).
* ``sample`` (greedy argmax): ``one``, ``vocab``.

Group size: the calibration quantises with 32-wide groups, so the per-group work is folded into
``macs``; a model with other group sizes is costed as if its groups were 32 wide (the per-group
overhead is a few instructions per 32 MACs, see docs/emulator.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tinytelem.platforms.memory import Shape
from tinytelem.protocol.enums import NO_LAYER, Op

__all__ = [
    "CALIBRATION_GROUP",
    "MATVEC_OPS",
    "OpFeatures",
    "ShapeLike",
    "WeightBits",
    "forward_ops",
    "matvec_columns",
    "sample_features",
]

CALIBRATION_GROUP = 32
"""Group size of the calibration models (the quantizer's default)."""

MATVEC_OPS = frozenset({Op.QKV, Op.ATTN_OUT, Op.FFN, Op.CLASSIFIER})
_MATVEC_PARTS = ("calls", "cols", "rows", "macs")
SHARED_MATVEC = ("silu", "resid")


ShapeLike = Shape
"""The llama2.c config fields the features read: the memory budget's :class:`Shape`."""


@dataclass(frozen=True)
class WeightBits:
    """Stored width of the layer matrices and of the embedding/classifier (32 = float)."""

    layers: int
    embedding: int
    group: int = CALIBRATION_GROUP
    scale_bytes: int = 2
    """Bytes of one group scale of a quantized (<= 8-bit) matrix: the ``.tlm`` format stores f16
    scales (docs/tlm-format.md); a published engine may store others (fp32: 4)."""

    def matrix_bytes(self, n: int, bits: int) -> int:
        """Stored bytes of ``n`` weights at ``bits``: packed codes plus, when quantized, one
        scale per group (asymmetric zero points are not counted)."""
        scales = -(-n // self.group) * self.scale_bytes if bits <= 8 else 0
        return -(-n * bits // 8) + scales

    @classmethod
    def uniform(cls, bits: int) -> WeightBits:
        """Every matrix at ``bits``; quantized models keep the embedding at 8 bits by default
        (the quantizer's choice), float models keep it float."""
        return cls(bits, 32 if bits > 8 else 8)


@dataclass(frozen=True)
class OpFeatures:
    """One operator span: where it is and what it does."""

    layer: int
    op: Op
    kind: str
    features: Mapping[str, float]


def matvec_columns(bits: tuple[int, ...]) -> tuple[str, ...]:
    """Feature names of the joint matvec fit for these weight widths."""
    return tuple(f"{p}_{b}" for b in bits for p in _MATVEC_PARTS) + SHARED_MATVEC


def _padded(cols: int, bits: int, group: int) -> int:
    return cols if bits > 8 else -(-cols // group) * group


def _matvec(calls: list[tuple[int, int]], bits: int, group: int, silu: int = 0,
            resid: int = 0) -> dict[str, float]:
    f: dict[str, float] = {f"{p}_{bits}": 0.0 for p in _MATVEC_PARTS}
    for rows, cols in calls:
        c = _padded(cols, bits, group)
        f[f"calls_{bits}"] += 1
        f[f"cols_{bits}"] += c
        f[f"rows_{bits}"] += rows
        f[f"macs_{bits}"] += rows * c
    f["silu"] = float(silu)
    f["resid"] = float(resid)
    return f


def forward_ops(shape: ShapeLike, pos: int, bits: WeightBits) -> list[OpFeatures]:
    """The spans of one forward pass at ``pos`` in the engine's order (tt_llama.c)."""
    dim, hid = shape.dim, shape.hidden_dim
    kv = dim * shape.n_kv_heads // shape.n_heads
    heads, t = shape.n_heads, pos + 1
    lb, eb, g = bits.layers, bits.embedding, bits.group
    one = 1.0
    out = [OpFeatures(NO_LAYER, Op.EMBED, "embed", {f"one_{eb}": one, f"dim_{eb}": dim})]
    norm = {"one": one, "dim": float(dim)}
    for layer in range(shape.n_layers):
        out += [
            OpFeatures(layer, Op.ATTN_NORM, "norm", norm),
            OpFeatures(layer, Op.QKV, "matvec",
                       _matvec([(dim, dim), (kv, dim), (kv, dim)], lb, g)),
            OpFeatures(layer, Op.ROPE, "rope", {"one": one, "rot": float(dim + kv)}),
            OpFeatures(layer, Op.ATTENTION, "attention",
                       {"one": one, "heads": float(heads), "heads_t": float(heads * t),
                        "dim_t": float(dim * t)}),
            OpFeatures(layer, Op.ATTN_OUT, "matvec", _matvec([(dim, dim)], lb, g, resid=dim)),
            OpFeatures(layer, Op.FFN_NORM, "norm", norm),
            OpFeatures(layer, Op.FFN, "matvec",
                       _matvec([(hid, dim), (hid, dim), (dim, hid)], lb, g, silu=hid,
                               resid=dim)),
        ]
    out.append(OpFeatures(NO_LAYER, Op.FINAL_NORM, "norm", norm))
    out.append(OpFeatures(NO_LAYER, Op.CLASSIFIER, "matvec",
                          _matvec([(shape.vocab_size, dim)], eb, g)))
    return out


def sample_features(shape: ShapeLike) -> OpFeatures:
    """Greedy sampling over the logits."""
    return OpFeatures(NO_LAYER, Op.SAMPLE, "sample",
                      {"one": 1.0, "vocab": float(shape.vocab_size)})
