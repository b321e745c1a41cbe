"""Everything a report shows about one trace, loaded once and shared by every output format.

The HTML, CSV, JSON and Perfetto writers all start from :class:`ReportData`, so the numbers in
the four outputs are the same numbers. Long power recordings are reduced here with a min/max
decimation: every bucket keeps its extremes, so a 5 µs current spike stays visible on a plot
of a ten-minute run even though the plot holds only a thousand columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.bottleneck import Bottlenecks, analyse_bottlenecks
from tinytelem.analysis.energy import PowerTrace
from tinytelem.analysis.metrics import compute_metrics
from tinytelem.analysis.rundata import RunData
from tinytelem.analysis.summary import build_summary
from tinytelem.protocol.enums import Op

__all__ = ["Decimated", "ReportData", "flatten", "load_report_data", "minmax_decimate", "tables"]

FloatArray = npt.NDArray[np.float64]


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


def load_report_data(path: str | Path, run_id: int | None = None) -> ReportData:
    """Read and analyse one trace for reporting; the name of a rotated recording (``record
    --rotate --out NAME.h5``, which leaves ``NAME-0001.h5``, ...) reads its segments as one."""
    from tinytelem.analysis.loader import SUMMARY_MAX_SAMPLES, load_run_data
    from tinytelem.trace.reader import open_trace, segment_paths

    segments = [] if Path(path).exists() else segment_paths(Path(path))
    data = load_run_data(segments or path, SUMMARY_MAX_SAMPLES)
    events_parts = []
    link_stats: dict[str, Any] = {}
    for one in segments or [Path(path)]:
        with open_trace(one) as tr:
            events_parts.append(tr.events)
            link_stats = dict(tr.link_stats)  # the session's: in the last segment
    events = np.concatenate(events_parts)
    metrics = compute_metrics(data, run_id)
    summary = build_summary(metrics)
    itl = np.concatenate([r.itl_s for r in metrics.runs]) if metrics.runs else np.zeros(0)
    power = metrics.power_trace  # placed once, by compute_metrics; shared with the bottlenecks
    bn = analyse_bottlenecks(data, events, power)
    return ReportData(Path(path), dict(data.attrs), summary, np.asarray(itl, dtype=np.float64),
                      bn, power, data, events, link_stats)


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
    """The report's tables as rows of plain values (the CSV files, and the JSON's tables)."""
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
