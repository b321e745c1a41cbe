"""``tinytelem model optimize``: a mixed 2/3/4/8-bit plan for a model on a platform."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tinytelem.cli.model_eval import parse_ints

__all__ = ["optimize"]


@click.command("optimize")
@click.argument("model_spec", metavar="MODEL")
@click.option("--platform", required=True, help="Target platform.")
@click.option("--max-kld", type=float, help="Smallest model whose predicted mean KLD stays "
              "under this (default: least KLD that fits).")
@click.option("--context", type=int, help="Wanted context length [default: seq_len].")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer .bin, tokenizer.json or tokenizer.model (default: the "
              "model's own).")
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
    from tinytelem.models.formats import open_model, resolve_tokenizer
    from tinytelem.models.optimize import optimize_model, render_plan

    lm = open_model(model_spec)
    codec = resolve_tokenizer(lm, tokenizer)
    seqs = tokenize_texts(codec, eval_texts(text_path), lm.model.config.seq_len, calib_tokens)
    groups = parse_ints(groups_text, "--groups")
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
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render_plan(plan))
    if out is not None:
        click.echo(f"plan written to {out}")
