"""The comparison of runs as files: an HTML page with bar charts, and CSV."""

from __future__ import annotations

import csv
import io
from html import escape

from tinytelem.analysis.compare import Comparison, Metric
from tinytelem.report import svg
from tinytelem.report.html import fmt, page, table_html

__all__ = ["compare_csv", "compare_html"]


def compare_html(comp: Comparison) -> str:
    """A page with the comparison table (best values marked) and one bar chart per metric."""
    used = [m for m in comp.metrics if any(r[m.key] is not None for r in comp.rows)]
    labels = [r["label"] for r in comp.rows]
    rows = [[escape(r["label"])] + [escape(fmt(r[m.key], m.unit)) for m in used]
            for r in comp.rows]
    best = [[False] + [comp.best[m.key] == i for m in used] for i in range(len(comp.rows))]
    table = table_html(["run"] + [f"{m.label} ({'↓' if m.better == 'min' else '↑'})"
                                  for m in used], rows, best)

    def chart(m: Metric) -> str:
        def show(v: float) -> str:
            return fmt(v, m.unit)

        return svg.bar_chart(
            f"compare-{m.key}", labels, [r[m.key] for r in comp.rows],
            title=f"{m.label} ({'lower' if m.better == 'min' else 'higher'} is better)",
            fmt=show, best=comp.best[m.key], width=560)

    charts = "".join(chart(m) for m in used)
    body = (f'<section class="trace"><h2>Comparison</h2>{table}'
            f'<div class="grid2" style="margin-top:16px">{charts}</div></section>')
    return page("tinytelem compare", f"{len(comp.rows)} runs", body)


def compare_csv(comp: Comparison) -> str:
    """One row per run (host and device empty when unknown): every metric, then a
    ``best_<metric>`` flag per metric."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "host", "device", "path", "platform", "model", "weight_bits"]
               + [m.key for m in comp.metrics] + [f"best_{m.key}" for m in comp.metrics])
    for i, r in enumerate(comp.rows):
        w.writerow([r["label"], r["host"] or "", r["device"] or "", r["path"], r["platform"],
                    r["model"], r["weight_bits"]]
                   + ["" if r[m.key] is None else r[m.key] for m in comp.metrics]
                   + [int(comp.best[m.key] == i) for m in comp.metrics])
    return buf.getvalue()
