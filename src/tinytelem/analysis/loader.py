"""Trace file -> :class:`RunData` -> summary: the glue between the trace reader and metrics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.analysis.rundata import RunData
from tinytelem.analysis.summary import build_summary
from tinytelem.errors import TraceError
from tinytelem.trace.schema import SPAN_DTYPE

SUMMARY_MAX_SAMPLES = 20_000_000
"""The most power samples a summary loads. Placing samples on the device clock costs about
100 bytes each at its peak (6.0 M samples: 667 MB RSS, measured), so a one-hour recording at
100 kS/s (360 M samples) needed more than 24 GB and was killed at its end. Beyond this the
summary integrates the finest stored statistics level with at most this many buckets: the
energy totals stay exact (a bucket's mean times its time is its samples' energy), windows
resolve to the bucket."""


def load_run_data(path: str | Path | Sequence[str | Path],
                  max_samples: int | None = None, *, with_spans: bool = True) -> RunData:
    """Read every table a summary needs from the trace at ``path``.

    ``max_samples``: when the recording holds more power samples and has summary levels, load
    the finest level with at most that many buckets instead of the samples
    (:data:`SUMMARY_MAX_SAMPLES` for summaries).

    ``with_spans``: False leaves the spans out (an hour of monitoring holds millions; a
    report reads those of the runs it details with :func:`read_rows`).

    A sequence of paths is the segments of one rotated recording (``record --rotate``), read
    as one: see :func:`join_segments`.
    """
    if not isinstance(path, str | Path):
        paths = list(path)
        if not paths:
            raise TraceError("no trace segments to read; check the recording's name")
        level = _level_for(paths, max_samples)
        parts = [_load_one(p, level, with_spans) for p in paths]
        return join_segments(_described_buckets(paths, parts))
    return _load_one(path, _level_for([path], max_samples), with_spans)


def read_rows(paths: Sequence[str | Path], table: str,
              keep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The rows of ``table`` (every segment in turn) for which ``keep(rows)`` is True, read a
    million at a time, so a table larger than memory can still be filtered."""
    from tinytelem.trace.reader import open_trace
    from tinytelem.trace.schema import TABLES

    parts = [np.zeros(0, dtype=TABLES[table][1])]
    for p in paths:
        with open_trace(p) as tr:
            parts.extend(chunk[keep(chunk)] for chunk in tr.table_chunks(table))
    return np.concatenate(parts)


def _level_for(paths: Sequence[str | Path], max_samples: int | None) -> tuple[str, int] | None:
    """The summary level (name, samples per bucket) that stands for the samples of a recording
    holding more than ``max_samples``; None: load the samples."""
    from tinytelem.trace.reader import open_trace

    if max_samples is None:
        return None
    total, names, sizes = 0, [], []
    for p in paths:
        with open_trace(p) as tr:
            if tr.group_attrs("power").get("store") == "stats":
                return None
            total += tr.n_power_samples
            attrs = tr.group_attrs("power/summary")
            if attrs.get("levels"):
                names = str(attrs["levels"]).split(",")
                sizes = [int(x) for x in np.atleast_1d(attrs.get("samples_per_bucket", []))]
    if total <= max_samples or not names or len(sizes) != len(names):
        return None
    for name, spb in zip(names, sizes, strict=True):
        if total / spb <= max_samples:
            return name, spb
    return names[-1], sizes[-1]


def _load_one(path: str | Path, level: tuple[str, int] | None, with_spans: bool = True
              ) -> RunData:
    from tinytelem.trace.reader import open_trace

    with open_trace(path) as tr:
        power_attrs = tr.group_attrs("power")
        n = tr.n_power_samples
        summarised = 0
        if level is not None:
            buckets, spb = tr.power_summary_level(*level)
            current = np.zeros(0, dtype=np.float32)
            summarised = n
        else:
            current = tr.power_samples(0, n) if n else np.zeros(0, dtype=np.float32)
            buckets, spb = (tr.power_summary_level(0) if power_attrs.get("store") == "stats"
                            else (None, 0))
        link = {
            k: int(v)
            for k, v in tr.link_stats.items()
            if isinstance(v, int | np.integer) and not isinstance(v, bool)
        }
        return RunData(
            attrs=dict(tr.attrs),
            tokens=tr.tokens,
            spans=tr.spans if with_spans else np.zeros(0, dtype=SPAN_DTYPE),
            memory=tr.memory,
            runs=tr.runs,
            pings=tr.pings,
            power_current_a=np.asarray(current, dtype=np.float32),
            power_voltage_v=float(power_attrs.get("voltage_v", math.nan)),
            power_rate_hz=float(power_attrs.get("sample_rate_hz", math.nan)),
            power_blocks=tr.power_blocks,
            power_gaps=tr.power_gaps,
            power_buckets=buckets,
            power_bucket_samples=spb,
            power_samples_summarised=summarised,
            link_gaps=tr.link_gaps,
            link=link,
        )


def _described_buckets(paths: list[str | Path], parts: list[RunData]) -> list[RunData]:
    """Give the other segments of a stats-only recording their buckets: one segment describes
    the summary levels (they are described when the recorder finishes), the last one, or the
    one before it in recordings whose final flush still opened an empty segment."""
    from tinytelem.trace.reader import open_trace

    described = [i for i, p in enumerate(parts) if p.power_bucket_samples > 0]
    if not described or all(p.power_buckets is not None for p in parts):
        return parts
    spb = parts[described[-1]].power_bucket_samples
    with open_trace(paths[described[-1]]) as tr:
        finest = str(tr.group_attrs("power/summary")["levels"]).split(",")[0]
    out = []
    for path, part in zip(paths, parts, strict=True):
        if part.power_buckets is not None:
            out.append(part)
            continue
        with open_trace(path) as tr:
            rows, _ = tr.power_summary_level(finest, spb)
        out.append(dataclasses.replace(part, power_buckets=rows, power_bucket_samples=spb))
    return out


def join_segments(parts: Sequence[RunData]) -> RunData:
    """The segments of one rotated recording as one :class:`RunData`, in order.

    Every row is in exactly one segment, except a run cut by a switch: it is in both, not
    ended in the first and whole in the next, so the last row of each ``run_id`` is kept.
    Power samples are appended with their blocks' ``offset`` moved along (sample indices
    already continue from one segment to the next). The attributes and link statistics are the
    last segment's: it holds the session's.
    """
    last = parts[-1]
    offsets = np.cumsum([0] + [p.power_current_a.size for p in parts[:-1]])
    blocks = []
    for part, shift in zip(parts, offsets, strict=True):
        moved = part.power_blocks.copy()
        moved["offset"] += np.uint64(shift)
        blocks.append(moved)
    runs = np.concatenate([p.runs for p in parts])
    if runs.size:
        # the last row of each run_id (np.unique on the reversed ids finds each one's last)
        _, first_from_end = np.unique(runs["run_id"][::-1], return_index=True)
        runs = runs[np.sort(runs.size - 1 - first_from_end)]
    buckets = [p.power_buckets for p in parts if p.power_buckets is not None]
    rates = [p.power_rate_hz for p in parts if math.isfinite(p.power_rate_hz)]
    volts = [p.power_voltage_v for p in parts if math.isfinite(p.power_voltage_v)]
    return RunData(
        attrs=last.attrs,
        tokens=np.concatenate([p.tokens for p in parts]),
        spans=np.concatenate([p.spans for p in parts]),
        memory=np.concatenate([p.memory for p in parts]),
        runs=runs,
        pings=np.concatenate([p.pings for p in parts]),
        power_current_a=np.concatenate([p.power_current_a for p in parts]),
        power_voltage_v=volts[-1] if volts else math.nan,
        power_rate_hz=rates[-1] if rates else math.nan,
        power_blocks=np.concatenate(blocks),
        power_gaps=np.concatenate([p.power_gaps for p in parts]),
        power_buckets=np.concatenate(buckets) if buckets else None,
        power_bucket_samples=max(p.power_bucket_samples for p in parts),
        power_samples_summarised=sum(p.power_samples_summarised for p in parts),
        link_gaps=np.concatenate([p.link_gaps for p in parts]),
        link=last.link,
    )


def summary_of_trace(
    path: str | Path | Sequence[str | Path], run_id: int | None = None
) -> dict[str, Any]:
    """The ``tinytelem.summary/1`` dict of the trace at ``path`` (or of a rotated recording's
    segments, read as one)."""
    return build_summary(load_run_data(path, SUMMARY_MAX_SAMPLES), run_id)
