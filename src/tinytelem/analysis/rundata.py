"""One trace's tables (:class:`RunData`) and their placement on the device clock.

Every analysis reads the same placement: the device -> host fit from PING/PONG rows (or, with
too few, the lower hull of token arrivals) and the sensor -> host fit from ``/power/blocks``,
one per stretch of the sensor's sample counter. :mod:`tinytelem.analysis.metrics` turns the
placed tables into figures; bottleneck attribution and reports place power through here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.clock import ClockFit, fit_arrival_clock, fit_device_clock, fit_sensor_clock
from tinytelem.analysis.energy import PowerTrace, index_segments, sample_indices
from tinytelem.trace.schema import (
    LINK_GAP_DTYPE,
    MEMORY_DTYPE,
    PING_DTYPE,
    POWER_BLOCK_DTYPE,
    POWER_GAP_DTYPE,
    RUN_DTYPE,
    SPAN_DTYPE,
    TOKEN_DTYPE,
)

__all__ = ["RunData", "device_clock", "in_windows", "place_power", "power_trace"]


def _empty(dtype: np.dtype[Any]) -> Any:
    return lambda: np.zeros(0, dtype=dtype)


@dataclass(frozen=True)
class RunData:
    """The tables of one trace, as plain numpy arrays with the dtypes of trace/schema.py.

    ``attrs`` keys read here: ``tick_hz`` (needed for PING rows), ``platform``, ``device``,
    ``model_name``, ``model_sha256``, ``model_params``, ``sensor``, ``sensor_latency_s``
    (known minimum delay from sample to host arrival, subtracted from the sensor fit; 0 when
    absent). ``link`` keys: ``frames``,
    ``crc_errors``, ``gaps`` (sequence-number gaps). ``power_current_a`` is the concatenation
    of the ``power_blocks`` in row order.
    """

    attrs: Mapping[str, Any] = field(default_factory=dict)
    tokens: np.ndarray = field(default_factory=_empty(TOKEN_DTYPE))
    spans: np.ndarray = field(default_factory=_empty(SPAN_DTYPE))
    memory: np.ndarray = field(default_factory=_empty(MEMORY_DTYPE))
    runs: np.ndarray = field(default_factory=_empty(RUN_DTYPE))
    pings: np.ndarray = field(default_factory=_empty(PING_DTYPE))
    power_current_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    power_voltage_v: float = math.nan
    power_rate_hz: float = math.nan
    power_blocks: np.ndarray = field(default_factory=_empty(POWER_BLOCK_DTYPE))
    power_gaps: np.ndarray = field(default_factory=_empty(POWER_GAP_DTYPE))
    power_buckets: np.ndarray | None = None
    """The finest power summary level (SUMMARY_DTYPE rows) of a trace recorded with
    ``--power-store stats``, which has no samples; energy is then computed from its means."""
    power_bucket_samples: int = 0
    """Samples per bucket of ``power_buckets``."""
    power_samples_summarised: int = 0
    """The samples a long recording kept but that were not loaded (``load_run_data``'s
    ``max_samples``): ``power_buckets`` then holds a summary level standing for them."""
    link_gaps: np.ndarray = field(default_factory=_empty(LINK_GAP_DTYPE))
    link: Mapping[str, int] = field(default_factory=dict)


def in_windows(t: npt.ArrayLike, begin: npt.ArrayLike, end: npt.ArrayLike
               ) -> npt.NDArray[np.bool_]:
    """Which of ``t`` lie in any closed window ``[begin, end]`` (windows may overlap): a time
    is inside when more windows began at or before it than ended before it. Windows with a
    NaN edge hold nothing. One sort and two binary searches, however many windows."""
    ta = np.asarray(t, dtype=np.float64)
    b = np.asarray(begin, dtype=np.float64)
    e = np.asarray(end, dtype=np.float64)
    ok = ~(np.isnan(b) | np.isnan(e)) & (e >= b)
    b, e = np.sort(b[ok]), np.sort(e[ok])
    started = np.searchsorted(b, ta, side="right")
    ended = np.searchsorted(e, ta, side="left")
    return np.asarray(started > ended)


def _tick_hz(data: RunData) -> float:
    """tick_hz from the attrs, else recovered from any table holding both ticks and seconds."""
    value = data.attrs.get("tick_hz")
    if value is not None and float(value) > 0:
        return float(value)
    for table, ticks, secs in (
        (data.tokens, "ticks", "device_s"),
        (data.runs, "begin_ticks", "begin_s"),
        (data.memory, "ticks", "device_s"),
    ):
        ok = (table[secs] > 0) & np.isfinite(table[secs]) if table.size else np.zeros(0, bool)
        if np.any(ok):
            i = int(np.flatnonzero(ok)[-1])
            return float(table[ticks][i]) / float(table[secs][i])
    return math.nan


def device_clock(data: RunData, warnings: list[str] | None = None) -> ClockFit:
    """The device -> host clock fit every device-time figure is placed with.

    PING/PONG round trips when the trace has at least two, else the lower hull of token
    arrivals (a warning says so). Appends to ``warnings`` when given.
    """
    fit = fit_device_clock(data.pings, _tick_hz(data))
    if fit.method in ("none", "single"):
        # Without round trips, token arrivals still bound the device clock from one side.
        tok = data.tokens
        alt = fit_arrival_clock(tok["device_s"], tok["host_s"]) if tok.size else fit
        if alt.method == "lower-hull":
            if warnings is not None:
                warnings.append("device clock fitted from token arrivals (too few PING rows)")
            return alt
    return fit


def power_trace(data: RunData, device: ClockFit | None = None,
                warnings: list[str] | None = None) -> PowerTrace | None:
    """The trace's power samples on the device clock; None without usable power.

    The same placement :func:`~tinytelem.analysis.metrics.compute_metrics` uses (sensor fit,
    then the inverse of ``device``, which defaults to :func:`device_clock`), so energies
    integrated over it add up to the summary's. Callers that also need the metrics should read
    ``compute_metrics(data).power_trace`` instead of placing the samples a second time.
    """
    notes = [] if warnings is None else warnings
    fit = device_clock(data, notes) if device is None else device
    return place_power(data, fit, notes)[0]


def _sensor_fit(blocks: np.ndarray, rate: float, latency: float) -> ClockFit:
    fit = fit_sensor_clock(blocks, rate)
    if fit.usable and latency:
        # A known minimum transport delay is the one bias the lower envelope cannot see.
        fit = replace(fit, offset_s=fit.offset_s - latency)
    return fit


def _place_buckets(
    data: RunData, device: ClockFit, sensor: ClockFit, warnings: list[str]
) -> PowerTrace | None:
    """Power from the finest summary level when the trace kept no samples (stats store).

    A bucket stands for its samples at their mean current: bucket ``first_index / spb`` at
    ``rate / spb`` lies at the same sensor seconds as its first sample, so the sensor clock
    fitted on the blocks places it. A bucket that lost samples in a gap still counts as whole.
    """
    buckets, spb = data.power_buckets, data.power_bucket_samples
    rate = float(data.power_rate_hz)
    if buckets is None or buckets.size == 0 or spb <= 0:
        return None
    if not (math.isfinite(rate) and rate > 0 and math.isfinite(data.power_voltage_v)):
        warnings.append("power statistics present but rate or voltage unknown: no energy figures")
        return None
    if not (sensor.usable and device.usable):
        warnings.append("power statistics cannot be placed on the device clock (no clock fit)")
        return None
    if data.power_samples_summarised:
        warnings.append(f"{data.power_samples_summarised:,} power samples, more than a summary "
                        f"loads: energy from their {spb / rate * 1e3:g} ms means (totals exact, "
                        f"windows to the bucket)")
    else:
        warnings.append(f"power kept as statistics only (--power-store stats): energy from "
                        f"{spb / rate * 1e3:g} ms means")
    return PowerTrace.build(
        np.asarray(buckets["first_index"], dtype=np.float64) / spb, buckets["mean"],
        voltage_v=data.power_voltage_v, rate_hz=rate / spb, sensor=sensor, device=device,
    )


def place_power(
    data: RunData, device: ClockFit, warnings: list[str]
) -> tuple[PowerTrace | None, ClockFit]:
    """Power samples on the device clock, and the main sensor fit (largest counter segment)."""
    rate = float(data.power_rate_hz)
    cur = np.asarray(data.power_current_a)
    blocks = data.power_blocks
    latency = float(data.attrs.get("sensor_latency_s") or 0.0)
    segments = index_segments(blocks)
    fits = [_sensor_fit(blocks[seg], rate, latency) for seg in segments]
    sensor = max(fits, key=lambda f: f.n_points) if fits else ClockFit.identity()
    if cur.size == 0:
        return _place_buckets(data, device, sensor, warnings), sensor
    if not (math.isfinite(rate) and rate > 0 and math.isfinite(data.power_voltage_v)):
        warnings.append("power samples present but rate or voltage unknown: no energy figures")
        return None, sensor
    if not (sensor.usable and device.usable):
        warnings.append("power samples cannot be placed on the device clock (no clock fit)")
        return None, sensor
    if len(segments) > 1:
        warnings.append(
            f"sensor sample counter restarted {len(segments) - 1} time(s); "
            "each stretch was fitted on its own"
        )
    idx, pos, rows, warn = sample_indices(blocks, int(cur.size))
    if warn:
        warnings.append(warn)
    parts = []
    for seg, fit in zip(segments, fits, strict=True):
        if not fit.usable:
            continue
        mask = (rows >= seg[0]) & (rows <= seg[-1])
        parts.append(
            PowerTrace.build(
                idx[mask],
                cur[pos[mask]],
                voltage_v=data.power_voltage_v,
                rate_hz=rate,
                sensor=fit,
                device=device,
            )
        )
    return PowerTrace.merge(parts), sensor
