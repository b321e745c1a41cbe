"""``tinytelem report``: HTML, JSON, CSV or Perfetto reports of recorded traces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

_SUFFIX = {"html": ".html", "json": ".json", "perfetto": ".perfetto.json", "csv": ""}


def _trace_paths(items: tuple[Path, ...], fmt: str) -> list[Path]:
    """Trace files; a directory stands for the trace.h5 that ``tinytelem profile`` left in it
    (a lab's --out for every device's trace), and the name given to ``record --rotate`` for
    its segments, read as one. A collect directory (summaries only) raises TracesNeeded."""
    from tinytelem.analysis.fleet import report_traces
    from tinytelem.trace.reader import segment_paths

    out = []
    for p in items:
        lab = report_traces(p, fmt)
        if lab is not None:
            out.extend(lab)
            continue
        if not p.exists():
            if not segment_paths(p):
                raise click.BadParameter(
                    f"{p} does not exist (nor segments {p.stem}-0001{p.suffix}, ... of a "
                    "rotated recording)", param_hint="TRACE")
            out.append(p)
            continue
        if p.is_dir() and not (p / "trace.h5").is_file():
            raise click.BadParameter(f"{p} is a directory without trace.h5", param_hint="TRACE")
        out.append(p / "trace.h5" if p.is_dir() else p)
    return out


@click.command("report")
@click.argument("traces", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["html", "json", "csv", "perfetto"]),
              default="html", show_default=True)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Output file (html/json/perfetto), or directory / .zip for csv.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def report(traces: tuple[Path, ...], fmt: str, out: Path, as_json: bool) -> None:
    """Write a report of one or more traces (a trace file, a profile output directory, a lab's
    --out directory -- every device's trace --, or the --out name of a rotated recording, whose
    segments are reported as one). A 'collect --out' directory holds summaries, not traces: it
    is refused (compare reads it).

    \b
    Formats:
      html      one self-contained page (inline SVG plots, no network)
      json      summary + per-layer breakdown + bottlenecks
      csv       one CSV per table into a directory (or a .zip if OUT ends in .zip)
      perfetto  Chrome trace JSON for ui.perfetto.dev / chrome://tracing
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tinytelem.report.writers import write_report

    paths = _trace_paths(traces, fmt)
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True,
                  disable=not sys.stderr.isatty() or as_json) as progress:
        task = progress.add_task("analysing traces", total=len(paths))
        write_report(paths, fmt, out, on_loaded=lambda _p: progress.advance(task))
    if as_json:
        click.echo(json.dumps({"format": fmt, "out": str(out),
                               "traces": [str(p) for p in paths]}))
    else:
        console.print(f"{fmt} report of {len(paths)} trace(s) written to [bold]{out}[/bold]")
