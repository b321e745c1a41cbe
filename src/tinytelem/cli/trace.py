"""``tinytelem trace``: inspect and replay traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.group("trace")
def trace() -> None:
    """Inspect trace files and re-decode raw link captures."""


def _segments_info(segments: list[Path]) -> dict[str, Any]:
    """``Trace.info()`` of a rotated recording: the last segment's (it holds the session, the
    summary and the schedule, which cover every segment), with rows, samples, bytes and the
    duration of all of them (a run cut by a switch has a row in both of its segments)."""
    from tinytelem.trace.reader import open_trace

    infos = []
    for path in segments:
        with open_trace(path) as tr:
            infos.append(tr.info())
    data = dict(infos[-1])
    data["segments"] = [str(p) for p in segments]
    data["rows"] = {k: sum(i["rows"].get(k, 0) for i in infos) for k in infos[-1]["rows"]}
    data["file_bytes"] = sum(i["file_bytes"] for i in infos)
    data["duration_s"] = sum(i["duration_s"] for i in infos if i["duration_s"] is not None)
    power = dict(infos[-1]["power"])
    for key in ("samples", "received", "blocks", "gaps", "missing_samples"):
        power[key] = sum(i["power"][key] for i in infos)
    power["first_index"] = infos[0]["power"]["first_index"]
    data["power"] = power
    data.pop("storage_bytes", None)
    return data


@trace.command("info")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(path: Path, as_json: bool) -> None:
    """Show what a trace holds: attributes, table sizes, duration, link health, summary.

    PATH may be the --out name of a rotated recording (record --rotate): its segments
    NAME-0001.h5, ... are shown as one.
    """
    from rich.console import Console
    from rich.table import Table

    from tinytelem.errors import TraceError
    from tinytelem.trace.reader import open_trace, segment_paths

    segments = [] if path.exists() else segment_paths(path)
    if not path.exists() and not segments:
        raise TraceError(f"trace {path} does not exist (nor segments {path.stem}-0001"
                         f"{path.suffix}, ... of a rotated recording); check the path")
    with open_trace(segments[-1] if segments else path) as tr:
        data = _segments_info(segments) if segments else tr.info()
        data["path"] = str(path)
        data["link"] = tr.link_stats
        summary = tr.summary
        schedule = tr.group_attrs("schedule").get("json")
    rolling = None
    if isinstance(schedule, str):  # record --repeat: the runs and their rolling summary
        sched = json.loads(schedule)
        rolling = sched.pop("rolling", None)
        data["schedule"] = sched
        data["rolling"] = rolling
    if summary:
        latency, power = summary.get("latency", {}), summary.get("power", {})
        data["summary"] = {
            "ttft_s": latency.get("ttft_s"),
            "itl_p50_s": latency.get("itl_s", {}).get("p50"),
            "itl_p99_s": latency.get("itl_s", {}).get("p99"),
            "decode_tok_s": latency.get("decode_tok_s"),
            "energy_per_token_j": power.get("energy_per_token_j"),
        }
    if data["opened_swmr"] and not data["complete"]:
        data["hint"] = (f"the recorder did not finish this file (killed?); the data goes up to "
                        f"its last flush. 'tinytelem trace repair {path}' makes it open "
                        "everywhere")
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console = Console()
    table = Table(title=str(path), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key == "rolling":
            continue
        text = (", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict)
                else str(value))
        table.add_row(str(key), text)
    console.print(table)
    if rolling is not None:
        from tinytelem.analysis.rolling import render_rolling

        console.print(render_rolling(rolling))


def _raw_segments(raw: Path) -> list[Path]:
    """The captures of a rotated recording named ``NAME.ttraw.zst`` (``NAME-0001.ttraw.zst``,
    ...), or ``[raw]`` itself when it exists."""
    from tinytelem.errors import TraceError
    from tinytelem.trace.reader import segment_paths

    if raw.exists():
        return [raw]
    base = raw.name.removesuffix(".ttraw.zst").removesuffix(".zst")
    found = [p.with_suffix(".ttraw.zst") for p in segment_paths(raw.with_name(base + ".h5"))]
    found = [p for p in found if p.exists()]
    if not found:
        raise TraceError(f"raw capture {raw} does not exist (nor segments {base}-0001.ttraw.zst, "
                         "... of a rotated recording); check the path")
    return found


@trace.command("replay")
@click.argument("raw", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Trace file to write.")
@click.option("--overwrite", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(raw: Path, out: Path, overwrite: bool, as_json: bool) -> None:
    """Re-decode a raw link capture (*.ttraw.zst; an older raw.zst too) into a trace with the
    live decoder and recorder. RAW may be NAME.ttraw.zst of a rotated recording (record --rotate
    --out NAME.h5): its segments' captures are decoded as one, into one trace."""
    from rich.console import Console

    from tinytelem.analysis.summary import render_table
    from tinytelem.replay import replay_capture
    from tinytelem.session.core import write_summary

    result = replay_capture(_raw_segments(raw), out, overwrite=overwrite)
    summary = write_summary(out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    note = " (capture ended mid-record: writer was killed?)" if result.truncated else ""
    console.print(f"replayed {result.records} capture records, {result.decoder.frames} frames "
                  f"-> {out}{note}")
    console.print(render_table(summary))


@trace.command("repair")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Repair a file modified within the last 2 s (only when its recorder is dead).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def repair(path: Path, force: bool, as_json: bool) -> None:
    """Make a trace whose recorder was killed open everywhere, and check what it holds.

    Clears the "open for write" flags a killed recorder leaves in the file (what HDF5's
    'h5clear -s' does), then checks every table: readable to its end, power blocks matching
    the samples, tokens of known runs. Exit status 0 when the file opens and is consistent,
    1 otherwise. The data is kept as the recorder's last flush left it.
    """
    from rich.console import Console

    from tinytelem.trace.repair import repair_trace

    report = repair_trace(path, force=force)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        console = Console()
        flags = (f"cleared consistency flags 0x{report.flags_cleared:x}" if report.flags_cleared
                 else "consistency flags were already clear")
        console.print(f"{path}: {flags}; "
                      f"{'opens' if report.opens else 'still does not open'} in any HDF5 reader")
        console.print("recorder finished the file" if report.complete
                      else "recorder did not finish the file: data ends at its last flush")
        if report.last_host_s is not None:
            console.print(f"last data at {report.last_host_s:.3f} s after the start")
        console.print(", ".join(f"{k}={v}" for k, v in report.rows.items() if v)
                      + f", power_samples={report.power_samples}")
        raw = report.raw_capture
        if raw is not None and "records" in raw:
            reach = ("" if raw["last_host_s"] is None
                     else f", up to {raw['last_host_s']:.3f} s")
            console.print(f"raw capture {raw['path']}: {raw['records']} records{reach}"
                          " ('tinytelem trace replay' re-decodes it)")
        for problem in report.problems:
            console.print(f"[yellow]problem:[/yellow] {problem}")
        console.print("[green]ok[/green]" if report.ok else "[red]not ok[/red]")
    if not report.ok:
        raise SystemExit(1)
