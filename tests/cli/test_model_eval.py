"""``tinytelem model validate | eval | optimize`` and the .gguf/.onnx formats of ``model``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["model", *args])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


@pytest.fixture
def model_dir(stories260k: Path, tok512: Path, tmp_path: Path) -> Path:
    shutil.copy(stories260k, tmp_path / "stories260K.bin")
    shutil.copy(tok512, tmp_path / "tok512.bin")
    return tmp_path


def test_validate_verdicts_and_exit_codes(model_dir: Path) -> None:
    m = str(model_dir / "stories260K.bin")
    code, out = _run("validate", m, "--platform", "rp2040", "--context", "512")
    assert code == 1 and "does NOT fit" in out and "--context" in out
    code, out = _run("validate", m, "--platform", "esp32s3", "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["fits"] and rep["type_histogram"] == {"f32": 47}
    code, out = _run("validate", m)
    assert code == 0 and "260,032 parameters" in out


def test_quantize_to_gguf_and_onnx_then_eval(model_dir: Path) -> None:
    m = str(model_dir / "stories260K.bin")
    g, o = model_dir / "s.gguf", model_dir / "s.onnx"
    code, out = _run("quantize", m, "--type", "q8_0", "-o", str(g), "--json")
    assert code == 0 and json.loads(out)["type"] == "q8_0"
    code, out = _run("quantize", m, "--bits", "4", "-o", str(o))
    assert code == 0 and "wrote" in out
    code, out = _run("generate", str(g), "--tokenizer", str(model_dir / "tok512.bin"),
                     "--prompt", "Once upon a time", "--steps", "20")
    assert code == 0 and out.startswith("Once upon a time")
    code, out = _run("eval", str(g), str(o), "--reference", m, "--bits", "8,2",
                     "--max-tokens", "300", "--json")
    assert code == 0
    data = json.loads(out)
    rows = {r["label"]: r for r in data["results"]}
    assert set(rows) == {"s.gguf", "s.onnx", "8-bit g32", "2-bit g32"}
    assert rows["s.gguf"]["kld_mean"] < rows["s.onnx"]["kld_mean"] < rows["2-bit g32"]["kld_mean"]
    assert data["tokens"] == rows["s.gguf"]["tokens"] >= 300
    code, out = _run("eval", "--reference", m, "--bits", "4", "--max-tokens", "100")
    assert code == 0 and "KLD mean" in out and "4-bit g32" in out


def test_eval_tlm_uses_integer_engine(model_dir: Path) -> None:
    m = str(model_dir / "stories260K.bin")
    t = model_dir / "s.tlm"
    assert _run("quantize", m, "--bits", "8", "-o", str(t))[0] == 0
    code, out = _run("eval", str(t), "--reference", m, "--max-tokens", "40", "--json")
    assert code == 0
    row = json.loads(out)["results"][0]
    assert 0 < row["kld_mean"] < 0.05 and row["tokens"] >= 40


def test_optimize_writes_plan(model_dir: Path) -> None:
    plan = model_dir / "plan.json"
    code, out = _run("optimize", str(model_dir / "stories260K.bin"), "--platform", "rp2040",
                     "--max-kld", "0.2", "--calib-tokens", "48", "--groups", "32",
                     "-o", str(plan))
    assert code == 0 and "chosen" in out and "plan written" in out
    data = json.loads(plan.read_text())
    assert data["schema"] == "tinytelem.plan/1" and data["predicted_kld"] <= 0.2


def test_errors_are_clean(model_dir: Path, tmp_path: Path) -> None:
    m = str(model_dir / "stories260K.bin")
    res = CliRunner().invoke(cli, ["model", "eval", "--reference", m])
    assert res.exit_code != 0 and "nothing to evaluate" in str(res.exception)
    res = CliRunner().invoke(cli, ["model", "eval", "--reference", "builtin:0", "--bits", "x"])
    assert "comma-separated" in str(res.exception)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(model_dir / "stories260K.bin", lone / "m.bin")
    res = CliRunner().invoke(cli, ["model", "eval", "--reference", str(lone / "m.bin"),
                                   "--bits", "8"])
    assert "--tokenizer" in str(res.exception)
    res = CliRunner().invoke(cli, ["model", "quantize", m, "--bits", "5", "-o",
                                   str(tmp_path / "x.gguf")])
    assert "no GGUF type" in str(res.exception)


def test_subprocess_smoke(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tinytelem")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tinytelem"]
    out = tmp_path / "b.gguf"
    r = subprocess.run([*cmd, "model", "quantize", "builtin:0", "--type", "q4_0", "-o",
                        str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*cmd, "model", "validate", str(out), "--platform", "stm32f4",
                        "--context", "512"], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "verdict" in r.stdout
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 40)
    r = subprocess.run([*cmd, "model", "validate", str(bad)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
