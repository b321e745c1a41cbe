"""Device time -> sensor sample index: GPIO markers when wired, PING/PONG otherwise.

Energy per token needs to know which power samples fall inside each token, so device time
(``device_s``) must be mapped onto sensor time (``index / rate``). Two methods:

(a) **GPIO markers.** The firmware toggles a pin at inference and token boundaries (and sends a
    MARKER / TOKEN frame stamped with device ticks at the same moment); the sensor samples the
    pin on a digital input, so each toggle appears as a logic edge at a sample index. Pairing
    markers with edges and fitting ``sensor_s = offset + scale * device_s`` by least squares
    over thousands of pairs gives offset and drift to a fraction of a sample period. Pairing is
    robust to edges the sensor missed (a gap) and extra edges (glitches): the fit starts from a
    short stretch of time, where the nominal rate is good enough to pair, and grows, refitting
    at every step, so crystal drift never throws the prediction out of the pairing tolerance.
(b) **PING/PONG.** With no marker wire, both clocks are fitted to the host clock
    (:mod:`tinytelem.analysis.clock`: the PING bracket for the device, the lower envelope of
    block arrivals for the sensor) and composed; the error is then the PING half round trip
    plus the sensor's unobservable transport delay -- hundreds of microseconds over USB.

The result records method and error bound; :meth:`Alignment.clock_attrs` is what goes into the
trace's ``/clock`` group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.clock import ClockFit, fit_device_clock, fit_sensor_clock

__all__ = ["Alignment", "align_markers", "align_ping", "edge_times"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Alignment:
    """``sensor_s = offset_s + scale * device_s`` with its provenance and error bound."""

    method: str
    """``gpio-markers``, ``ping`` or ``none``."""
    offset_s: float
    scale: float
    error_bound_s: float
    residual_rms_s: float
    n_points: int
    n_unmatched_markers: int = 0
    n_extra_edges: int = 0

    @property
    def drift_ppm(self) -> float:
        """Sensor clock rate relative to the device's, in ppm."""
        return (self.scale - 1.0) * 1e6

    def device_to_sensor_s(self, device_s: npt.ArrayLike) -> FloatArray:
        return self.offset_s + self.scale * np.asarray(device_s, dtype=np.float64)

    def sensor_to_device_s(self, sensor_s: npt.ArrayLike) -> FloatArray:
        return (np.asarray(sensor_s, dtype=np.float64) - self.offset_s) / self.scale

    def sensor_fit(self, device: ClockFit) -> ClockFit:
        """The sensor -> host fit implied by this alignment and a device -> host fit, so
        :class:`tinytelem.analysis.energy.PowerTrace` can place samples with it."""
        # host = dev.a + dev.b * device_s, device_s = (sensor_s - off) / scale.
        b = device.scale / self.scale
        a = device.offset_s - b * self.offset_s
        return ClockFit.make(a, b, residual_s=self.residual_rms_s,
                             error_bound_s=self.error_bound_s, n_points=self.n_points,
                             method=self.method)

    def clock_attrs(self) -> dict[str, object]:
        """Attributes for the trace's /clock group."""
        return {
            "alignment_method": self.method, "alignment_offset_s": self.offset_s,
            "alignment_scale": self.scale, "alignment_drift_ppm": self.drift_ppm,
            "alignment_error_bound_s": self.error_bound_s,
            "alignment_residual_rms_s": self.residual_rms_s,
            "alignment_points": self.n_points,
            "alignment_unmatched_markers": self.n_unmatched_markers,
            "alignment_extra_edges": self.n_extra_edges,
        }


NONE = Alignment("none", 0.0, 1.0, math.inf, math.inf, 0)


def edge_times(edge_index: npt.ArrayLike, rate_hz: float) -> FloatArray:
    """Sensor seconds of logic edges: a toggle lands in the first sample after it, so the
    toggle happened within the sample period before; the middle of it is the estimate."""
    return (np.asarray(edge_index, dtype=np.float64) - 0.5) / rate_hz


def _match(pred: FloatArray, edges: FloatArray, tol: float) -> tuple[
        npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """One-to-one nearest pairing within ``tol``; returns (marker rows, edge rows)."""
    if edges.size == 0 or pred.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    j = np.clip(np.searchsorted(edges, pred), 1, edges.size - 1) if edges.size > 1 else (
        np.zeros(pred.size, dtype=np.intp))
    if edges.size > 1:
        left = j - 1
        pick = np.where(np.abs(edges[left] - pred) <= np.abs(edges[j] - pred), left, j)
    else:
        pick = j
    dist = np.abs(edges[pick] - pred)
    ok = dist <= tol
    rows = np.flatnonzero(ok)
    cols = pick[ok]
    # An edge claimed twice keeps the closer marker.
    order = np.lexsort((dist[rows], cols))
    rows, cols = rows[order], cols[order]
    first = np.ones(cols.size, dtype=bool)
    first[1:] = cols[1:] != cols[:-1]
    return rows[first].astype(np.intp), cols[first].astype(np.intp)


def _lsq(x: FloatArray, y: FloatArray) -> tuple[float, float, FloatArray]:
    xm, ym = float(x.mean()), float(y.mean())
    dx = x - xm
    sxx = float(dx @ dx)
    b = float(dx @ (y - ym)) / sxx if sxx > 0 else 1.0
    a = ym - b * xm
    return a, b, y - (a + b * x)


def align_markers(
    marker_device_s: npt.ArrayLike,
    edge_index: npt.ArrayLike,
    rate_hz: float,
    *,
    tolerance_s: float | None = None,
    start_markers: int = 40,
) -> Alignment:
    """Fit device time to sensor time from GPIO markers and the logic edges they caused.

    Args:
        marker_device_s: device seconds of every pin toggle (from the MARKER / TOKEN frames).
        edge_index: sensor sample indices of logic edges on the marker input.
        rate_hz: sensor sample rate.
        tolerance_s: pairing window; default a quarter of the median marker spacing, at most
            2 ms and at least 3 sample periods.
        start_markers: markers in the first stretch, paired with the nominal rate.

    Returns:
        A ``gpio-markers`` alignment; ``none`` when fewer than 3 pairs could be made.
    """
    m = np.sort(np.asarray(marker_device_s, dtype=np.float64))
    e = np.sort(edge_times(edge_index, rate_hz))
    if m.size < 3 or e.size < 3:
        return NONE
    spacing = float(np.median(np.diff(m))) if m.size > 1 else 1.0
    tol = tolerance_s if tolerance_s is not None else min(0.25 * spacing, 2e-3)
    tol = max(tol, 3.0 / rate_hz)
    # Offset from the first stretch: the candidate (edge - marker) that pairs the most.
    k = min(start_markers, m.size)
    head_m = m[:k]
    head_e = e[: min(e.size, 3 * k)]
    cands = (head_e[:, None] - head_m[None, : min(10, k)]).ravel()
    best_a, best_score = 0.0, -1.0
    for cand in cands.tolist():
        rows, cols = _match(head_m + cand, head_e, tol)
        misfit = float(np.abs(head_e[cols] - head_m[rows] - cand).sum()) / tol
        # Periodic markers pair equally well shifted by one period; of those, the pairing
        # that leaves no edge unexplained before the first pair is the right one.
        lead = float(cols.min()) if cols.size else 0.0
        score = float(rows.size) - misfit / (rows.size + 1) - 1e-3 * lead
        if score > best_score:
            best_a, best_score = cand, score
    a, b = best_a, 1.0
    # Grow the stretch, re-pair and refit; the last passes tighten the tolerance.
    span_end = float(head_m[-1])
    total_end = float(m[-1])
    rows = cols = np.zeros(0, np.intp)
    resid = np.zeros(0)
    while True:
        sel = m <= span_end
        rows, cols = _match(a + b * m[sel], e, tol)
        if rows.size >= 3:
            a, b, resid = _lsq(m[sel][rows], e[cols])
        if span_end >= total_end:
            break
        span_end = float(m[0]) + 2.0 * (span_end - float(m[0])) + spacing
    for _ in range(2):
        if resid.size == 0:
            break
        tight = max(6.0 * float(np.sqrt(np.mean(resid**2))), 2.0 / rate_hz)
        rows, cols = _match(a + b * m, e, min(tol, tight))
        if rows.size < 3:
            break
        a, b, resid = _lsq(m[rows], e[cols])
    if rows.size < 3:
        return NONE
    rms = float(np.sqrt(np.mean(resid**2)))
    x = m[rows]
    dx = x - x.mean()
    se = rms * np.sqrt(1.0 / x.size + float(np.max(dx**2)) / float(dx @ dx))
    # 3 sigma of the fitted line at the worst point, plus the half-sample edge quantisation
    # bias that remains if the toggle does not fall uniformly within the sample period.
    bound = 3.0 * float(se) + 0.5 / rate_hz / math.sqrt(x.size)
    return Alignment("gpio-markers", a, b, bound, rms, int(rows.size),
                     int(m.size - rows.size), int(e.size - cols.size))


def align_ping(
    pings: np.ndarray,
    tick_hz: float,
    blocks: np.ndarray,
    rate_hz: float,
    *,
    sensor_latency_s: float = 0.0,
) -> Alignment:
    """Compose the PING fit (device -> host) with the sensor block-arrival fit.

    Args:
        pings: PING_DTYPE rows. tick_hz: device ticks per second.
        blocks: POWER_BLOCK_DTYPE rows. rate_hz: nominal sensor rate.
        sensor_latency_s: known minimum delay from a sample to its host arrival (the one-way
            fit cannot see it; subtracting it removes that bias).
    """
    dev = fit_device_clock(pings, tick_hz)
    sen = fit_sensor_clock(blocks, rate_hz)
    if not (dev.usable and sen.usable):
        return NONE
    sen_a = sen.offset_s - sensor_latency_s
    # sensor_s = (host - sen_a) / sen_b, host = dev_a + dev_b * device_s
    scale = dev.scale / sen.scale
    offset = (dev.offset_s - sen_a) / sen.scale
    bound = dev.error_bound_s + sen.error_bound_s
    rms = math.hypot(dev.residual_s, sen.residual_s)
    return Alignment("ping", offset, scale, bound, rms, dev.n_points + sen.n_points)
