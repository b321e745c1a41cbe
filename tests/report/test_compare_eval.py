"""``compare --eval`` takes the output of ``model eval --json`` as it is (docs/reports.md).

Before: compare wanted ``model`` / ``perplexity`` / ``accuracy`` keys, while ``model eval``
writes ``label`` / ``ppl`` / ``top1``, so the documented pipeline failed with "eval results
must be ...".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.analysis.compare import load_eval
from tinytelem.cli.main import cli

pytestmark = pytest.mark.slow


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_compare_takes_model_eval_json(stories260k: Path, tok512: Path, tmp_path: Path) -> None:
    out = _invoke("model", "eval", str(stories260k), "--reference", str(stories260k),
                  "--tokenizer", str(tok512), "--bits", "4,8", "--max-tokens", "48", "--json")
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(out, encoding="utf-8")
    produced = {r["label"]: r for r in json.loads(out)["results"]}
    assert set(produced) == {"stories260K.bin", "4-bit g32", "8-bit g32"}

    items = {e["label"]: e for e in load_eval(eval_path)}
    assert items["4-bit g32"]["model"] == "stories260K" and items["4-bit g32"]["weight_bits"] == 4
    assert items["stories260K.bin"]["weight_bits"] == 32  # the float checkpoint itself

    runs = []
    for bits in ("4", "8"):
        run = tmp_path / f"run{bits}"
        _invoke("profile", "--device", "emu:stm32h7", "--model", str(stories260k),
                "--tokenizer", str(tok512), "--weight-bits", bits, "--tokens", "3",
                "--out", str(run), "--json")
        runs.append(str(run))
    comp = json.loads(_invoke("compare", *runs, "--eval", str(eval_path), "--json"))
    rows = {r["weight_bits"]: r for r in comp["rows"]}
    for bits in (4, 8):
        row, result = rows[bits], produced[f"{bits}-bit g32"]
        assert row["model"] == "stories260K"
        assert row["perplexity"] == pytest.approx(result["ppl"])
        assert row["top1"] == pytest.approx(result["top1"])
        assert row["kld_mean"] == pytest.approx(result["kld_mean"])
        assert row["accuracy"] is None  # model eval measures agreement, not accuracy
    assert comp["best"]["kld_mean"] == rows[8]["label"]
    assert comp["best"]["perplexity"] == rows[8]["label"]
    # The table names the eval metrics too.
    table = _invoke("compare", *runs, "--eval", str(eval_path))
    assert "top-1 agreement" in table and "perplexity" in table
