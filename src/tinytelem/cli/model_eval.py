"""``tinytelem model eval``: perplexity, KL divergence and agreement against a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tinytelem.errors import ConfigError, ModelError

__all__ = ["eval_cmd", "parse_ints"]


def parse_ints(text: str | None, what: str) -> list[int]:
    """Comma-separated integers (``8,4,3,2``); [] for none.

    Raises:
        ConfigError: Anything else.
    """
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from exc


@click.command("eval")
@click.argument("model_specs", metavar="[MODEL]...", nargs=-1)
@click.option("--reference", "reference_spec", required=True,
              help="The float model whose predictions count as truth.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer .bin, tokenizer.json or tokenizer.model (default: the "
              "model's own).")
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
    from tinytelem.models.formats import open_model, resolve_tokenizer

    ref = open_model(reference_spec)
    cands_lm = [open_model(s) for s in model_specs]
    bits = parse_ints(bits_text, "--bits")
    if not cands_lm and not bits:
        raise ConfigError("nothing to evaluate: give MODEL files and/or --bits 8,4,3,2")
    codec = resolve_tokenizer(ref, tokenizer, cands_lm)
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
        click.echo(json.dumps({"reference": reference_spec, "tokens": results[0].tokens,
               "sequences": len(seqs), "engine": engine,
               "results": [r.to_dict() for r in results]}, indent=2))
        return
    click.echo(render_eval_table(results))
