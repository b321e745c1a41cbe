"""Trace file -> :class:`RunData` -> summary: the glue between the trace reader and metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.analysis.rundata import RunData
from tinytelem.analysis.summary import build_summary


def load_run_data(path: str | Path) -> RunData:
    """Read every table a summary needs from the trace at ``path``."""
    from tinytelem.trace.reader import open_trace

    with open_trace(path) as tr:
        power_attrs = tr.group_attrs("power")
        n = tr.n_power_samples
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
            spans=tr.spans,
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
            link_gaps=tr.link_gaps,
            link=link,
        )


def summary_of_trace(path: str | Path, run_id: int | None = None) -> dict[str, Any]:
    """The ``tinytelem.summary/1`` dict of the trace at ``path``."""
    return build_summary(load_run_data(path), run_id)
