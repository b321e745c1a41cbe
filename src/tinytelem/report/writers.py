"""Report writers: one entry point per output format over the same report data.

``write_report(paths, fmt, out)`` is what ``tinytelem report`` runs. Every format is built
from the same :class:`~tinytelem.report.data.ReportData`, so they agree. docs/reports.md
describes each output.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinytelem.errors import ConfigError

__all__ = ["FORMATS", "REPORT_SCHEMA", "report_json", "write_csv", "write_report"]

FORMATS = ("html", "json", "csv", "perfetto")
REPORT_SCHEMA = "tinytelem.report/1"


def report_json(reports: Sequence[Any]) -> dict[str, Any]:
    """The JSON report: per trace the summary, the bottleneck analysis and the tables; for a
    recording with more runs than the report details, also ``detail`` (which runs the
    bottlenecks and layers come from) and ``rolling`` (the runs compared)."""
    from tinytelem.report.data import tables

    out = []
    for rd in reports:
        tb = tables(rd)
        entry = {"path": str(rd.path), "title": rd.title, "summary": rd.summary,
                 "bottlenecks": rd.bottlenecks.to_dict(), "layers": tb["layers"]}
        if rd.detail is not None:  # a long recording: what the detail holds, runs compared
            entry.update(detail=rd.detail.to_dict(), rolling=rd.rolling)
        out.append(entry)
    return {"schema": REPORT_SCHEMA, "traces": out}


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    writer = csv.DictWriter(buf, fieldnames=fields or ["empty"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def write_csv(reports: Sequence[Any], out: Path) -> list[str]:
    """One CSV file per table; a directory, or a zip archive when ``out`` ends in ``.zip``.

    With several traces each gets a sub-folder named after its position and title.
    Returns the names written (relative to ``out``).
    """
    from tinytelem.report.data import tables

    files: dict[str, str] = {}
    for i, rd in enumerate(reports):
        prefix = "" if len(reports) == 1 else f"{i + 1:02d}-{_slug(rd.title)}/"
        for name, rows in tables(rd).items():
            files[f"{prefix}{name}.csv"] = _csv_text(rows)
    try:
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, text in files.items():
                    zf.writestr(name, text)
        else:
            for name, text in files.items():
                target = out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write CSV tables to {out}: {exc.strerror or exc}") from exc
    return sorted(files)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


def write_report(
    paths: Sequence[str | Path], fmt: str, out: Path,
    on_loaded: Callable[[Path], None] | None = None,
) -> Path:
    """Analyse the traces and write the report in ``fmt`` (one of :data:`FORMATS`) to ``out``."""
    from tinytelem.report.data import load_report_data

    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    reports = []
    for p in paths:
        reports.append(load_report_data(p))
        if on_loaded is not None:
            on_loaded(Path(p))
    if fmt == "csv":
        write_csv(reports, out)
        return out
    if fmt == "html":
        from tinytelem.report.html import render_html

        text = render_html(reports)
    elif fmt == "json":
        text = json.dumps(report_json(reports), indent=1, allow_nan=False)
    else:
        from tinytelem.report.perfetto import perfetto_json

        text = json.dumps(perfetto_json(reports), separators=(",", ":"), allow_nan=False)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return out
