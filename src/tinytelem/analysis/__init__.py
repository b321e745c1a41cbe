"""Analysis of recorded traces: clock alignment, run metrics, energy, the summary contract.

Functions here take plain numpy arrays (dtypes from :mod:`tinytelem.trace.schema`) gathered in
a :class:`RunData`, so they work the same on a trace file, a live buffer or a synthetic test.
"""

from __future__ import annotations

from tinytelem.analysis.clock import ClockFit, fit_device_clock, fit_sensor_clock
from tinytelem.analysis.metrics import Summary, compute_metrics
from tinytelem.analysis.rundata import RunData
from tinytelem.analysis.summary import build_summary, render_table, validate_summary

__all__ = [
    "ClockFit",
    "RunData",
    "Summary",
    "build_summary",
    "compute_metrics",
    "fit_device_clock",
    "fit_sensor_clock",
    "render_table",
    "validate_summary",
]
