"""``tinytelem compare``: runs side by side, best value per metric marked."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluation results JSON (accuracy / perplexity per model and weight width).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path),
              help="Also write the table as CSV (one row per run, with host and device).")
@click.option("--html", "html_path", type=click.Path(path_type=Path),
              help="Also write an HTML page with bar charts.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(runs: tuple[Path, ...], eval_path: Path | None, csv_path: Path | None,
            html_path: Path | None, as_json: bool) -> None:
    """Compare runs (traces, summary.json files or profile directories) side by side.

    A lab's --out directory (record/profile --session) stands for every device's trace, a
    'collect --out' directory (or any folder of it) for every run summary collected there;
    their rows are labelled host/device. The best value of each metric is marked (★ in the
    table, green in HTML).
    """
    from rich.console import Console
    from rich.table import Table

    from tinytelem.analysis.compare import compare_runs, load_eval
    from tinytelem.report.compare import compare_csv, compare_html
    from tinytelem.report.html import fmt

    comp = compare_runs(runs, load_eval(eval_path) if eval_path else ())
    used = [m for m in comp.metrics if any(r[m.key] is not None for r in comp.rows)]
    if csv_path is not None:
        csv_path.write_text(compare_csv(comp), encoding="utf-8")
    if html_path is not None:
        html_path.write_text(compare_html(comp), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(comp.to_dict(), indent=1, allow_nan=False))
        return
    table = Table(title="runs compared (★ = best)")
    table.add_column("metric", style="bold")
    for r in comp.rows:
        table.add_column(r["label"], justify="right")
    for m in used:
        cells = []
        for i, r in enumerate(comp.rows):
            text = fmt(r[m.key], m.unit)
            cells.append(f"[bold green]{text} ★[/]" if comp.best[m.key] == i else text)
        table.add_row(f"{m.label} {'↓' if m.better == 'min' else '↑'}", *cells)
    Console().print(table)
