"""Cost model: placement, speed ordering across platforms, bounds, power and memory."""

from __future__ import annotations

import pytest

from tinytelem.emulator.costmodel import (
    FRAME_COST_CYCLES,
    MEMORY_BOUND_UTILISATION,
    OP_OVERHEAD_CYCLES,
    CostModel,
)
from tinytelem.errors import ConfigError
from tinytelem.protocol.messages import MsgType, Op, TraceLevel

from .helpers import model, platform


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
    assert squeezed.token_seconds(5) > 2 * in_sram.token_seconds(5)


def test_context_shrinks_to_fit_small_ram() -> None:
    rp = cost("rp2040")
    assert rp.context < model().config.seq_len
    assert rp.placement.arena_bytes + 4096 + rp.stack_peak <= platform("rp2040").sram_bytes
    assert cost("esp32s3").context == model().config.seq_len


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
    assert three.token_seconds(10) <= four.token_seconds(10)


def test_memory_bound_and_compute_bound_ops() -> None:
    psram = cost("esp32s3", 32)
    assert {t.bound for t in psram.forward_ops(3) if t.op == Op.FFN} == {"memory"}
    h7 = cost("stm32h7", 4)
    ffn = next(t for t in h7.forward_ops(3) if t.op == Op.FFN)
    assert ffn.bound == "compute"
    p = platform("stm32h7")
    assert ffn.watts == pytest.approx(p.active_power_w, rel=0.05)
    mem_ffn = next(t for t in psram.forward_ops(3) if t.op == Op.FFN)
    s3 = platform("esp32s3")
    low = s3.idle_power_w + (s3.active_power_w - s3.idle_power_w) * MEMORY_BOUND_UTILISATION
    assert low <= mem_ffn.watts < s3.active_power_w


def test_op_duration_formula() -> None:
    c = cost("stm32h7", 4)
    p = platform("stm32h7")
    for t in c.forward_ops(0):
        assert t.duration_s == pytest.approx(
            OP_OVERHEAD_CYCLES / p.cpu_hz + max(t.compute_s, t.memory_s)
        )
        assert t.compute_s == pytest.approx(t.macs / (p.int8_macs_per_cycle * p.cpu_hz))


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
    cpu = platform("esp32s3").cpu_hz
    assert tokens - off == pytest.approx(
        (FRAME_COST_CYCLES[MsgType.TOKEN] + FRAME_COST_CYCLES[MsgType.MEMORY]) / cpu
    )


def test_memory_grows_with_kv() -> None:
    c = cost("esp32s3")
    a = c.memory(1)
    b = c.memory(100, a.heap_peak)
    assert b.kv_bytes > a.kv_bytes
    assert b.heap_used > a.heap_used and b.heap_peak == b.heap_used
    assert a.arena_bytes == b.arena_bytes == c.placement.arena_bytes
    assert c.memory(10**6).kv_bytes == c.kv_capacity_bytes
