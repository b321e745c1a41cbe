"""The engine calibration: features, loading, and that it still matches the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinytelem.costing.calibration import calibration_path, load_calibration
from tinytelem.costing.features import WeightBits, forward_ops, matvec_columns
from tinytelem.errors import ConfigError
from tinytelem.models import cost as model_cost
from tinytelem.models.llama2c import STORIES260K_SHAPE
from tinytelem.protocol.enums import Op


def test_features_follow_the_engine_op_order() -> None:
    feats = forward_ops(STORIES260K_SHAPE, 7, WeightBits.uniform(4))
    ops = [Op(c.op) for c in model_cost.op_costs(STORIES260K_SHAPE, 7, 4)
           if Op(c.op) not in (Op.LAYER, Op.SAMPLE)]
    assert [f.op for f in feats] == ops
    qkv = next(f for f in feats if f.op == Op.QKV)
    kv = STORIES260K_SHAPE.kv_dim
    assert qkv.features["macs_4"] == (64 + 2 * kv) * 64
    ffn = next(f for f in feats if f.op == Op.FFN)
    assert ffn.features["cols_4"] == 64 + 64 + 192  # w2's 172 inputs padded to 32-wide groups
    assert set(matvec_columns((4, 8))) >= {"macs_4", "rows_8", "silu", "resid"}


def test_calibration_covers_every_family_the_platforms_name() -> None:
    from tinytelem.platforms import all_platforms

    for p in all_platforms():
        cal = load_calibration(p.isa_family)
        assert cal.calibration_id.startswith("engine-")
        assert set(cal.bits) >= {2, 3, 4, 8, 32}


def test_unknown_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="isa_family"):
        load_calibration("z80")


@pytest.mark.slow
def test_committed_calibration_matches_the_engine(tmp_path: Path) -> None:
    """Quick re-measurement (Cortex-M4, stories260K shape, 4-bit) against the committed data:
    fails when the C engine changed and `tinytelem firmware calibrate` was not rerun."""
    import trio

    from tinytelem.costing.measure import FAMILIES, engine_hash, measure_one
    from tinytelem.firmware.targets import get_target, missing_tools

    if missing_tools(get_target("cortex-m4")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    doc = json.loads(calibration_path().read_text())
    stored = next(m for m in doc["families"]["cortex-m4"]["measurements"]
                  if m["shape"] == "260k" and m["bits"] == 4)
    m = trio.run(measure_one, FAMILIES["cortex-m4"], "260k", 4, tmp_path)
    now = m["instructions"]["0"] / m["forwards"]
    then = stored["instructions"]["0"] / stored["forwards"]
    root = calibration_path().parents[1]
    assert now == pytest.approx(then, rel=0.02), (
        f"the engine now runs {now:.0f} instructions per forward pass, the calibration says "
        f"{then:.0f} (calibrated on firmware {doc['engine_hash']}, now {engine_hash(root)}); "
        "rerun `tinytelem firmware calibrate` and commit calibration/engine.json")


@pytest.mark.slow
def test_twin_as_stm32f405_predicts_the_firmware_instructions(tmp_path: Path) -> None:
    """The twin configured as the netduinoplus2's STM32F405 (a target the calibration never
    measured) predicts the firmware's instructions per token within 10% for three shapes."""
    import trio

    from tinytelem.costing.measure import SHAPES, Family, measure_one
    from tinytelem.costing.model import CostModel
    from tinytelem.firmware.targets import get_target, missing_tools
    from tinytelem.platforms import get_platform
    from tinytelem.protocol.enums import TraceLevel

    if missing_tools(get_target("stm32f405")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    board = get_platform("stm32f4")
    for shape in SHAPES:
        m = trio.run(measure_one, Family("stm32f405", "stm32f405", "check"), shape, 4, tmp_path)
        cm = CostModel(board, SHAPES[shape], 4, TraceLevel.OFF, context=m["context"])
        predicted = sum(cm.instructions_per_token(pos, sample=pos < m["samples"])
                        for pos in range(m["forwards"]))
        measured = m["instructions"]["0"]
        assert predicted == pytest.approx(measured, rel=0.10), shape


def test_calibrate_command_rejects_unknown_names() -> None:
    from click.testing import CliRunner

    from tinytelem.cli.main import cli

    res = CliRunner().invoke(cli, ["firmware", "calibrate", "--family", "z80"])
    assert res.exit_code != 0 and "unknown family" in res.output
    res = CliRunner().invoke(cli, ["firmware", "calibrate", "--shape", "huge"])
    assert res.exit_code != 0 and "unknown shape" in res.output
