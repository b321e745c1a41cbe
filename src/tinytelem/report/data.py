"""Everything a report shows about one trace, loaded once and shared by every output format.

The HTML, CSV, JSON and Perfetto writers all start from :class:`ReportData`, so the numbers in
the four outputs are the same numbers. Long power recordings are reduced here with a min/max
decimation: every bucket keeps its extremes, so a 5 µs current spike stays visible on a plot
of a ten-minute run even though the plot holds only a thousand columns.

Long monitoring recordings (``record --repeat forever``: thousands of runs, millions of spans
and frames) are reduced too. The summary, ITL and energy figures pool every run, and the
rolling summary compares them; the detail -- spans (per-operator and per-layer tables), tokens,
memory rows and frames (tracing overhead) -- holds at most :data:`DETAIL_RUNS` runs, evenly
spaced over the recording, and :class:`Detail` says which, so every output can say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.bottleneck import Bottlenecks, analyse_bottlenecks
from tinytelem.analysis.energy import PowerTrace
from tinytelem.analysis.metrics import compute_metrics
from tinytelem.analysis.rundata import RunData, in_windows
from tinytelem.analysis.summary import build_summary
from tinytelem.protocol.enums import Op

__all__ = ["DETAIL_RUNS", "Decimated", "Detail", "ReportData", "detail_runs", "flatten",
           "load_report_data", "minmax_decimate", "tables"]

FloatArray = npt.NDArray[np.float64]

DETAIL_RUNS = 100
"""The most runs a report details (spans, tokens, memory rows, frames). Ten minutes of
monitoring on the twin (``bench/soak.py``) are 714 runs, 2.5 M spans and 5.1 M frames, an hour
six times that: read whole they took 0.9 GB for ten minutes and more than 5 GB for the hour.
100 runs are about 350,000 spans and 720,000 frames however long the recording."""


@dataclass(frozen=True)
class Detail:
    """Which runs a long recording's detail holds (the rest count only in the aggregates)."""

    runs: int
    """Runs in the recording."""
    run_ids: tuple[int, ...]
    """The runs detailed, evenly spaced over the recording (first and last included)."""

    def note(self) -> str:
        """One sentence for the report."""
        return (f"{self.runs:,} runs: summary, latency, energy and the per-run table pool all "
                f"of them; per-operator and per-layer figures, tracing overhead, tokens, memory "
                f"rows and timelines are from {len(self.run_ids)} runs evenly spaced over the "
                f"recording (first and last included)")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"runs": self.runs, "detailed_runs": len(self.run_ids),
                "run_ids": list(self.run_ids), "note": self.note()}


def detail_runs(runs: np.ndarray, limit: int = DETAIL_RUNS) -> tuple[int, ...] | None:
    """Run ids of at most ``limit`` runs evenly spaced in start order, first and last
    included; None when there are no more than ``limit`` runs (all are detailed)."""
    if runs.size <= limit:
        return None
    order = runs[np.argsort(runs["begin_s"], kind="stable")]
    pick = np.unique(np.round(np.linspace(0, order.size - 1, max(limit, 2))).astype(np.int64))
    return tuple(int(x) for x in order["run_id"][pick])


@dataclass(frozen=True)
class Decimated:
    """A signal reduced to buckets: start time, min, max and mean of each bucket."""

    t: FloatArray
    lo: FloatArray
    hi: FloatArray
    mean: FloatArray


def minmax_decimate(t: npt.ArrayLike, y: npt.ArrayLike, buckets: int) -> Decimated:
    """Reduce (t, y) to at most ``buckets`` equal-time buckets keeping min, max and mean.

    Empty buckets are dropped, so gaps in the data stay gaps. With fewer samples than buckets
    the samples are returned as they are (lo = hi = mean = y).
    """
    ta = np.asarray(t, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(ta) & np.isfinite(ya)
    ta, ya = ta[ok], ya[ok]
    if ta.size <= buckets or buckets < 1:
        return Decimated(ta, ya, ya, ya)
    order = np.argsort(ta, kind="stable")
    ta, ya = ta[order], ya[order]
    t0, t1 = float(ta[0]), float(ta[-1])
    width = (t1 - t0) / buckets or 1.0
    idx = np.minimum(((ta - t0) / width).astype(np.int64), buckets - 1)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, ta.size])
    lo = np.minimum.reduceat(ya, starts)
    hi = np.maximum.reduceat(ya, starts)
    mean = np.add.reduceat(ya, starts) / counts
    return Decimated(t0 + idx[starts] * width, lo, hi, mean)


@dataclass(frozen=True)
class ReportData:
    """One trace, analysed."""

    path: Path
    attrs: dict[str, Any]
    summary: dict[str, Any]
    itl_s: FloatArray
    bottlenecks: Bottlenecks
    power: PowerTrace | None
    data: RunData
    events: np.ndarray
    link_stats: dict[str, Any]
    detail: Detail | None = None
    """Set when the recording has more runs than :data:`DETAIL_RUNS`: ``data``, ``events``
    and ``bottlenecks`` then hold only the runs it names."""
    rolling: dict[str, Any] | None = None
    """The rolling summary across runs (``analysis.rolling``), with ``detail``."""

    @property
    def title(self) -> str:
        """Platform · model · weight width, the way a reader names a run."""
        bits = self.attrs.get("weight_bits")
        parts = [str(self.attrs.get("platform") or "?"), str(self.attrs.get("model_name") or "?")]
        if bits:
            parts.append(f"{bits}-bit")
        return " · ".join(parts)

    @property
    def t0(self) -> float:
        """Device time the plots start from (first run's begin, else first token)."""
        runs = self.data.runs
        if runs.size and np.isfinite(runs["begin_s"]).any():
            return float(np.nanmin(runs["begin_s"]))
        tok = self.data.tokens
        return float(tok["device_s"].min()) if tok.size else 0.0

    def power_window(self, buckets: int, margin_s: float = 0.002) -> Decimated:
        """Power (W) around the runs, decimated to ``buckets``."""
        if self.power is None or self.power.size == 0:
            z = np.zeros(0)
            return Decimated(z, z, z, z)
        runs = self.data.runs
        t, p = self.power.t_s, self.power.power_w
        if runs.size:
            ends = runs["end_s"][np.isfinite(runs["end_s"])]
            lo = self.t0 - margin_s
            hi = float(ends.max()) + margin_s if ends.size else float(t[-1])
            m = (t >= lo) & (t <= hi)
            if np.any(m):
                t, p = t[m], p[m]
        return minmax_decimate(t, p, buckets)


def load_report_data(path: str | Path, run_id: int | None = None,
                     max_detail_runs: int | None = None) -> ReportData:
    """Read and analyse one trace for reporting; the name of a rotated recording (``record
    --rotate --out NAME.h5``, which leaves ``NAME-0001.h5``, ...) reads its segments as one.

    With more than ``max_detail_runs`` runs (default :data:`DETAIL_RUNS`) only that many are
    detailed (see :class:`Detail`).
    """
    from tinytelem.analysis.loader import SUMMARY_MAX_SAMPLES, load_run_data, read_rows
    from tinytelem.analysis.rolling import rolling_summary
    from tinytelem.trace.reader import open_trace, segment_paths

    segments = [] if Path(path).exists() else segment_paths(Path(path))
    paths: list[str | Path] = list(segments) or [path]
    data = load_run_data(segments or path, SUMMARY_MAX_SAMPLES, with_spans=False)
    limit = DETAIL_RUNS if max_detail_runs is None else max_detail_runs
    picked = detail_runs(data.runs, limit) if run_id is None else None
    link_stats: dict[str, Any] = {}
    for one in paths:
        with open_trace(one) as tr:
            link_stats = dict(tr.link_stats)  # the session's: in the last segment
    metrics = compute_metrics(data, run_id)
    summary = build_summary(metrics)
    itl = np.concatenate([r.itl_s for r in metrics.runs]) if metrics.runs else np.zeros(0)
    power = metrics.power_trace  # placed once, by compute_metrics; shared with the bottlenecks
    detail = rolling = None
    if picked is None:
        data = replace(data, spans=read_rows(paths, "spans", lambda rows: np.ones(rows.size, bool)))
        events = read_rows(paths, "events", lambda rows: np.ones(rows.size, bool))
    else:
        ids = np.asarray(picked, dtype=np.int64)
        every = data.runs
        runs = data.runs[np.isin(data.runs["run_id"], ids)]
        begin = runs["begin_s"][np.isfinite(runs["begin_s"])]
        end = np.where(np.isfinite(runs["end_s"]), runs["end_s"], np.inf)[
            np.isfinite(runs["begin_s"])]
        data = replace(
            data, runs=runs,
            tokens=data.tokens[np.isin(data.tokens["run_id"], ids)],
            memory=data.memory[in_windows(data.memory["device_s"], begin, end)],
            spans=read_rows(paths, "spans", lambda rows: np.isin(rows["run_id"], ids)),
        )
        events = read_rows(paths, "events",
                           lambda rows: in_windows(rows["device_s"], begin, end))
        detail = Detail(int(every.size), picked)
        starts = dict(zip(every["run_id"].tolist(), every["begin_s"].tolist(), strict=True))
        rolling = rolling_summary(summary["runs"], starts)
    bn = analyse_bottlenecks(data, events, power)
    if detail is not None:
        bn = replace(bn, warnings=(*bn.warnings, detail.note()))
    return ReportData(Path(path), dict(data.attrs), summary, np.asarray(itl, dtype=np.float64),
                      bn, power, data, events, link_stats, detail, rolling)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": leaf}; lists are kept out (they get their own tables)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(flatten(v, key))
            elif not isinstance(v, list):
                out[key] = v
    return out


def _f(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def tables(rd: ReportData) -> dict[str, list[dict[str, Any]]]:
    """The report's tables as rows of plain values (the CSV files, and the JSON's tables).

    ``tokens`` and ``memory`` hold the detailed runs only, and a long recording gets ``detail``
    (which runs) and ``rolling`` (the runs compared) tables; ``runs`` has every run.
    """
    s = rd.summary
    itl = s["latency"]["itl_s"]
    out: dict[str, list[dict[str, Any]]] = {}
    out["summary"] = [{"key": k, "value": v} for k, v in flatten(s).items()]
    out["itl_percentiles"] = [
        {"statistic": k, "seconds": itl.get(k)} for k in ("mean", "p50", "p90", "p99", "max")
    ] + [{"statistic": "n", "seconds": itl.get("n")}]
    out["ops"] = [
        {k: _f(v) for k, v in row.items()}
        for row in (op.__dict__ for op in rd.bottlenecks.ops)
    ]
    layer_rows = []
    for lc in rd.bottlenecks.layers:
        row: dict[str, Any] = {"layer": lc.layer, "time_s": lc.time_s, "energy_j": lc.energy_j}
        for op in Op:
            if op is not Op.LAYER:
                row[f"{op.name.lower()}_s"] = lc.ops.get(op.name.lower(), 0.0)
        layer_rows.append({k: _f(v) for k, v in row.items()})
    out["layers"] = layer_rows
    out["runs"] = [dict(r) for r in s.get("runs", [])]
    link = dict(s["link"])
    link.update({k: _f(v) for k, v in rd.link_stats.items() if k not in link})
    out["link"] = [{"key": k, "value": v} for k, v in link.items()]
    if rd.detail is not None:
        out["detail"] = [{"key": "runs", "value": rd.detail.runs},
                         {"key": "detailed_runs", "value": len(rd.detail.run_ids)},
                         {"key": "run_ids", "value": " ".join(map(str, rd.detail.run_ids))},
                         {"key": "note", "value": rd.detail.note()}]
        out["rolling"] = [{"key": k, "value": v} for k, v in flatten(rd.rolling or {}).items()]
    tok = rd.data.tokens
    out["tokens"] = [
        {"run_id": int(r["run_id"]), "index": int(r["index"]), "token_id": int(r["token_id"]),
         "phase": "decode" if int(r["phase"]) else "prefill", "device_s": _f(r["device_s"])}
        for r in tok
    ]
    mem = rd.data.memory
    out["memory"] = [
        {name: _f(r[name]) for name in (mem.dtype.names or ())} for r in mem
    ]
    return out
