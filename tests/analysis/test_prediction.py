"""What is predicted is labelled: the summary's prediction block and the printed table."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tests.analysis.test_summary import full_summary
from tinytelem.analysis import render_table
from tinytelem.analysis.prediction import prediction_block
from tinytelem.platforms import get_platform


def _text(summary: dict) -> str:
    console = Console(width=140, record=True)
    console.print(render_table(summary))
    return console.export_text()


def test_twin_summary_says_predicted_with_calibration_and_band() -> None:
    d = full_summary()  # device emu:stm32h7
    pred = d["prediction"]
    assert pred["source"] == "twin"
    assert pred["calibration"].startswith("engine-")
    assert pred["band"] is not None and pred["band"]["low"] <= 1.0 <= pred["band"]["high"]
    json.dumps(d, allow_nan=False)
    text = _text(d)
    assert "predicted by the device twin" in text
    assert "decode (predicted)" in text and "prediction band" in text


def test_qemu_summary_reports_instructions_and_board_prediction() -> None:
    itl = 6.4e-3  # virtual seconds: 6.4 M instructions per token
    pred = prediction_block({"device": "qemu:stm32f405", "platform": "stm32f405"}, itl)
    assert pred is not None and pred["source"] == "qemu"
    assert pred["instructions_per_token"] == 6_400_000
    p = get_platform("stm32f4")
    expected = p.cpu_hz / (6.4e6 * p.cycles_per_instruction * p.efficiency)
    assert pred["board"] == "stm32f4"
    assert pred["board_decode_tok_s"] == pytest.approx(expected)
    d = full_summary()
    d["prediction"] = pred
    text = _text(d)
    assert "decode (virtual clock)" in text
    assert "instructions/token (measured)" in text and "stm32f4 (predicted)" in text


def test_real_boards_have_no_prediction_block() -> None:
    assert prediction_block({"device": "serial:///dev/ttyACM0"}, 0.01) is None
    riscv = prediction_block({"device": "qemu:riscv32"}, 0.01)
    assert riscv is not None and riscv["board"] is None and riscv["board_decode_tok_s"] is None


def test_html_report_says_predicted() -> None:
    from tinytelem.report.html import _prediction_note

    note = _prediction_note(full_summary())
    assert "Predicted by the device twin" in note and "band" in note
    assert _prediction_note({**full_summary(), "prediction": None}) == ""
