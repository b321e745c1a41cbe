"""Mixed-precision fitting: the curve, the budget, the plan feeding quantize_model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.evaluate import eval_texts, tokenize_texts
from tinytelem.models.llama2c import load_checkpoint
from tinytelem.models.optimize import _hull, optimize_model, render_plan, trade_off_curve
from tinytelem.models.quant import quantize_model
from tinytelem.models.tokenizer import load_tokenizer
from tinytelem.platforms import get_platform


def test_hull_drops_dominated_and_concave_choices() -> None:
    opts = {32: (400, 0.0), 8: (100, 0.01), 4: (50, 0.5), 3: (40, 0.4), 2: (30, 2.0)}
    assert _hull(opts) == [32, 8, 3, 2]  # 4-bit is bigger and worse than 3-bit
    curve = trade_off_curve({"a": opts, "b": {32: (10, 0.0)}}, fixed_bytes=5)
    assert [p.weight_bytes for p in curve] == [115, 55, 45]
    assert [p.predicted_kld for p in curve] == pytest.approx([0.01, 0.4, 2.0])


def test_plan_fits_a_small_flash_and_beats_uniform_4bit(stories260k: Path, tok512: Path,
                                                         tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    seqs = tokenize_texts(load_tokenizer(tok512), eval_texts(), 512, max_tokens=96)
    uniform4 = quantize_model(m, 4, 32).weight_bytes()
    code = 48 * 1024
    small = dataclasses.replace(get_platform("rp2040"), flash_bytes=code + uniform4)
    plan = optimize_model(m, seqs, small, context=256, groups=(32,), measure_points=3)
    assert plan.weight_bytes <= small.flash_bytes - code
    assert plan.flash_budget == small.flash_bytes - code
    # The plan is what quantize_model builds from it.
    qm = quantize_model(m, 8, plan.group_size, per_tensor_bits=plan.per_tensor_bits)
    assert qm.weight_bytes() == plan.weight_bytes
    assert set(plan.per_tensor_bits.values()) <= {2, 3, 4, 8, 32}
    sizes = [p.weight_bytes for p in plan.curve]
    assert sizes == sorted(sizes, reverse=True)
    assert plan.curve[0].measured_kld is not None
    assert plan.measured_kld > 0 and plan.kv_bits in (8, 16, 32)
    d = plan.to_dict()
    assert d["schema"] == "tinytelem.plan/1" and d["kv_cache"]["context"] == plan.context
    assert "chosen" in render_plan(plan)
    strict = optimize_model(m, seqs, "esp32s3", max_kld=0.01, groups=(32,), measure_points=1)
    assert strict.predicted_kld <= 0.01
    loose = optimize_model(m, seqs, "esp32s3", max_kld=0.5, groups=(32,), measure_points=1)
    assert loose.weight_bytes < strict.weight_bytes


def test_impossible_fits_raise(stories260k: Path, tok512: Path) -> None:
    m = load_checkpoint(stories260k)
    seqs = tokenize_texts(load_tokenizer(tok512), eval_texts(), 512, max_tokens=24)
    tiny = dataclasses.replace(get_platform("rp2040"), flash_bytes=100 * 1024)
    with pytest.raises(ModelError, match="cannot be fitted"):
        optimize_model(m, seqs, tiny, groups=(32,))
    with pytest.raises(ConfigError, match="outside"):
        optimize_model(m, seqs, "esp32s3", context=10_000)
    with pytest.raises(ConfigError, match="divides"):
        optimize_model(m, seqs, "esp32s3", groups=(48,))
