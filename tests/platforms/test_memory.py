"""The one memory budget: its parts, the longest context, and that every user shares it."""

from __future__ import annotations

from tinytelem.models.llama2c import STORIES260K_SHAPE as CFG
from tinytelem.platforms import get_platform
from tinytelem.platforms.memory import (
    CODE_ESTIMATES,
    family_of,
    kv_cache_bytes,
    longest_context,
    memory_need,
)


def test_need_adds_up_from_its_parts() -> None:
    p = get_platform("stm32f4")
    need = memory_need(CFG, 150_000, p, 128)
    assert need.kv_cache == 2 * CFG.n_layers * 128 * CFG.kv_dim * 4 == kv_cache_bytes(CFG, 128)
    assert need.arena == need.kv_cache + need.activations + need.scratch
    assert need.ram == need.arena + CODE_ESTIMATES[family_of(p)][1]
    assert need.flash == 150_000 + CODE_ESTIMATES["cortex-m"][0]


def test_longest_context_is_the_last_that_fits() -> None:
    p = get_platform("rp2040")
    ram = 120_000
    ctx = longest_context(CFG, 100_000, p, ram)
    assert 0 < ctx < CFG.seq_len
    assert memory_need(CFG, 100_000, p, ctx).ram <= ram < memory_need(CFG, 100_000, p, ctx + 1).ram
    assert longest_context(CFG, 100_000, p, 10) == 0


def test_validate_and_cost_model_use_the_same_budget() -> None:
    from tinytelem.costing.model import CostModel
    from tinytelem.models.llama2c import builtin_model
    from tinytelem.models.validate import LoadedModel, validate_model

    m = builtin_model(0)
    cm = CostModel(get_platform("esp32s3"), m.config, 32)
    lm = LoadedModel("builtin", "builtin", m, [])
    rep = validate_model(lm, "esp32s3", context=cm.context)
    assert rep.need is not None
    assert rep.need.kv_cache == cm.need.kv_cache
    assert rep.need.activations == cm.need.activations
    assert rep.need.scratch == cm.need.scratch and rep.need.reserve == cm.need.reserve
