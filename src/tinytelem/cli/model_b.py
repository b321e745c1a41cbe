"""``tinytelem model validate | eval | optimize`` and the GGUF / ONNX formats of ``model``.

Imported by :mod:`tinytelem.cli.model` at its end (its extension hook): adds the commands to
the ``model`` group and registers ``.gguf`` / ``.onnx`` for reading and for ``quantize -o``,
plus the GGUF ``--type`` names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinytelem.cli.model import (
    QuantizeRequest,
    model,
    register_input_format,
    register_output_format,
    register_quant_type,
)
from tinytelem.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from tinytelem.models.llama2c import LlamaModel
    from tinytelem.models.tokenizer import TextCodec
    from tinytelem.models.validate import LoadedModel

__all__ = ["eval_cmd", "optimize", "validate"]

_BITS_TO_GGUF = {8: "q8_0", 4: "q4_0", 3: "q3_k", 2: "q2_k"}


def _read_gguf(path: Path) -> LlamaModel:
    from tinytelem.models.gguf_io import read_gguf

    return read_gguf(path).model


def _read_onnx(path: Path) -> LlamaModel:
    from tinytelem.models.onnx_io import read_onnx

    return read_onnx(path).model


def _source_tokenizer(req: QuantizeRequest) -> Any:
    """The llama2.c tokenizer of IN (inside a GGUF, or tok<vocab>.bin / tokenizer.bin beside
    it), so the GGUF we write is self-contained for llama.cpp; None when there is none."""
    from tinytelem.models.tokenizer import Tokenizer

    if req.source_path is None:
        return None
    from tinytelem.models.validate import open_model

    path = Path(req.source_path)
    if path.suffix.lower() == ".gguf":
        tok = open_model(path).tokenizer
    else:
        from tinytelem.models.tokenizer import load_tokenizer

        vocab = req.source.config.vocab_size
        cands = (path.with_name(f"tok{vocab}.bin"), path.with_name("tokenizer.bin"))
        found = next((c for c in cands if c.is_file() and c != path), None)
        tok = load_tokenizer(found, vocab) if found is not None else None
    return tok if isinstance(tok, Tokenizer) else None


def _write_gguf(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    from tinytelem.models.gguf_io import write_gguf

    qtype = req.qtype or _BITS_TO_GGUF.get(req.bits or 0)
    if qtype is None:
        raise ConfigError(f"--bits {req.bits} has no GGUF type; use --type q4_0, q8_0, q2_k, "
                          "q3_k, q4_k, f16 or f32")
    types = None
    if req.per_tensor_bits:  # a plan: nearest GGUF type per tensor (32 = f32)
        table = {**_BITS_TO_GGUF, 32: "f32"}
        types = {name: table[b] for name, b in req.per_tensor_bits.items() if b in table}
    tok = _source_tokenizer(req)
    infos = write_gguf(req.source, out, qtype, tokenizer=tok, tensor_types=types)
    for info in infos:
        req.progress(info.name)
    nbytes = sum(i.nbytes for i in infos)
    numel = sum(i.numel for i in infos)
    return {"output": str(out), "format": "gguf", "type": qtype, "bytes": out.stat().st_size,
            "bits_per_weight": round(8 * nbytes / max(1, numel), 3),
            "types": sorted({i.qtype for i in infos}), "tokenizer": tok is not None}


def _write_onnx(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    from tinytelem.models.onnx_io import write_onnx

    if req.bits is None:
        raise ConfigError("ONNX output takes --bits 2, 3, 4 or 8 (blocked DequantizeLinear)")
    qm = req.quantize()
    infos = write_onnx(qm, out, req.bits, req.group_size, symmetric=req.symmetric)
    return {"output": str(out), "format": "onnx", "bytes": out.stat().st_size,
            "bits_per_weight": round(qm.bits_per_weight(), 3),
            "types": sorted({i.qtype for i in infos})}


register_input_format(".gguf", _read_gguf)
register_input_format(".onnx", _read_onnx)
register_output_format(".gguf", _write_gguf)
register_output_format(".onnx", _write_onnx)
for _name, _help in (("q8_0", "GGUF Q8_0: 8-bit, 32-weight blocks, f16 scale (8.5 bits/w)"),
                     ("q4_0", "GGUF Q4_0: 4-bit, 32-weight blocks, f16 scale (4.5 bits/w)"),
                     ("q4_k", "GGUF Q4_K: 4-bit super-blocks of 256 (4.5 bits/w)"),
                     ("q3_k", "GGUF Q3_K: 3-bit super-blocks of 256 (3.44 bits/w)"),
                     ("q2_k", "GGUF Q2_K: 2-bit super-blocks of 256 (2.63 bits/w)"),
                     ("f16", "GGUF F16 matrices"), ("f32", "GGUF F32 (lossless)")):
    register_quant_type(_name, _help, (".gguf",))


def _open(spec: str) -> LoadedModel:
    from tinytelem.models.validate import open_model

    return open_model(spec)


def _codec(lm: LoadedModel, explicit: Path | None, others: list[LoadedModel]) -> TextCodec:
    from tinytelem.models.tokenizer import load_tokenizer

    vocab = lm.model.config.vocab_size
    if explicit is not None:
        return load_tokenizer(explicit, vocab)
    for cand in [lm, *others]:
        if cand.tokenizer is not None:
            return cand.tokenizer
    raise ConfigError(f"no tokenizer for {lm.path}: pass --tokenizer tok{vocab}.bin (or put "
                      "tokenizer.bin / tok<vocab>.bin beside the model)")


def _emit(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2))


@model.command("validate")
@click.argument("model_spec", metavar="MODEL")
@click.option("--platform", help="Check flash and RAM against this platform (see "
              "`tinytelem platforms list`).")
@click.option("--context", type=int, help="Context length to budget the KV cache for "
              "[default: the model's seq_len].")
@click.option("--kv-bits", type=click.Choice(["32", "16", "8"]), default="32",
              show_default=True, help="KV-cache element width.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(model_spec: str, platform: str | None, context: int | None, kv_bits: str,
             as_json: bool) -> None:
    """Check MODEL's structure and types, and whether it fits a platform (exit 1 if not)."""
    from tinytelem.models.validate import render_report, validate_model

    rep = validate_model(_open(model_spec), platform, context, int(kv_bits))
    if as_json:
        _emit(rep.to_dict())
    else:
        click.echo(render_report(rep))
    if not rep.fits:
        sys.exit(1)


def _parse_ints(text: str | None, what: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from exc


@model.command("eval")
@click.argument("model_specs", metavar="[MODEL]...", nargs=-1)
@click.option("--reference", "reference_spec", required=True,
              help="The float model whose predictions count as truth.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer (default: beside the model, or inside a GGUF).")
@click.option("--text", "text_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Your own evaluation text (paragraphs = sequences) "
              "instead of the shipped stories.")
@click.option("--bits", "bits_text", help="Also quantize the reference on the fly at these "
              "widths, e.g. 8,4,3,2 (one row each).")
@click.option("--group", "group_size", type=int, default=32, show_default=True,
              help="Group size for --bits.")
@click.option("--method", type=click.Choice(["rtn", "search"]), default="rtn",
              show_default=True, help="Quantizer for --bits.")
@click.option("--max-tokens", type=int, help="Score at most this many tokens.")
@click.option("--engine", type=click.Choice(["auto", "int", "float"]), default="auto",
              show_default=True, help="Quantized models: integer engine (exactly what the "
              "firmware computes, ~10x slower) or dequantized float weights; auto = int for "
              ".tlm files, float for --bits.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results.")
def eval_cmd(model_specs: tuple[str, ...], reference_spec: str, tokenizer: Path | None,
             text_path: Path | None, bits_text: str | None, group_size: int, method: str,
             max_tokens: int | None, engine: str, as_json: bool) -> None:
    """Perplexity, KL divergence, top-1 agreement and RMS Δp of MODEL(s) vs --reference."""
    from rich.progress import Progress

    from tinytelem.models.evaluate import (
        eval_texts,
        evaluate,
        render_eval_table,
        tokenize_texts,
    )

    ref = _open(reference_spec)
    cands_lm = [_open(s) for s in model_specs]
    bits = _parse_ints(bits_text, "--bits")
    if not cands_lm and not bits:
        raise ConfigError("nothing to evaluate: give MODEL files and/or --bits 8,4,3,2")
    codec = _codec(ref, tokenizer, cands_lm)
    seqs = tokenize_texts(codec, eval_texts(text_path), ref.model.config.seq_len, max_tokens)
    if not seqs:
        raise ModelError("the evaluation text gives no sequence of 2 or more tokens")
    cfg = ref.model.config
    candidates: list[tuple[str, Any]] = []
    sizes: dict[str, tuple[float, int]] = {}
    for lm in cands_lm:
        if lm.model.config.vocab_size != cfg.vocab_size:
            raise ModelError(f"{lm.path} has vocab {lm.model.config.vocab_size}, the reference "
                             f"{cfg.vocab_size}; they cannot be compared")
        label = Path(lm.path).name
        runner: Any = lm.model
        if lm.qmodel is not None and engine in ("int", "auto"):
            from tinytelem.models.qinfer import QTransformer

            runner = QTransformer(lm.qmodel)
        candidates.append((label, runner))
        numel = sum(t.numel for t in lm.tensors)
        sizes[label] = (8 * lm.weight_bytes / max(1, numel), lm.weight_bytes)
    from tinytelem.models.quant import dequantize_model, quantize_model

    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("evaluating", total=len(bits) + len(candidates))
        for b in bits:
            bar.update(task, description=f"quantizing to {b} bits")
            qm = quantize_model(ref.model, b, group_size, method="search" if method == "search"
                                else "rtn")
            label = f"{b}-bit g{group_size}"
            if engine == "int":
                from tinytelem.models.qinfer import QTransformer

                candidates.append((label, QTransformer(qm)))
            else:
                candidates.append((label, dequantize_model(qm)))
            sizes[label] = (qm.bits_per_weight(), qm.weight_bytes())

        def step(label: str) -> None:
            bar.update(task, advance=1, description=f"evaluating {label}")

        results = evaluate(ref.model, candidates, seqs, sizes=sizes, progress=step)
    if as_json:
        _emit({"reference": reference_spec, "tokens": results[0].tokens,
               "sequences": len(seqs), "engine": engine,
               "results": [r.to_dict() for r in results]})
        return
    click.echo(render_eval_table(results))


@model.command("optimize")
@click.argument("model_spec", metavar="MODEL")
@click.option("--platform", required=True, help="Target platform.")
@click.option("--max-kld", type=float, help="Smallest model whose predicted mean KLD stays "
              "under this (default: least KLD that fits).")
@click.option("--context", type=int, help="Wanted context length [default: seq_len].")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer (default: beside the model).")
@click.option("--text", "text_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Calibration text instead of the shipped stories.")
@click.option("--calib-tokens", type=int, default=512, show_default=True,
              help="Calibration tokens for the sensitivity runs.")
@click.option("--groups", "groups_text", default="32,64", show_default=True,
              help="Candidate group sizes.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plan (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and curve as JSON.")
def optimize(model_spec: str, platform: str, max_kld: float | None, context: int | None,
             tokenizer: Path | None, text_path: Path | None, calib_tokens: int,
             groups_text: str, out: Path | None, as_json: bool) -> None:
    """Mixed 2/3/4/8-bit plan for MODEL on a platform, with the size-vs-KLD curve."""
    from rich.progress import Progress

    from tinytelem.models.evaluate import eval_texts, tokenize_texts
    from tinytelem.models.optimize import optimize_model, render_plan

    lm = _open(model_spec)
    codec = _codec(lm, tokenizer, [])
    seqs = tokenize_texts(codec, eval_texts(text_path), lm.model.config.seq_len, calib_tokens)
    groups = _parse_ints(groups_text, "--groups")
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("sensitivity", total=None)

        def step(name: str) -> None:
            bar.update(task, advance=1, description=f"sensitivity of {name}")

        plan = optimize_model(lm.model, seqs, platform, context=context, max_kld=max_kld,
                              groups=groups, progress=step)
    data = plan.to_dict()
    data["model"] = lm.path
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if as_json:
        _emit(data)
        return
    click.echo(render_plan(plan))
    if out is not None:
        click.echo(f"plan written to {out}")
