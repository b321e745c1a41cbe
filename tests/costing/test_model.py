"""Cost model: placement, speed ordering across platforms, bounds, power, memory, calibration."""

from __future__ import annotations

import pytest

from tinytelem.costing.features import WeightBits, forward_ops
from tinytelem.costing.model import MEMORY_BOUND_UTILISATION, CostModel
from tinytelem.errors import ConfigError
from tinytelem.platforms.memory import memory_need
from tinytelem.protocol.messages import MsgType, Op, TraceLevel

from ..emulator.helpers import model, platform


def cost(name: str, bits: int = 4, **changes: object) -> CostModel:
    return CostModel(platform(name, **changes), model().config, bits)


def test_faster_platform_gives_faster_tokens() -> None:
    s3 = cost("esp32s3").token_seconds(10)
    h7 = cost("stm32h7").token_seconds(10)
    rp = cost("rp2040").token_seconds(10)
    assert rp > s3
    assert rp > h7
    # Doubling the clock of a board makes it faster but not twice (memory has its own limit).
    fast = cost("rp2040", cpu_hz=2 * platform("rp2040").cpu_hz).token_seconds(10)
    assert rp / 2 <= fast < rp


def test_placement_small_model_in_sram_large_in_psram_or_flash() -> None:
    assert cost("esp32s3", 4).placement.weights == "sram"
    fp32 = cost("esp32s3", 32).placement
    assert fp32.weights == "psram"
    assert fp32.weight_bytes > platform("esp32s3").sram_bytes
    assert cost("stm32h7", 32).placement.weights == "flash"  # no PSRAM: XIP from flash


def test_psram_placement_is_slower_than_sram() -> None:
    s3 = platform("esp32s3")
    in_sram = CostModel(s3, model().config, 8, context=64)
    assert in_sram.placement.weights == "sram"
    squeezed = CostModel(platform("esp32s3", sram_bytes=200_000), model().config, 8, context=64)
    assert squeezed.placement.weights == "psram"
    assert squeezed.token_seconds(5) > in_sram.token_seconds(5)
    # Weights in PSRAM stall the in-order core for their transfer time; compute is unchanged.
    ffn = next(t for t in squeezed.forward_ops(5) if t.op == Op.FFN)
    ref = next(t for t in in_sram.forward_ops(5) if t.op == Op.FFN)
    assert ffn.compute_s == pytest.approx(ref.compute_s)
    assert ffn.duration_s > ffn.compute_s
    assert ffn.duration_s <= ffn.compute_s + ffn.memory_s + 1e-12


def test_context_shrinks_to_fit_small_ram() -> None:
    small = cost("rp2040", sram_bytes=120_000)
    assert small.context < model().config.seq_len
    assert small.need.ram <= 120_000
    assert cost("esp32s3").context == model().config.seq_len


def test_cost_model_and_validate_share_one_memory_budget() -> None:
    c = cost("stm32f4")
    need = memory_need(model().config, c.placement.weight_bytes, platform("stm32f4"), c.context)
    assert c.need == need
    assert c.placement.arena_bytes == need.arena


def test_nothing_fits_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="arena"):
        cost("rp2040", sram_bytes=1000, psram_bytes=0)
    with pytest.raises(ConfigError, match="weights fit in no memory"):
        cost("rp2040", 32, flash_bytes=1000)
    with pytest.raises(ConfigError, match="weight_bits"):
        cost("esp32s3", 5)


def test_three_bit_weights_move_fewer_bytes_than_four() -> None:
    three, four = cost("esp32s3", 3), cost("esp32s3", 4)
    assert three.placement.weight_bytes < four.placement.weight_bytes
    ffn3 = next(t for t in three.forward_ops(10) if t.op == Op.FFN)
    ffn4 = next(t for t in four.forward_ops(10) if t.op == Op.FFN)
    assert ffn3.memory_s < ffn4.memory_s


def test_quantized_weights_are_costed_with_their_group_scales() -> None:
    cfg = model().config
    four = CostModel(platform("esp32s3"), cfg, WeightBits(4, 8))
    kv = cfg.dim * cfg.n_kv_heads // cfg.n_heads
    per_layer = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv + 3 * cfg.dim * cfg.hidden_dim
    emb = cfg.vocab_size * cfg.dim
    norms = (2 * cfg.n_layers + 1) * cfg.dim * 4
    # .tlm: packed codes plus one f16 scale per 32 weights, the 8-bit embedding likewise.
    expect = (cfg.n_layers * (per_layer // 2 + per_layer // 32 * 2)
              + emb + emb // 32 * 2 + norms)
    assert four.weight_bytes_total() == expect
    ffn = next(c for c in four.op_costs(3) if c.op == Op.FFN)
    assert ffn.weight_bytes == 3 * (cfg.dim * cfg.hidden_dim // 2
                                    + cfg.dim * cfg.hidden_dim // 32 * 2)
    cls = next(c for c in four.op_costs(3) if c.op == Op.CLASSIFIER)
    assert cls.weight_bytes == emb + emb // 32 * 2  # the classifier at the embedding's 8 bits
    fp32_scales = CostModel(platform("esp32s3"), cfg, WeightBits(4, 8, scale_bytes=4))
    assert fp32_scales.weight_bytes_total() > four.weight_bytes_total()
    # Float matrices have no scales.
    f32 = CostModel(platform("esp32s3"), cfg, 32)
    assert f32.weight_bytes_total() == cfg.n_layers * per_layer * 4 + emb * 4 + norms


def test_memory_bound_and_compute_bound_ops() -> None:
    psram = cost("esp32s3", 32, psram_bandwidth_bytes_per_s=1e6)  # a very slow PSRAM
    assert {t.bound for t in psram.forward_ops(3) if t.op == Op.FFN} == {"memory"}
    h7 = cost("stm32h7", 4)
    ffn = next(t for t in h7.forward_ops(3) if t.op == Op.FFN)
    assert ffn.bound == "compute"
    p = platform("stm32h7")
    assert ffn.watts == pytest.approx(p.active_power_w, rel=0.05)
    mem_ffn = next(t for t in psram.forward_ops(3) if t.op == Op.FFN)
    s3 = psram.platform
    low = s3.idle_power_w + (s3.active_power_w - s3.idle_power_w) * MEMORY_BOUND_UTILISATION
    assert low <= mem_ffn.watts < s3.active_power_w


def test_op_duration_formula() -> None:
    c = cost("stm32h7", 4)
    p = platform("stm32h7")
    feats = forward_ops(model().config, 0, WeightBits.uniform(4))
    for t, f in zip(c.forward_ops(0), feats, strict=True):
        assert t.duration_s == pytest.approx(t.compute_s)  # all in SRAM: no stalls
        assert t.compute_s == pytest.approx(
            t.instructions * p.cycles_per_instruction * p.efficiency / p.cpu_hz)
        if t.op != Op.EMBED:  # EMBED also carries the token loop's own instructions
            assert t.instructions == pytest.approx(c.calibration.instructions(f))


def test_efficiency_and_cpi_scale_compute_time() -> None:
    base = cost("stm32f4", 4, psram_bytes=0)
    slow = cost("stm32f4", 4, efficiency=2.0)
    a = next(t for t in base.forward_ops(2) if t.op == Op.FFN)
    b = next(t for t in slow.forward_ops(2) if t.op == Op.FFN)
    assert b.compute_s == pytest.approx(2 * a.compute_s)
    assert base.calibration_id.startswith("engine-")


def test_efficiency_on_memory_scales_external_memory_time_only() -> None:
    base = cost("esp32s3", 32, efficiency=1.0)
    slow = cost("esp32s3", 32, efficiency=2.0, efficiency_on="memory")
    assert base.placement.weights == "psram"  # fp32 stories260K does not fit the SRAM
    a = next(t for t in base.forward_ops(2) if t.op == Op.FFN)
    b = next(t for t in slow.forward_ops(2) if t.op == Op.FFN)
    assert b.compute_s == pytest.approx(a.compute_s)
    assert b.memory_s == pytest.approx(2 * a.memory_s)
    assert b.duration_s - b.compute_s == pytest.approx(2 * (a.duration_s - a.compute_s))


def test_fewer_bits_cost_fewer_instructions_than_float() -> None:
    four = cost("stm32f4", 4).instructions_per_token(3)
    fp32 = cost("stm32f4", 32, flash_bytes=4 << 20).instructions_per_token(3)
    assert fp32 > four > 0


def test_attention_cost_grows_with_position() -> None:
    c = cost("esp32s3")
    assert c.token_seconds(400) > c.token_seconds(0)
    assert next(t.op for t in c.forward_ops(0)) == Op.EMBED
    assert Op.SAMPLE not in {t.op for t in c.forward_ops(0)}


def test_tracing_overhead_is_measurable() -> None:
    c = cost("esp32s3")
    spans = c.token_seconds(5)
    c.trace_level = TraceLevel.TOKENS
    tokens = c.token_seconds(5)
    c.trace_level = TraceLevel.OFF
    off = c.token_seconds(5)
    assert spans > tokens > off
    assert tokens - off == pytest.approx(
        c.frame_cost_s(MsgType.TOKEN) + c.frame_cost_s(MsgType.MEMORY)
    )


def test_memory_grows_with_kv() -> None:
    c = cost("esp32s3")
    a = c.memory(1)
    b = c.memory(100, a.heap_peak)
    assert b.kv_bytes > a.kv_bytes
    assert b.heap_used > a.heap_used and b.heap_peak == b.heap_used
    assert a.arena_bytes == b.arena_bytes == c.placement.arena_bytes
    assert c.memory(10**6).kv_bytes == c.kv_capacity_bytes
