"""``tinytelem model quantize / generate / inspect`` through click, plus a subprocess smoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError, ModelError
from tinytelem.models import formats
from tinytelem.models.tlm import read_tlm
from tinytelem.models.writers import QuantizeRequest


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_quantize_then_generate_and_inspect(tmp_path: Path) -> None:
    out = tmp_path / "b.tlm"
    facts = json.loads(_ok(["model", "quantize", "builtin:3", "--bits", "3", "--asym",
                            "--method", "search", "--group", "16", "--align", "32",
                            "-o", str(out), "--json"]))
    assert facts["bytes"] == out.stat().st_size and facts["format"] == "tlm"
    qm = read_tlm(out)
    assert qm.metadata["method"] == "search" and qm.metadata["symmetric"] is False
    gen = json.loads(_ok(["model", "generate", str(out), "--prompt", "hi", "--steps", "12",
                          "--json"]))
    assert gen["engine"] == "integer" and gen["prompt_ids"] == [1, ord("h") + 3, ord("i") + 3]
    assert len(gen["ids"]) == 13 and gen["ms_per_token"] > 0
    again = json.loads(_ok(["model", "generate", str(out), "--prompt", "hi", "--steps", "12",
                            "--json"]))
    assert again["ids"] == gen["ids"]
    info = json.loads(_ok(["model", "inspect", str(out), "--json"]))
    assert info["types"]["q3_asym"]["tensors"] == 35 and info["types"]["q8_asym"]["tensors"] == 1
    assert info["file_bytes"] == out.stat().st_size and info["params"] == qm.param_count()
    text = _ok(["model", "inspect", str(out)])
    assert "q3_asym" in text and "bits/weight" in text
    assert "f32" in _ok(["model", "inspect", "builtin"])
    c_out = tmp_path / "sub" / "m.c"
    assert "header" in _ok(["model", "quantize", "builtin", "--bits", "4", "-o", str(c_out)])
    assert c_out.is_file() and c_out.with_suffix(".h").is_file()


def test_generate_reproduces_llama2c_and_runs_the_integer_path(
        tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    text = _ok(["model", "generate", str(stories260k), "--prompt", "Once upon a time",
                "--steps", "64"])
    assert text.startswith("Once upon a time, there was a little girl named Lily.")
    out = tmp_path / "s8.tlm"
    _ok(["model", "quantize", str(stories260k), "--bits", "8", "--group", "64", "-o", str(out)])
    q = json.loads(_ok(["model", "generate", str(out), "--tokenizer", str(tok512), "--prompt",
                        "Once upon a time", "--steps", "24", "--json"]))
    assert q["text"].startswith("Once upon a time, there was a little girl named Lily.")


def test_errors_are_typed(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["model", "quantize", "builtin", "--bits", "4", "-o", str(tmp_path / "x.xyz")],
         ConfigError, "cannot write '.xyz'"),
        (["model", "quantize", "builtin", "-o", str(tmp_path / "x.tlm")], ConfigError,
         "exactly one of"),
        (["model", "quantize", "builtin", "--type", "q9_9", "-o", str(tmp_path / "x.tlm")],
         ConfigError, "unknown --type"),
        (["model", "quantize", "builtin", "--bits", "4", "--group", "12",
          "-o", str(tmp_path / "x.tlm")], ModelError, "group size 12"),
        (["model", "inspect", str(tmp_path / "nope.bin")], ModelError, "does not exist"),
        (["model", "inspect", str(tmp_path / "model.xyz")], ConfigError, "unknown model format"),
        (["model", "inspect", "builtin:x"], ModelError, "builtin:SEED"),
    ]
    for args, kind, needle in cases:
        result = runner.invoke(cli, args)
        assert isinstance(result.exception, kind), (args, result.output)
        assert needle in str(result.exception)


def test_format_registry_accepts_new_writers(tmp_path: Path) -> None:
    """A new output format and --type plug into the registry without touching the CLI."""
    seen: dict[str, object] = {}

    def writer(req: QuantizeRequest, out: Path) -> dict[str, object]:
        seen["qtype"] = req.qtype
        with pytest.raises(ConfigError, match="--bits B"):
            req.quantize()
        out.write_bytes(b"x")
        return {"output": str(out), "bytes": 1}

    formats.register_writer(".fake", writer)
    formats.register_quant_type("f_0", "a fake type", (".fake",))
    try:
        _ok(["model", "quantize", "builtin", "--type", "F_0", "-o", str(tmp_path / "m.fake")])
        assert seen["qtype"] == "f_0"
        result = CliRunner().invoke(cli, ["model", "quantize", "builtin", "--type", "f_0",
                                          "-o", str(tmp_path / "m.tlm")])
        assert "written to .fake files only" in str(result.exception)
    finally:
        del formats.WRITERS[".fake"]
        del formats.QUANT_TYPES["f_0"]


def test_subprocess_error_exit_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tlm"
    bad.write_bytes(b"TLM1" + b"\0" * 300)
    done = subprocess.run(
        [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "model",
         "inspect", str(bad)], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "error:" in done.stderr and "at file offset" in done.stderr
    assert "Traceback" not in done.stderr


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and isinstance(result.exception, (ModelError, ConfigError))
    msg = str(result.exception)
    assert "\n" not in msg
    return msg


def test_convert_to_hf_folder_and_back(stories260k: Path, tok512: Path, tmp_path: Path,
                                       wide: None) -> None:
    pytest.importorskip("safetensors", reason="the hf extra is not installed")
    (tmp_path / "stories260K.bin").symlink_to(stories260k)
    (tmp_path / "tok512.bin").symlink_to(tok512)
    folder = tmp_path / "hf"
    facts = json.loads(_ok(["model", "convert", str(tmp_path / "stories260K.bin"), "-o",
                            str(folder), "--json"]))
    assert facts["format"] == "hf" and facts["tokenizer"] is True
    seen = json.loads(_ok(["model", "inspect", str(folder), "--json"]))
    assert seen["format"] == "hf" and seen["files"] == ["config.json", "model.safetensors",
                                                        "tokenizer.json"]
    assert seen["tokenizer"].endswith("tokenizer.json") and seen["params"] == 260032
    gen = ["generate", "--prompt", "Once upon a time", "--steps", "60", "--json"]
    ref = json.loads(_ok(["model", gen[0], str(tmp_path / "stories260K.bin"), *gen[1:]]))
    got = json.loads(_ok(["model", gen[0], str(folder), *gen[1:]]))
    assert got["ids"] == ref["ids"] and got["text"] == ref["text"]
    # Float exports go through the same writers as quantize: f16 GGUF, float ONNX, float .tlm.
    for out, extra in (("m.gguf", ["--type", "f16"]), ("m.onnx", []), ("m.tlm", [])):
        facts = json.loads(_ok(["model", "convert", str(folder), "-o", str(tmp_path / out),
                                "--json", *extra]))
        if out.endswith(".gguf"):  # the folder's tokenizer.json, as pieces and scores
            assert facts["tokenizer"] is True and facts["types"] == ["f16", "f32"]
        again = json.loads(_ok(["model", gen[0], str(tmp_path / out), *gen[1:]]))
        assert again["ids"] == ref["ids"], out
    assert "written to .gguf files only" in _one_line_error(
        ["model", "convert", str(folder), "-o", str(tmp_path / "x.onnx"), "--type", "f16"])


def test_bad_hf_folders_give_one_line_naming_the_problem(tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="the hf extra is not installed")
    folder = tmp_path / "hf"
    _ok(["model", "convert", "builtin:2", "-o", str(folder)])
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"\xff" * 8 + good[8:])
    msg = _one_line_error(["model", "inspect", str(folder)])
    assert "damaged safetensors file" in msg and "model.safetensors" in msg
    weights.write_bytes(good)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"],
                                                    "model_type": "gpt2"}))
    msg = _one_line_error(["model", "generate", str(folder), "--prompt", "hi"])
    assert "GPT2LMHeadModel is not supported" in msg and "LlamaForCausalLM" in msg
    (folder / "config.json").write_text(json.dumps(cfg))
    _ok(["model", "convert", str(tmp_path / "hf"), "-o", str(tmp_path / "plain")])
    assert not (tmp_path / "plain" / "tokenizer.json").exists()  # bytes are not a vocabulary


def test_tokenizer_with_the_wrong_vocabulary_is_one_line(stories260k: Path, tok512: Path,
                                                         tmp_path: Path) -> None:
    pytest.importorskip("tokenizers", reason="the hf extra is not installed")
    from tinytelem.models.hf_tokenizer import tokenizer_json
    from tinytelem.models.tokenizer import Tokenizer, load_tokenizer

    (tmp_path / "m.bin").symlink_to(stories260k)
    (tmp_path / "tok512.bin").symlink_to(tok512)
    folder = tmp_path / "hf"
    _ok(["model", "convert", str(tmp_path / "m.bin"), "-o", str(folder)])
    full = load_tokenizer(tok512)
    short = Tokenizer(full.pieces[:300], full.scores[:300], full.max_token_length)
    (folder / "tokenizer.json").write_text(tokenizer_json(short))
    msg = _one_line_error(["model", "inspect", str(folder)])
    assert "tokenizer.json: tokenizer has 300 tokens but the model's vocabulary is 512" in msg
    msg = _one_line_error(["model", "generate", str(tmp_path / "m.bin"), "--tokenizer",
                           str(folder / "tokenizer.json")])
    assert "tokenizer.json: tokenizer has 300 tokens but the model's vocabulary is 512" in msg
