"""Per-op cost accounting for one token."""

from __future__ import annotations

import pytest

from tinytelem.errors import ConfigError
from tinytelem.models.cost import (
    OpCost,
    activation_bytes,
    kv_cache_bytes,
    op_costs,
    param_count,
    token_totals,
)
from tinytelem.models.llama2c import LlamaConfig, builtin_model, serialize_checkpoint
from tinytelem.protocol.messages import NO_LAYER, Op

CFG = LlamaConfig(64, 172, 5, 8, 4, 512, 512, shared_classifier=True)
PER_LAYER = [Op.ATTN_NORM, Op.QKV, Op.ROPE, Op.ATTENTION, Op.ATTN_OUT, Op.FFN_NORM, Op.FFN]


def _matmul_params(c: LlamaConfig) -> int:
    q, kv, o = c.dim * c.dim, c.kv_dim * c.dim, c.dim * c.dim
    ffn = 3 * c.hidden_dim * c.dim
    return c.n_layers * (q + 2 * kv + o + ffn) + c.vocab_size * c.dim


def test_ops_in_execution_order() -> None:
    costs = op_costs(CFG, 0)
    expected = [(NO_LAYER, Op.EMBED)]
    expected += [(layer, op) for layer in range(5) for op in PER_LAYER]
    expected += [(NO_LAYER, Op.FINAL_NORM), (NO_LAYER, Op.CLASSIFIER), (NO_LAYER, Op.SAMPLE)]
    assert [(c.layer, c.op) for c in costs] == [(la, int(op)) for la, op in expected]
    assert all(isinstance(c, OpCost) for c in costs)


def test_total_macs_at_pos0_is_matmul_params_plus_small_terms() -> None:
    c = CFG
    total = token_totals(op_costs(c, 0)).macs
    matmul = _matmul_params(c)
    assert matmul == 259_328
    extras = c.n_layers * (2 * c.dim * 2 + 2 * (c.dim + c.kv_dim) + 2 * c.dim + c.hidden_dim)
    extras += 2 * c.dim
    assert total == matmul + extras
    assert total == pytest.approx(matmul, rel=0.02)


def test_attention_macs_and_kv_reads_grow_linearly_with_pos() -> None:
    def att(pos: int) -> OpCost:
        return next(c for c in op_costs(CFG, pos) if c.op == Op.ATTENTION)

    a0, a1, a99 = att(0), att(1), att(99)
    step = a1.macs - a0.macs
    assert step == 2 * CFG.dim
    assert a99.macs == a0.macs + 99 * step
    assert a99.kv_bytes_read == 100 * a0.kv_bytes_read == 100 * 2 * CFG.kv_dim * 4
    others0 = [c for c in op_costs(CFG, 0) if c.op != Op.ATTENTION]
    others99 = [c for c in op_costs(CFG, 99) if c.op != Op.ATTENTION]
    assert others0 == others99


def test_weight_bytes_scale_with_bits_and_groups() -> None:
    fp32 = token_totals(op_costs(CFG, 0)).weight_bytes
    norms = (2 * CFG.n_layers + 1) * CFG.dim * 4
    embed_row = CFG.dim
    assert fp32 == 4 * (_matmul_params(CFG) + embed_row) + norms
    int8 = token_totals(op_costs(CFG, 0, 8)).weight_bytes
    assert int8 == _matmul_params(CFG) + embed_row + norms
    q4 = token_totals(op_costs(CFG, 0, 4, group_size=32, scale_bytes=2)).weight_bytes
    groups = (_matmul_params(CFG) + embed_row) // 32
    assert q4 == (_matmul_params(CFG) + embed_row) // 2 + 2 * groups + norms


def test_kv_written_once_per_layer() -> None:
    tot = token_totals(op_costs(CFG, 5, kv_bytes_per_elem=2))
    assert tot.kv_bytes_written == CFG.n_layers * 2 * CFG.kv_dim * 2
    assert tot.act_bytes > 0


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="position"):
        op_costs(CFG, 512)
    with pytest.raises(ConfigError, match="position"):
        op_costs(CFG, -1)
    with pytest.raises(ConfigError, match="weight_bits"):
        op_costs(CFG, 0, 0)


def test_param_count_matches_the_file() -> None:
    n = param_count(CFG)
    rope_tables = CFG.seq_len * CFG.head_dim
    assert 28 + 4 * (n + rope_tables) == len(serialize_checkpoint(builtin_model(0))) == 1_056_540
    unshared = LlamaConfig(**{**vars(CFG), "shared_classifier": False})
    assert param_count(unshared) == n + CFG.vocab_size * CFG.dim


def test_memory_sizes() -> None:
    assert kv_cache_bytes(CFG) == 2 * 5 * 512 * 32 * 4
    assert kv_cache_bytes(CFG, 64, 1) == 2 * 5 * 64 * 32
    assert activation_bytes(CFG) == 4 * (4 * 64 + 2 * 172 + 8 * 512 + 512)
    assert activation_bytes(CFG, 2, context=128) == 2 * (4 * 64 + 2 * 172 + 8 * 128 + 512)
