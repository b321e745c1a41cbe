"""``model optimize -o plan.json`` -> ``model quantize --plan`` -> ``model eval``, and bad plans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.evaluate import eval_texts, tokenize_texts
from tinytelem.models.gguf_io import read_gguf
from tinytelem.models.llama2c import load_checkpoint
from tinytelem.models.optimize import plan_options, trade_off_curve
from tinytelem.models.qtensor import QuantTensor
from tinytelem.models.quant import quantize_model
from tinytelem.models.tlm import read_tlm
from tinytelem.models.tokenizer import load_tokenizer


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["model", *args])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K + tokenizer and a plan optimized over groups 32 and 64 (made once)."""
    from tests.conftest import SHARED_MODELS

    src, tok = SHARED_MODELS / "stories260K.bin", SHARED_MODELS / "tok512.bin"
    if not (src.is_file() and tok.is_file()):
        pytest.skip(f"test model not found in {SHARED_MODELS} (CI provides ../shared/models)")
    d = tmp_path_factory.mktemp("plan")
    shutil.copy(src, d / "stories260K.bin")
    shutil.copy(tok, d / "tok512.bin")
    code, out = _run("optimize", str(d / "stories260K.bin"), "--platform", "rp2040",
                     "--max-kld", "0.05", "--calib-tokens", "48", "--groups", "32,64",
                     "-o", str(d / "plan.json"))
    assert code == 0, out
    return d


def test_plan_quantize_matches_plan_and_evaluates(plan_dir: Path) -> None:
    m, plan_path, out = plan_dir / "stories260K.bin", plan_dir / "plan.json", plan_dir / "p.tlm"
    plan = json.loads(plan_path.read_text())
    assert plan["schema"] == "tinytelem.plan/1"
    groups = plan["per_tensor_group"]
    assert set(groups.values()) <= {32, 64}
    # every quantized matrix has a group size, float ones have none
    assert set(groups) == {n for n, b in plan["per_tensor_bits"].items() if b != 32}
    code, text = _run("quantize", str(m), "--plan", str(plan_path), "-o", str(out), "--json")
    assert code == 0, text
    assert json.loads(text)["bytes"] == out.stat().st_size
    qm = read_tlm(out)
    for name, bits in plan["per_tensor_bits"].items():
        t = qm.tensors[name]
        if bits == 32:
            assert not isinstance(t, QuantTensor) and t.dtype == np.float32
        else:
            assert isinstance(t, QuantTensor), name
            assert (t.bits, t.group_size, t.symmetric) == (bits, groups[name], True), name
    assert qm.weight_bytes() == plan["weight_bytes"]
    code, text = _run("eval", str(out), "--reference", str(m), "--max-tokens", "60", "--json")
    assert code == 0, text
    row = json.loads(text)["results"][0]
    assert row["label"] == "p.tlm" and row["tokens"] >= 60
    assert 0 <= row["kld_mean"] < 0.2


def test_old_plan_without_groups_uses_group_size(plan_dir: Path, tmp_path: Path) -> None:
    plan = json.loads((plan_dir / "plan.json").read_text())
    del plan["per_tensor_group"]
    plan["group_size"] = 64
    old = tmp_path / "old.json"
    old.write_text(json.dumps(plan))
    out = tmp_path / "old.tlm"
    code, text = _run("quantize", str(plan_dir / "stories260K.bin"), "--plan", str(old),
                      "-o", str(out))
    assert code == 0, text
    quantized = [t for _, t in read_tlm(out) if isinstance(t, QuantTensor)]
    assert quantized and {t.group_size for t in quantized} == {64}


def test_plan_to_gguf_embeds_tokenizer_and_types(plan_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.gguf"
    code, text = _run("quantize", str(plan_dir / "stories260K.bin"), "--plan",
                      str(plan_dir / "plan.json"), "-o", str(out), "--json")
    assert code == 0, text
    assert json.loads(text)["tokenizer"] is True
    g = read_gguf(out)
    assert g.tokenizer is not None and g.tokenizer.vocab_size == 512
    # a model quantized from a tokenizer-less builtin gets none
    bare = tmp_path / "b.gguf"
    code, text = _run("quantize", "builtin:1", "--type", "q8_0", "-o", str(bare), "--json")
    assert code == 0 and json.loads(text)["tokenizer"] is False
    assert read_gguf(bare).tokenizer is None


@pytest.mark.parametrize(("content", "match"), [
    ("not json", "not a JSON plan"),
    ('{"schema": "tinytelem.plan/9"}', "schema 'tinytelem.plan/9'"),
    ('["a"]', "schema None"),
    ('{"schema": "tinytelem.plan/1"}', "per_tensor_bits"),
    ('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": "4"}}', "per_tensor_bits"),
    ('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": 4}}', "group_size"),
    ('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": 4}, "group_size": 32, '
     '"symmetric": 1}', "symmetric"),
    ('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": 4}, "group_size": 32, '
     '"method": "gptq"}', "method"),
    ('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": 4}, "group_size": 32, '
     '"per_tensor_group": [32]}', "per_tensor_group"),
])
def test_bad_plans_are_config_errors(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "plan.json"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match):
        _run("quantize", "builtin:0", "--plan", str(p), "-o", str(tmp_path / "x.tlm"))


def test_plan_option_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read plan"):
        _run("quantize", "builtin:0", "--plan", str(tmp_path / "none.json"),
             "-o", str(tmp_path / "x.tlm"))
    p = tmp_path / "plan.json"
    p.write_text('{"schema": "tinytelem.plan/1", "per_tensor_bits": {"wq": 4}, '
                 '"group_size": 32, "per_tensor_group": {"wq": 20}}')
    with pytest.raises(ConfigError, match="exactly one"):
        _run("quantize", "builtin:0", "--plan", str(p), "--bits", "4",
             "-o", str(tmp_path / "x.tlm"))
    with pytest.raises(ModelError, match="group size wq=20"):
        _run("quantize", "builtin:0", "--plan", str(p), "-o", str(tmp_path / "x.tlm"))
    res = CliRunner().invoke(cli, ["model", "quantize", "builtin:0", "--plan", str(p),
                                   "-o", str(tmp_path / "x.tlm")])
    assert res.exit_code != 0


def test_curve_picks_group_per_tensor(stories260k: Path, tok512: Path) -> None:
    m = load_checkpoint(stories260k)
    seqs = tokenize_texts(load_tokenizer(tok512), eval_texts(), 512, max_tokens=32)
    opts = plan_options(m, seqs, (32, 64), bits=(8, 4))
    wq = opts["layers.0.wq"]
    assert set(wq) == {(32, 0), (8, 32), (8, 64), (4, 32), (4, 64)}
    # bigger groups: fewer scales, fewer bytes
    assert wq[(4, 64)][0] < wq[(4, 32)][0] < wq[(8, 64)][0]
    curve = trade_off_curve(opts, fixed_bytes=0)
    first, last = curve[0], curve[-1]
    assert set(first.bits.values()) <= {8, 32}
    assert last.weight_bytes < first.weight_bytes
    assert set(last.groups.values()) == {64}  # the smallest mix takes the biggest groups
    # predicted sizes are exactly what quantize_model builds from a point
    mid = curve[len(curve) // 2]
    qm = quantize_model(m, 8, 32, per_tensor_bits=mid.bits, per_tensor_group=mid.groups)
    norms_and_rope = qm.weight_bytes() - sum(
        t.nbytes() if isinstance(t, QuantTensor) else t.nbytes
        for n, t in qm.tensors.items() if n in mid.bits)
    assert qm.weight_bytes() - norms_and_rope == mid.weight_bytes
