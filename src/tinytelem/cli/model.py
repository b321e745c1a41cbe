"""``tinytelem model``: quantize, convert, generate, inspect; validate, eval and optimize are
added from their own modules (:mod:`tinytelem.cli.model_validate`, :mod:`~tinytelem.cli.model_eval`,
:mod:`~tinytelem.cli.model_optimize`).

Formats are not decided here: every MODEL is opened with
:func:`tinytelem.models.formats.open_model`, and ``quantize -o`` picks its writer from
:data:`tinytelem.models.formats.WRITERS` (named ``--type`` values from ``QUANT_TYPES``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinytelem.cli.model_eval import eval_cmd
from tinytelem.cli.model_optimize import optimize
from tinytelem.cli.model_validate import validate
from tinytelem.errors import ConfigError

if TYPE_CHECKING:
    from tinytelem.models.llama2c import LlamaModel
    from tinytelem.models.quant import QuantizedModel

    AnyModel = LlamaModel | QuantizedModel

__all__ = ["PLAN_SCHEMAS", "QuantPlan", "describe", "model", "read_plan"]


PLAN_SCHEMAS = ("tinytelem.plan/1",)
"""Plan schemas ``quantize --plan`` reads (written by ``model optimize -o``)."""


@dataclass(frozen=True)
class QuantPlan:
    """The quantization part of a ``model optimize`` plan file."""

    group_size: int
    symmetric: bool
    method: str
    per_tensor_bits: dict[str, int]
    per_tensor_group: dict[str, int] | None


def _int_map(plan: dict[str, Any], key: str, path: Path) -> dict[str, int] | None:
    value = plan.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()):
        raise ConfigError(f"{path}: plan field {key!r} must map tensor names to integers")
    return dict(value)


def read_plan(path: Path) -> QuantPlan:
    """Read and check a plan file written by ``tinytelem model optimize -o``.

    Raises:
        ConfigError: Unreadable file, not JSON, unknown schema, or a missing/ill-typed field;
            the message names the field.
    """
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a JSON plan ({exc}); write one with "
                          "`tinytelem model optimize MODEL --platform P -o plan.json`") from exc
    if not isinstance(plan, dict) or plan.get("schema") not in PLAN_SCHEMAS:
        schema = plan.get("schema") if isinstance(plan, dict) else None
        raise ConfigError(f"{path}: plan schema {schema!r} is not one of {list(PLAN_SCHEMAS)}; "
                          "write it with `tinytelem model optimize ... -o plan.json`")
    bits = _int_map(plan, "per_tensor_bits", path)
    if not bits:
        raise ConfigError(f"{path}: plan has no 'per_tensor_bits'; re-run model optimize")
    group, sym, method = plan.get("group_size"), plan.get("symmetric", True), \
        plan.get("method", "rtn")
    if not isinstance(group, int) or isinstance(group, bool):
        raise ConfigError(f"{path}: plan field 'group_size' must be an integer, got {group!r}")
    if not isinstance(sym, bool):
        raise ConfigError(f"{path}: plan field 'symmetric' must be true or false, got {sym!r}")
    if method not in ("rtn", "search"):
        raise ConfigError(f"{path}: plan field 'method' must be 'rtn' or 'search', "
                          f"got {method!r}")
    return QuantPlan(group, sym, method, bits, _int_map(plan, "per_tensor_group", path))


@click.group("model")
def model() -> None:
    """Quantize, run, inspect (and, with the analysis commands, validate/evaluate) models.

    MODEL arguments accept llama2.c checkpoints (.bin), .tlm, GGUF (.gguf) and ONNX (.onnx)
    files, Hugging Face LlamaForCausalLM folders (config.json + *.safetensors) and
    builtin[:SHAPE][:SEED] (a random model; stories260K's shape by default).
    """


@model.command("quantize")
@click.argument("source", metavar="IN")
@click.option("--bits", type=int, help="Weight bits: 2, 3, 4 or 8 (embedding stays 8-bit).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A plan from `model optimize -o plan.json`: per-tensor bits and group "
              "sizes (instead of --bits/--group/--asym/--method).")
@click.option("--type", "qtype", help="A named quantization type (see --help of the "
              "format, e.g. q4_0 for .gguf); instead of --bits.")
@click.option("--group", "group_size", type=int, default=32, show_default=True,
              help="Group size along the input dimension (multiple of 8, 16..256).")
@click.option("--asym", is_flag=True, help="Asymmetric levels (scale + zero point).")
@click.option("--method", type=click.Choice(["rtn", "search"]), default="rtn",
              show_default=True, help="Round-to-nearest or error-minimising scale search.")
@click.option("--align", "alignment", type=int, default=16, show_default=True,
              help="Tensor alignment in the image: 4, 8, 16, 32 (ESP32-S3) or 64.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file; its extension picks the format.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def quantize(source: str, bits: int | None, plan_path: Path | None, qtype: str | None,
             group_size: int, asym: bool, method: str, alignment: int, out: Path,
             as_json: bool) -> None:
    """Quantize IN group-wise and write OUT (.tlm, .c, or a registered format)."""
    from rich.progress import Progress

    from tinytelem.models.formats import QUANT_TYPES, WRITERS, open_model
    from tinytelem.models.writers import QuantizeRequest

    writer = WRITERS.get(out.suffix.lower())
    if writer is None:
        known = ", ".join(sorted(WRITERS))
        raise ConfigError(f"{out}: cannot write {out.suffix!r} files; use one of {known}")
    if sum(x is not None for x in (bits, qtype, plan_path)) != 1:
        raise ConfigError("give exactly one of --bits B, --type NAME or --plan plan.json")
    plan = read_plan(plan_path) if plan_path is not None else None
    if plan is not None:
        # Every matrix is named in per_tensor_bits; 8 is only the fallback quantize_model needs.
        bits, group_size, asym, method = 8, plan.group_size, not plan.symmetric, plan.method
    if qtype is not None:
        entry = QUANT_TYPES.get(qtype.lower())
        if entry is None:
            known = ", ".join(sorted(QUANT_TYPES)) or "none installed"
            raise ConfigError(f"unknown --type {qtype!r}; known types: {known}")
        if entry[1] and out.suffix.lower() not in entry[1]:
            raise ConfigError(f"--type {qtype} is written to {', '.join(entry[1])} files only")
    lm = open_model(source)
    src = lm.model
    out.parent.mkdir(parents=True, exist_ok=True)
    total = 2 + src.config.n_layers * 7 + (0 if src.config.shared_classifier else 1)
    started = time.perf_counter()
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("quantizing", total=total)

        def advance(name: str) -> None:
            bar.update(task, advance=1, description=f"quantizing {name}")

        req = QuantizeRequest(
            src, bits, group_size, not asym, method, qtype.lower() if qtype else None,
            alignment, advance, source_path=None if source.startswith("builtin") else source,
            per_tensor_bits=plan.per_tensor_bits if plan else None,
            per_tensor_group=plan.per_tensor_group if plan else None, tokenizer=lm.tokenizer)
        facts = writer(req, out)
    facts["seconds"] = round(time.perf_counter() - started, 3)
    _print_facts(facts, as_json)


def _print_facts(facts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    extra = f", header {facts['header']}" if "header" in facts else ""
    bpw = facts.get("bits_per_weight")
    files = f" ({', '.join(facts['files'])})" if "files" in facts else ""
    click.echo(f"wrote {facts['output']}{files}{extra}: {facts.get('bytes', '?')} bytes"
               + (f", {bpw} bits/weight" if bpw is not None else ""))
    if "note" in facts:
        click.echo(f"note: {facts['note']}")


@model.command("convert")
@click.argument("source", metavar="IN")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output; its extension picks the format (.gguf, .onnx, .tlm, .c); no "
              "extension (or an existing folder) writes a Hugging Face checkpoint folder.")
@click.option("--type", "qtype", type=click.Choice(["f32", "f16"]), default="f32",
              show_default=True, help="Float type (f16 for .gguf only).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tokenizer to store when IN has none (llama2.c .bin, tokenizer.json or "
              "tokenizer.model).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def convert(source: str, out: Path, qtype: str, tokenizer: Path | None, as_json: bool) -> None:
    """Convert IN to another format without quantizing (float weights, IN's tokenizer kept)."""
    from tinytelem.models.formats import WRITERS, open_model, resolve_tokenizer
    from tinytelem.models.writers import float_request

    key = "" if out.is_dir() or not out.suffix else out.suffix.lower()
    writer = WRITERS.get(key)
    if writer is None:
        known = ", ".join(sorted(k for k in WRITERS if k))
        raise ConfigError(f"{out}: cannot write {out.suffix!r} files; use one of {known}, or "
                          "a name without extension for a Hugging Face folder")
    lm = open_model(source)
    tok = resolve_tokenizer(lm, tokenizer) if tokenizer or lm.tokenizer else None
    req = float_request(lm.model, out if key else out.with_suffix(""), qtype, tokenizer=tok,
                        source_path=None if lm.fmt == "builtin" else source)
    if key:
        out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    facts = writer(req, out)
    facts["seconds"] = round(time.perf_counter() - started, 3)
    _print_facts(facts, as_json)


def _steps(m: AnyModel, ids: list[int], steps: int, temperature: float, topp: float,
           seed: int) -> Iterator[Any]:
    from tinytelem.models.quant import QuantizedModel

    if isinstance(m, QuantizedModel):
        from tinytelem.models import qinfer

        return qinfer.generate_steps(m, ids, steps, temperature=temperature, topp=topp,
                                     seed=seed)
    from tinytelem.models import reference

    return reference.generate_steps(m, ids, steps, temperature=temperature, topp=topp,
                                    seed=seed)


@model.command("generate")
@click.argument("model_spec", metavar="MODEL")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer .bin, tokenizer.json or tokenizer.model (default: the "
              "one stored in MODEL, else tok<vocab>.bin "
              "or tokenizer.bin beside it).")
@click.option("--prompt", default="", help="Prompt text (BOS is prepended).")
@click.option("--steps", type=int, default=64, show_default=True,
              help="Positions including the prompt, like run.c's -n.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--topp", type=float, default=0.9, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Add token ids and timing.")
def generate(model_spec: str, tokenizer: Path | None, prompt: str, steps: int,
             temperature: float, topp: float, seed: int, as_json: bool) -> None:
    """Generate text: float reference for llama2.c files, the integer engine for .tlm."""
    from tinytelem.models.formats import open_model, resolve_tokenizer
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tokenizer import BOS

    lm = open_model(model_spec)
    m = lm.runnable
    codec = resolve_tokenizer(lm, tokenizer)
    prompt_ids = codec.encode(prompt, bos=True)
    ids = list(prompt_ids[:1])
    started = time.perf_counter()
    forwards = 0
    for step in _steps(m, prompt_ids, steps, temperature, topp, seed):
        forwards += 1
        if step.next == BOS:
            break
        ids.append(step.next)
    elapsed = time.perf_counter() - started
    text = codec.decode_all(ids)
    if not as_json:
        click.echo(text)
        return
    click.echo(json.dumps({
        "model": model_spec,
        "engine": "integer" if isinstance(m, QuantizedModel) else "float32-reference",
        "text": text, "prompt_ids": prompt_ids, "ids": ids, "forward_passes": forwards,
        "seconds": round(elapsed, 6),
        "ms_per_token": round(1000 * elapsed / max(1, forwards), 4),
    }, indent=2))


def describe(m: AnyModel, path: Path | None) -> dict[str, Any]:
    """The facts ``inspect`` shows (also useful to other model commands)."""
    from tinytelem.models.qtensor import QuantTensor
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tlm import type_code, type_name

    c = m.config
    hist: dict[str, dict[str, int]] = {}
    if isinstance(m, QuantizedModel):
        for _name, t in m:
            key = type_name(type_code(t))
            entry = hist.setdefault(key, {"tensors": 0, "elements": 0})
            entry["tensors"] += 1
            entry["elements"] += t.shape[0] * t.shape[1] if isinstance(t, QuantTensor) \
                else int(t.size)
        params, bpw = m.param_count(), m.bits_per_weight()
        weight_bytes = m.weight_bytes()
    else:
        arrays = [a for k, a in vars(m.weights).items()
                  if k != "wcls" or not c.shared_classifier]
        params = sum(int(a.size) for a in arrays)
        hist["f32"] = {"tensors": len(arrays), "elements": params}
        bpw, weight_bytes = 32.0, 4 * params
    return {
        "model": str(path) if path else m.name, "name": m.name,
        "format": path.suffix.lstrip(".") if path else "builtin",
        "file_bytes": path.stat().st_size if path else None,
        "config": {"dim": c.dim, "hidden_dim": c.hidden_dim, "n_layers": c.n_layers,
                   "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
                   "vocab_size": c.vocab_size, "seq_len": c.seq_len,
                   "shared_classifier": c.shared_classifier},
        "params": params, "weight_bytes": weight_bytes, "bits_per_weight": round(bpw, 3),
        "types": hist,
    }


@model.command("inspect")
@click.argument("model_spec", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model_spec: str, as_json: bool) -> None:
    """Show config, parameter count, per-type tensor histogram, bits/weight and file size."""
    from tinytelem.models.formats import open_model

    lm = open_model(model_spec)
    path = None if lm.fmt == "builtin" else Path(model_spec)
    facts = describe(lm.runnable, None if lm.files else path)
    if lm.files and path is not None:  # a folder: say which files were read
        facts.update(model=str(path), format=lm.fmt, files=lm.files,
                     file_bytes=sum((path / f).stat().st_size for f in lm.files))
    tok = lm.tokenizer
    facts["tokenizer"] = None if tok is None else getattr(tok, "source", type(tok).__name__)
    facts["notes"] = lm.notes
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = ", ".join(f"{k}={v}" for k, v in facts["config"].items())
    console.print(f"[bold]{facts['model']}[/bold] ({facts['format']}"
                  + (f", {facts['file_bytes']:,} bytes" if facts["file_bytes"] else "") + ")")
    console.print(f"config: {cfg}")
    if "files" in facts:
        console.print(f"files: {', '.join(facts['files'])}")
    console.print(f"tokenizer: {facts['tokenizer'] or 'none (pass --tokenizer)'}")
    for note in facts["notes"]:
        console.print(f"note: {note}")
    console.print(f"params: {facts['params']:,}   weights: {facts['weight_bytes']:,} bytes   "
                  f"bits/weight: {facts['bits_per_weight']}")
    table = Table("type", "tensors", "elements")
    for key, entry in sorted(facts["types"].items()):
        table.add_row(key, str(entry["tensors"]), f"{entry['elements']:,}")
    console.print(table)


model.add_command(validate)
model.add_command(eval_cmd)
model.add_command(optimize)
