"""Clock alignment: map device time and sensor sample time onto the host monotonic clock.

Three clocks meet in a trace. Device events carry ``device_s`` (ticks / tick_hz), power samples
carry a sensor sample index, and the host stamps arrivals with ``host_s``. Arrival stamps are
late by a variable, strictly positive delay, so they are never used as timestamps: they only
feed the fits here, which turn each foreign clock into host time as ``host_s = a + b * x``
(offset ``a``, scale ``b``; ``b - 1`` is the drift, up to a few hundred ppm for crystals).

Two estimators, chosen by what the raw data can tell us:

- PING/PONG round trips bracket the device's reply between two host times: the true line is
  above every send point and below every receive point. The centre of that bracket (two hull
  fits, one from each side) gives offset + drift, bounded by half the smallest round trip.
- One-way arrivals (sensor blocks, or device frames when there were no pings) are only ever
  late. Least squares would average the delays into the offset; instead the fit is the lower
  convex hull edge that supports the points at their mean x — the line that lies below every
  point and is closest to them on average (the linear-programming skew estimator). Its bias is
  the minimum transport delay, which no one-way method can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ClockFit",
    "fit_arrival_clock",
    "fit_device_clock",
    "fit_sensor_clock",
    "lower_hull_line",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClockFit:
    """A linear map from a foreign clock ``x`` (seconds) to host seconds: ``a + b * x``.

    Attributes:
        offset_s: ``a``, host seconds at foreign time 0.
        scale: ``b``, host seconds per foreign second.
        drift_ppm: ``(b - 1) * 1e6``; positive when the foreign clock runs slow.
        residual_s: how well the points agree with the line (meaning depends on ``method``;
            see docs/summary-format.md).
        error_bound_s: an estimate of the largest error of ``to_host``; ``inf`` when the data
            cannot bound it (single point, no data).
        n_points: points the fit was made from.
        method: ``"bracket-hull"``, ``"min-rtt-wls"``, ``"lower-hull"``, ``"single"`` or ``"none"``.
    """

    offset_s: float
    scale: float
    drift_ppm: float
    residual_s: float
    error_bound_s: float
    n_points: int
    method: str

    @classmethod
    def make(
        cls,
        offset_s: float,
        scale: float,
        *,
        residual_s: float,
        error_bound_s: float,
        n_points: int,
        method: str,
    ) -> ClockFit:
        """Build a fit, deriving ``drift_ppm`` from ``scale`` so the two never disagree."""
        return cls(
            float(offset_s),
            float(scale),
            (float(scale) - 1.0) * 1e6,
            float(residual_s),
            float(error_bound_s),
            int(n_points),
            method,
        )

    @classmethod
    def identity(cls) -> ClockFit:
        """The fit used when there is no data at all: same clock, unbounded error."""
        return cls.make(
            0.0, 1.0, residual_s=math.inf, error_bound_s=math.inf, n_points=0, method="none"
        )

    @property
    def usable(self) -> bool:
        """True when the fit rests on at least one real observation."""
        return self.method != "none"

    def to_host(self, x: npt.ArrayLike) -> FloatArray:
        """Foreign seconds -> host seconds (vectorised; a scalar gives a 0-d array)."""
        return self.offset_s + self.scale * np.asarray(x, dtype=np.float64)

    def from_host(self, h: npt.ArrayLike) -> FloatArray:
        """Host seconds -> foreign seconds, the exact inverse of :meth:`to_host`."""
        return (np.asarray(h, dtype=np.float64) - self.offset_s) / self.scale


def _single(offset_s: float, n_points: int) -> ClockFit:
    """A fit from one point (or points that cannot pin a slope): scale 1, unbounded error."""
    return ClockFit.make(
        offset_s, 1.0, residual_s=0.0, error_bound_s=math.inf, n_points=n_points, method="single"
    )


def lower_hull_line(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float] | None:
    """The line below every point that is closest to them on average.

    Minimising ``sum(y_i - a - b x_i)`` subject to ``y_i >= a + b x_i`` is a linear programme
    whose optimum is the lower-convex-hull edge spanning ``mean(x)``. Returns ``(a, b)``, or
    None when fewer than two distinct x values exist.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size < 2:
        return None
    # Work relative to the first point: absolute uptimes of 1e6 s would eat the precision of
    # the cross products otherwise.
    x0, y0 = float(xs.min()), float(ys.min())
    order = np.lexsort((ys, xs))
    xs, ys = xs[order] - x0, ys[order] - y0
    keep = np.ones(xs.size, dtype=bool)
    keep[1:] = xs[1:] != xs[:-1]  # for equal x only the lowest y can touch the lower hull
    xs, ys = xs[keep], ys[keep]
    if xs.size < 2:
        return None
    hx: list[float] = []
    hy: list[float] = []
    for px, py in zip(xs.tolist(), ys.tolist(), strict=True):
        while len(hx) >= 2:
            cross = (hx[-1] - hx[-2]) * (py - hy[-2]) - (hy[-1] - hy[-2]) * (px - hx[-2])
            if cross > 0:
                break
            hx.pop()
            hy.pop()
        hx.append(px)
        hy.append(py)
    xm = float(xs.mean())
    i = int(np.searchsorted(np.asarray(hx), xm, side="right")) - 1
    i = min(max(i, 0), len(hx) - 2)
    b = (hy[i + 1] - hy[i]) / (hx[i + 1] - hx[i])
    a = hy[i] - b * hx[i]
    # Back to absolute coordinates: y - y0 = a + b (x - x0).
    return a + y0 - b * x0, b


def fit_arrival_clock(x: npt.ArrayLike, arrival_host_s: npt.ArrayLike) -> ClockFit:
    """Fit host arrival times that are late by a one-sided delay to a foreign clock.

    Args:
        x: foreign-clock seconds at which each item was produced.
        arrival_host_s: host seconds at which each item arrived (>= production time).

    Returns:
        A ``lower-hull`` fit; ``single`` (scale 1, unbounded error) from one point; ``none``
        without data. ``residual_s`` is the 10th percentile of the delays above the line —
        how tightly the points pin the envelope. ``error_bound_s`` equals it: a heuristic that
        excludes the constant minimum delay, which the method cannot observe.
    """
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(arrival_host_s, dtype=np.float64).ravel()
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size == 0:
        return ClockFit.identity()
    line = lower_hull_line(xs, ys)
    if line is None:
        j = int(np.argmin(ys - xs))
        return _single(ys[j] - xs[j], xs.size)
    a, b = line
    if not b > 0:
        # A clock that runs backwards is not a clock: the points are not one clock's arrivals.
        j = int(np.argmin(ys - xs))
        return _single(ys[j] - xs[j], xs.size)
    excess = ys - (a + b * xs)
    residual = float(np.percentile(np.maximum(excess, 0.0), 10))
    return ClockFit.make(
        a, b, residual_s=residual, error_bound_s=residual, n_points=xs.size, method="lower-hull"
    )


def fit_sensor_clock(blocks: np.ndarray, rate_hz: float) -> ClockFit:
    """Fit sensor sample time (index / rate) to host time from ``/power/blocks`` rows.

    A block's ``host_s`` is when it arrived: after its last sample was produced, by a variable
    positive delay. So the points are (``(first_index + n - 1) / rate``, ``host_s``) and the fit
    is the lower envelope (:func:`fit_arrival_clock`).

    Args:
        blocks: array with fields ``first_index``, ``n``, ``host_s`` (POWER_BLOCK_DTYPE).
        rate_hz: nominal sensor sample rate; the fitted scale absorbs its error.
    """
    if blocks.size == 0 or not (math.isfinite(rate_hz) and rate_hz > 0):
        return ClockFit.identity()
    n = blocks["n"].astype(np.float64)
    full = n > 0
    last = blocks["first_index"].astype(np.float64)[full] + n[full] - 1.0
    return fit_arrival_clock(last / rate_hz, blocks["host_s"][full])


def fit_device_clock(pings: np.ndarray, tick_hz: float) -> ClockFit:
    """Fit device time to host time from PING/PONG round trips.

    The device stamped its PONG at some host time inside ``[send_host_s, recv_host_s]``, so
    the true line lies above every send point and below every receive point. The estimate is
    the centre of that bracket: the mean of the line that hugs the send points from above and
    the one that hugs the receive points from below (each the one-sided hull estimator of
    :func:`lower_hull_line`). It uses every ping, but is steered by the fastest ones, and it
    is unbiased when the two directions have the same minimum delay (the assumption every
    two-way method makes). When the two envelopes cross (a clock jump, a mis-paired PONG),
    it falls back to a least-squares line through the midpoints of the smallest-RTT ping in
    each of up to 32 time bins, weighted by 1/RTT².

    Args:
        pings: array with fields ``send_host_s``, ``recv_host_s``, ``ticks`` (PING_DTYPE).
        tick_hz: device ticks per second (from HELLO).

    Returns:
        ``bracket-hull`` (or ``min-rtt-wls``) fit. ``residual_s`` is half the bracket width
        (largest over the fitted span), or the weighted RMS residual for the fallback;
        ``error_bound_s`` = min RTT / 2 + residual. ``single`` (unbounded error) from one
        ping; ``none`` without usable pings.
    """
    if pings.size == 0 or not (math.isfinite(tick_hz) and tick_hz > 0):
        return ClockFit.identity()
    send = pings["send_host_s"].astype(np.float64)
    recv = pings["recv_host_s"].astype(np.float64)
    x = pings["ticks"].astype(np.float64) / tick_hz
    rtt = recv - send
    ok = np.isfinite(send) & np.isfinite(recv) & np.isfinite(x) & (rtt >= 0)
    x, send, recv, rtt = x[ok], send[ok], recv[ok], rtt[ok]
    mid = (send + recv) / 2.0
    if x.size == 0:
        return ClockFit.identity()
    best = int(np.argmin(rtt))
    min_rtt = float(rtt[best])
    if x.size == 1 or float(np.ptp(x)) == 0.0:
        return _single(mid[best] - x[best], x.size)
    above = lower_hull_line(x, recv)
    below = lower_hull_line(x, -send)
    if above is not None and below is not None:
        ends = np.array([x.min(), x.max()])
        top = above[0] + above[1] * ends
        bottom = -(below[0] + below[1] * ends)
        if np.all(top >= bottom):
            a = (above[0] - below[0]) / 2.0
            b = (above[1] - below[1]) / 2.0
            if b > 0:
                half = float(np.max(top - bottom)) / 2.0
                return ClockFit.make(
                    a,
                    b,
                    residual_s=half,
                    error_bound_s=min_rtt / 2.0 + half,
                    n_points=x.size,
                    method="bracket-hull",
                )
    return _fit_min_rtt(x, mid, rtt)


def _fit_min_rtt(x: FloatArray, mid: FloatArray, rtt: FloatArray) -> ClockFit:
    """Weighted least squares through the smallest-RTT midpoints, binned over time."""
    best = int(np.argmin(rtt))
    min_rtt = float(rtt[best])
    n_bins = int(min(32, max(1, x.size // 4)))
    edges = np.linspace(float(x.min()), float(x.max()), n_bins + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
    chosen = []
    for k in range(n_bins):
        members = np.flatnonzero(which == k)
        if members.size:
            chosen.append(int(members[np.argmin(rtt[members])]))
    sel = np.asarray(chosen, dtype=np.intp)
    if np.unique(x[sel]).size < 2:
        sel = np.arange(x.size)
    xs, ys = x[sel], mid[sel]
    w = 1.0 / np.maximum(rtt[sel], 1e-9) ** 2
    w = w / w.sum()
    xm = float(np.sum(w * xs))
    ym = float(np.sum(w * ys))
    dx = xs - xm
    b = float(np.sum(w * dx * (ys - ym)) / np.sum(w * dx * dx))
    a = ym - b * xm
    if not b > 0:
        return _single(mid[best] - x[best], x.size)
    resid = ys - (a + b * xs)
    residual = float(np.sqrt(np.sum(w * resid * resid)))
    return ClockFit.make(
        a,
        b,
        residual_s=residual,
        error_bound_s=min_rtt / 2.0 + residual,
        n_points=x.size,
        method="min-rtt-wls",
    )
