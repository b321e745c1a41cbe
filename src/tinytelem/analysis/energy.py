"""Power samples placed on the device clock, and exact energy over arbitrary windows.

Each sample ``k`` (sensor index ``i_k``) stands for the interval
``[t_k, t_k + dt)`` where ``t_k`` is ``i_k / rate`` mapped sensor -> host -> device and ``dt``
is one sample period in device seconds. Power is constant over the interval, so the energy in
any window is the exact integral of that step function: whole samples inside, fractions at the
edges. Missing samples (gaps) contribute neither energy nor covered time, which is what lets
callers report coverage and an unbiased average power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.clock import ClockFit

__all__ = ["PowerTrace", "index_segments", "sample_indices"]

FloatArray = npt.NDArray[np.float64]


def sample_indices(
    blocks: np.ndarray, n_samples: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp], npt.NDArray[np.intp], str]:
    """Sensor sample index of stored samples, from the blocks that delivered them.

    Samples are stored back to back in block order; a block's ``offset`` field (when the
    table has one) says where its first sample sits, otherwise offsets are the running sum
    of ``n``. Returns (sensor indices, positions in the stored array, block row of each
    sample, warning or "").
    Without blocks the samples are taken as contiguous from index 0; samples a block claims
    beyond the stored array (a recorder killed between writes) are dropped with a warning.
    """
    if blocks.size == 0:
        warn = "no /power/blocks rows: samples assumed contiguous from index 0" if n_samples else ""
        pos = np.arange(n_samples, dtype=np.intp)
        return pos.astype(np.int64), pos, np.zeros(n_samples, dtype=np.intp), warn
    n = blocks["n"].astype(np.int64)
    if "offset" in (blocks.dtype.names or ()):
        starts = blocks["offset"].astype(np.int64)
    else:
        starts = np.cumsum(n) - n
    total = int(n.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    pos = np.repeat(starts, n) + within
    idx = np.repeat(blocks["first_index"].astype(np.int64), n) + within
    rows = np.repeat(np.arange(blocks.size, dtype=np.intp), n)
    keep = (pos >= 0) & (pos < n_samples)
    warn = ""
    if not np.all(keep):
        warn = (
            f"power blocks describe {int(np.count_nonzero(~keep))} samples beyond the "
            f"{n_samples} stored; they were ignored"
        )
    return idx[keep], pos[keep].astype(np.intp), rows[keep], warn


def index_segments(blocks: np.ndarray) -> list[npt.NDArray[np.intp]]:
    """Block rows split where the sensor index goes backwards (the sensor restarted its
    counter); each segment has its own sensor clock and needs its own fit."""
    if blocks.size == 0:
        return []
    first = blocks["first_index"].astype(np.int64)
    end = first + blocks["n"].astype(np.int64)
    resets = np.flatnonzero(first[1:] < end[:-1]) + 1
    return list(np.split(np.arange(blocks.size, dtype=np.intp), resets))


@dataclass(frozen=True, slots=True)
class PowerTrace:
    """Power samples on the device time axis, sorted by time.

    Attributes:
        t_s: start of each sample's interval, device seconds (ascending).
        dt_s: sample period in device seconds.
        power_w: watts per sample (finite).
        cum_energy_j: energy before each sample (``size + 1`` values, starting at 0), computed
            once at construction: a report integrates thousands of windows over millions of
            samples, and recomputing the running sum per call made that quadratic.
    """

    t_s: FloatArray
    dt_s: float
    power_w: FloatArray
    cum_energy_j: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cum = np.concatenate(([0.0], np.cumsum(np.asarray(self.power_w) * self.dt_s)))
        object.__setattr__(self, "cum_energy_j", cum)

    @classmethod
    def build(
        cls,
        indices: npt.ArrayLike,
        current_a: npt.ArrayLike,
        *,
        voltage_v: float,
        rate_hz: float,
        sensor: ClockFit,
        device: ClockFit,
    ) -> PowerTrace:
        """Place samples: index -> sensor seconds -> host (sensor fit) -> device (inverse fit).

        ``indices`` and ``current_a`` pair up one to one. Non-finite currents count as
        missing samples.
        """
        idx = np.asarray(indices, dtype=np.float64)
        p = np.asarray(current_a, dtype=np.float64) * float(voltage_v)
        ok = np.isfinite(p)
        t = device.from_host(sensor.to_host(idx[ok] / rate_hz))
        order = np.argsort(t, kind="stable")
        dt = (1.0 / rate_hz) * sensor.scale / device.scale
        return cls(np.asarray(t[order], dtype=np.float64), float(dt), p[ok][order])

    @classmethod
    def merge(cls, parts: list[PowerTrace]) -> PowerTrace:
        """One trace from several (sensor counter segments), re-sorted by time."""
        if len(parts) == 1:
            return parts[0]
        t = np.concatenate([p.t_s for p in parts])
        p_w = np.concatenate([p.power_w for p in parts])
        order = np.argsort(t, kind="stable")
        dt = max(parts, key=lambda p: p.size).dt_s
        return cls(t[order], dt, p_w[order])

    @property
    def size(self) -> int:
        """Number of usable samples."""
        return int(self.t_s.size)

    def _cumulative(self, at: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Energy and covered time from the start of the trace up to each time in ``at``."""
        if self.size == 0:
            zero = np.zeros_like(at)
            return zero, zero
        cum_e = self.cum_energy_j
        k = np.searchsorted(self.t_s, at, side="right") - 1
        kc = np.clip(k, 0, self.size - 1)
        frac = np.where(k >= 0, np.clip(at - self.t_s[kc], 0.0, self.dt_s), 0.0)
        energy = np.where(k >= 0, cum_e[kc] + self.power_w[kc] * frac, 0.0)
        covered = np.where(k >= 0, kc * self.dt_s + frac, 0.0)
        return energy, covered

    def integrate(self, t0: npt.ArrayLike, t1: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Energy (J) and covered time (s) in each window ``[t0, t1]`` (vectorised).

        Assumes samples do not overlap in time, which holds for one sensor at a fixed rate.
        """
        a = np.asarray(t0, dtype=np.float64)
        b = np.asarray(t1, dtype=np.float64)
        ea, ca = self._cumulative(a)
        eb, cb = self._cumulative(b)
        return eb - ea, cb - ca

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """Energy (J) and covered time (s) in one window; zeros for an empty or bad window."""
        if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
            return 0.0, 0.0
        e, c = self.integrate(t0, t1)
        return float(e), float(c)
