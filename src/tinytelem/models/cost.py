"""Per-operator work of one token's forward pass: the inputs of the device twin's cost model.

Counts follow the reference forward pass (run.c's structure) op by op, in execution order,
with the Op ids of the wire protocol so a twin can emit SPAN events straight from this list.
Conventions, chosen so the numbers are comparable across models:

* ``macs``: multiply-accumulates. A matmul of an (out, in) matrix costs out*in; RMSNorm costs
  2*dim (sum of squares, then scale-and-gain); RoPE 2 per rotated element; attention
  2*head_dim per head per cached position (scores, then the weighted sum of values); SwiGLU
  adds hidden (the gate product). Exponentials and the sampler are not MACs.
* ``weight_bytes``: bytes of parameters read. Matrices (and the embedding row) use
  ``weight_bits`` plus, when ``group_size`` > 0, one scale of ``scale_bytes`` per group, like
  Q8_0/Q4_0 formats; norm gains stay float32 as llama2.c's quantized runner keeps them.
* ``act_bytes``: activation bytes read plus written (``act_bytes_per_elem`` each; fp32 = 4).
* ``kv_bytes_read`` / ``kv_bytes_written``: KV-cache traffic (``kv_bytes_per_elem`` each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinytelem.errors import ConfigError
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.platforms.memory import activation_bytes, kv_cache_bytes
from tinytelem.protocol.messages import NO_LAYER, Op

__all__ = ["OpCost", "activation_bytes", "kv_cache_bytes", "op_costs", "param_count",
           "token_totals"]

_NORM_BYTES = 4


@dataclass(frozen=True, slots=True)
class OpCost:
    """Work of one operator for one token."""

    layer: int
    op: int
    macs: int
    weight_bytes: int
    act_bytes: int
    kv_bytes_read: int
    kv_bytes_written: int


def op_costs(config: LlamaConfig, pos: int, weight_bits: float = 32, *, group_size: int = 0,
             scale_bytes: int = 4, act_bytes_per_elem: int = 4, kv_bytes_per_elem: int = 4,
             ) -> list[OpCost]:
    """Every op of one token's forward at position ``pos``, in execution order.

    Args:
        config: Model shape.
        pos: 0-based position of the token; attention reads pos + 1 cached positions.
        weight_bits: Bits per matrix weight (32 fp32, 8 int8, 4 int4, fractional allowed).
        group_size: Weights per quantization scale; 0 means no per-group scales.
        scale_bytes: Bytes of one group scale (4 for fp32 scales, 2 for fp16).
        act_bytes_per_elem: Bytes of one activation element.
        kv_bytes_per_elem: Bytes of one KV-cache element.

    Raises:
        ConfigError: For a negative or out-of-context position or a non-positive width.
    """
    if not 0 <= pos < config.seq_len:
        raise ConfigError(f"position {pos} is outside the context 0..{config.seq_len - 1}")
    if weight_bits <= 0 or group_size < 0:
        raise ConfigError(f"weight_bits must be > 0 and group_size >= 0, got "
                          f"{weight_bits} and {group_size}")
    dim, hid, kv, vocab = config.dim, config.hidden_dim, config.kv_dim, config.vocab_size
    a, kvb = act_bytes_per_elem, kv_bytes_per_elem
    t = pos + 1

    def wbytes(n: int) -> int:
        scales = math.ceil(n / group_size) * scale_bytes if group_size else 0
        return math.ceil(n * weight_bits / 8) + scales

    def matmul(layer: int, op: Op, rows: int, cols: int) -> OpCost:
        return OpCost(layer, int(op), rows * cols, wbytes(rows * cols), (rows + cols) * a, 0, 0)

    def norm(layer: int, op: Op) -> OpCost:
        return OpCost(layer, int(op), 2 * dim, dim * _NORM_BYTES, 2 * dim * a, 0, 0)

    out = [OpCost(NO_LAYER, int(Op.EMBED), 0, wbytes(dim), dim * a, 0, 0)]
    for layer in range(config.n_layers):
        out.append(norm(layer, Op.ATTN_NORM))
        out.append(OpCost(layer, int(Op.QKV), (dim + 2 * kv) * dim,
                          wbytes(dim * dim) + 2 * wbytes(kv * dim), (2 * dim + 2 * kv) * a, 0,
                          2 * kv * kvb))
        # RoPE rotates q (dim) and k (kv_dim) in place; it also writes k into the cache, which
        # QKV accounts for, so ROPE only moves activations.
        out.append(OpCost(layer, int(Op.ROPE), 2 * (dim + kv), 0, 2 * (dim + kv) * a, 0, 0))
        att_act = (dim + config.n_heads * t * 2 + dim) * a  # q, scores (write+read), output
        out.append(OpCost(layer, int(Op.ATTENTION), 2 * dim * t, 0, att_act,
                          2 * t * kv * kvb, 0))
        out.append(matmul(layer, Op.ATTN_OUT, dim, dim))
        out.append(norm(layer, Op.FFN_NORM))
        ffn_act = (dim + 2 * hid + 2 * hid + hid + dim) * a  # x, w1|w3 out, gate in, w2 io
        out.append(OpCost(layer, int(Op.FFN), 3 * dim * hid + hid, 3 * wbytes(dim * hid),
                          ffn_act, 0, 0))
    out.append(norm(NO_LAYER, Op.FINAL_NORM))
    out.append(matmul(NO_LAYER, Op.CLASSIFIER, vocab, dim))
    out.append(OpCost(NO_LAYER, int(Op.SAMPLE), 0, 0, vocab * a, 0, 0))
    return out


def token_totals(costs: list[OpCost]) -> OpCost:
    """Sum of a token's ops (layer and op set to NO_LAYER / LAYER as placeholders)."""
    return OpCost(
        NO_LAYER, int(Op.LAYER),
        sum(c.macs for c in costs),
        sum(c.weight_bytes for c in costs),
        sum(c.act_bytes for c in costs),
        sum(c.kv_bytes_read for c in costs),
        sum(c.kv_bytes_written for c in costs),
    )


def param_count(config: LlamaConfig) -> int:
    """Parameters of the model (embedding, layers, final norm, separate classifier if any)."""
    dim, hid, kv, layers = config.dim, config.hidden_dim, config.kv_dim, config.n_layers
    per_layer = 2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * dim * hid
    total = config.vocab_size * dim + layers * per_layer + dim
    if not config.shared_classifier:
        total += config.vocab_size * dim
    return total
