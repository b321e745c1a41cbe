"""``tinytelem trace``: inspect and replay traces."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("trace")
def trace() -> None:
    """Inspect trace files and re-decode raw link captures."""


@trace.command("info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(path: Path, as_json: bool) -> None:
    """Show what a trace holds: attributes, table sizes, duration, link health, summary."""
    from rich.console import Console
    from rich.table import Table

    from tinytelem.trace.reader import open_trace

    with open_trace(path) as tr:
        data = tr.info()
        data["link"] = tr.link_stats
        summary = tr.summary
    if summary:
        latency, power = summary.get("latency", {}), summary.get("power", {})
        data["summary"] = {
            "ttft_s": latency.get("ttft_s"),
            "itl_p50_s": latency.get("itl_s", {}).get("p50"),
            "itl_p99_s": latency.get("itl_s", {}).get("p99"),
            "decode_tok_s": latency.get("decode_tok_s"),
            "energy_per_token_j": power.get("energy_per_token_j"),
        }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console = Console()
    table = Table(title=str(path), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        text = (", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict)
                else str(value))
        table.add_row(str(key), text)
    console.print(table)


@trace.command("replay")
@click.argument("raw", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Trace file to write.")
@click.option("--overwrite", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(raw: Path, out: Path, overwrite: bool, as_json: bool) -> None:
    """Re-decode a raw link capture (*.ttraw.zst; an older raw.zst too) into a trace with the
    live decoder and recorder."""
    from rich.console import Console

    from tinytelem.analysis.summary import render_table
    from tinytelem.replay import replay_capture
    from tinytelem.session.core import write_summary

    result = replay_capture(raw, out, overwrite=overwrite)
    summary = write_summary(out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    note = " (capture ended mid-record: writer was killed?)" if result.truncated else ""
    console.print(f"replayed {result.records} capture records, {result.decoder.frames} frames "
                  f"-> {out}{note}")
    console.print(render_table(summary))
