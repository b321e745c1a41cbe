"""``tinytelem recommend``: rank platform x weight-width options against constraints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _trace_files(dirs: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        out.extend(sorted(d.rglob("*.h5")) if d.is_dir() else [d])
    return out


@click.command("recommend")
@click.option("--model", "model_spec", required=True,
              help="llama2.c checkpoint, or builtin-260k / stories260k (the shape).")
@click.option("--constraints", default="", show_default=True,
              help="e.g. 'ram<=512KiB,flash<=8MiB,ttft<=1s,energy_per_token<=5mJ'.")
@click.option("--battery", help="Battery for life estimates: '1000mAh@3.7V' or '3.7Wh'.")
@click.option("--duty", "duty_tok_s", type=click.FloatRange(min=0.0, min_open=True),
              default=1.0, show_default=True, help="Average tokens/s for battery hours.")
@click.option("--traces", "trace_dirs", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Directories (searched recursively) or files of measured traces.")
@click.option("--bits", default="2,3,4,8", show_default=True, help="Weight widths to consider.")
@click.option("--platform", "platform_names", multiple=True,
              help="Only these platforms (repeatable; default: all).")
@click.option("--prompt-tokens", type=click.IntRange(1), default=8, show_default=True)
@click.option("--gen-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option("--objective", type=click.Choice(["energy", "ttft", "itl", "tok_s", "ram"]),
              default="energy", show_default=True, help="Order of the options that qualify.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluation results JSON (enables accuracy / perplexity constraints).")
@click.option("--top", type=click.IntRange(1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print every option as JSON.")
def recommend(model_spec: str, constraints: str, battery: str | None, duty_tok_s: float,
              trace_dirs: tuple[Path, ...], bits: str, platform_names: tuple[str, ...],
              prompt_tokens: int, gen_tokens: int, objective: str, eval_path: Path | None,
              top: int, as_json: bool) -> None:
    """Rank platform x quantization options for a model; each line says why, with numbers.

    Measured traces of the same model, platform and weight width are used where given; the
    device twin's cost model everywhere else.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from tinytelem.analysis import recommend as rec
    from tinytelem.analysis.compare import load_eval
    from tinytelem.platforms import all_platforms, get_platform
    from tinytelem.report.html import fmt

    try:
        widths = [int(b) for b in bits.split(",") if b.strip()]
    except ValueError as exc:
        raise click.BadParameter("use e.g. '2,3,4,8'", param_hint="--bits") from exc
    cons = rec.parse_constraints(constraints)
    bat = rec.parse_battery(battery) if battery else None
    model = rec.resolve_model(model_spec)
    plats = [get_platform(n) for n in platform_names] if platform_names else all_platforms()
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True,
                  disable=not sys.stderr.isatty() or as_json) as progress:
        task = progress.add_task("evaluating options", total=len(plats) * len(widths))
        options = rec.recommend(
            model, cons, platforms=plats, bits=widths, traces=_trace_files(trace_dirs),
            battery=bat, duty_tok_s=duty_tok_s, prompt=prompt_tokens, generate=gen_tokens,
            objective=objective, evals=load_eval(eval_path) if eval_path else (),
            progress=lambda: progress.advance(task))
    if as_json:
        click.echo(json.dumps({"model": model.name, "constraints": [c.text for c in cons],
                               "objective": objective,
                               "options": [o.to_dict() for o in options]}, indent=1))
        return
    table = Table(title=f"{model.name}: {constraints or 'no constraints'} (best first)")
    for col in ("#", "platform", "bits", "ok", "TTFT", "tok/s", "J/token", "RAM", "flash",
                "source"):
        table.add_column(col, justify="left" if col in ("platform", "source") else "right")
    shown = options[:top]
    for i, o in enumerate(shown, 1):
        mark = "[green]yes[/]" if o.ok else "[red]no[/]"
        table.add_row(str(i), o.platform, str(o.bits), mark, fmt(o.ttft_s, "s"),
                      fmt(o.tok_s, "tok/s"), fmt(o.energy_per_token_j, "J"),
                      fmt(o.ram_bytes, "B"), fmt(o.flash_bytes, "B"),
                      "measured" if o.source.startswith("measured") else "cost model")
    out = Console()
    out.print(table)
    for i, o in enumerate(shown, 1):
        out.print(f"[bold]{i}. {o.platform} {o.bits}-bit[/]: {o.why}", highlight=False)
    if not any(o.ok for o in options):
        console.print("[yellow]no option meets every constraint; the closest are listed "
                      "first[/]")
