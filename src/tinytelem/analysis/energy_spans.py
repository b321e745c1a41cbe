"""Energy per token, per phase and per layer span, net of idle, with an uncertainty.

Builds on :class:`tinytelem.analysis.energy.PowerTrace` (power samples on the device time
axis, exact integration over any window). For each window this module reports

- ``gross_j``: energy the sensor saw in the window;
- ``net_j``: gross minus the idle baseline (mean power while the device was idle, measured in
  windows outside inference) times the window's covered time -- the energy the work itself
  cost, which is what compares across boards with different idle draw;
- ``u_j``: a standard uncertainty combining, in quadrature, the calibration gain and offset
  uncertainties, the baseline's standard error, and the alignment error (moving the window's
  edges by the alignment error bound changes the energy by about ``p(edge) * error``).

Windows: token ``k`` covers the time from the previous token of the same run (INFER_BEGIN for
the first) to its own TOKEN event, because TOKEN is sent when the token's work is done. Phases:
prefill from INFER_BEGIN to the last PREFILL token, decode from there to the last DECODE token.
Layer spans are the SPAN rows (``begin_s`` .. ``end_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.energy import PowerTrace

__all__ = [
    "EnergyBudget",
    "EnergyWindows",
    "energy_breakdown",
    "energy_windows",
    "idle_baseline",
    "layer_energy",
    "phase_windows",
    "token_windows",
]

FloatArray = npt.NDArray[np.float64]
PREFILL = 0
DECODE = 1


@dataclass(frozen=True)
class EnergyBudget:
    """Error sources that widen every energy figure.

    Attributes:
        gain_rel_u: relative standard uncertainty of the current gain (calibration).
        offset_u_w: standard uncertainty of the zero offset, in watts (current offset x V).
        alignment_error_s: alignment error bound (device -> sensor), seconds.
        baseline_w: idle power subtracted from every window.
        baseline_u_w: standard error of ``baseline_w``.
    """

    gain_rel_u: float = 0.0
    offset_u_w: float = 0.0
    alignment_error_s: float = 0.0
    baseline_w: float = 0.0
    baseline_u_w: float = 0.0


@dataclass(frozen=True)
class EnergyWindows:
    """Energy in a set of windows (arrays aligned with the windows)."""

    t0_s: FloatArray
    t1_s: FloatArray
    gross_j: FloatArray
    net_j: FloatArray
    u_j: FloatArray
    covered_s: FloatArray

    @property
    def coverage(self) -> FloatArray:
        """Fraction of each window the sensor covered (gaps lower it)."""
        dur = self.t1_s - self.t0_s
        return np.where(dur > 0, self.covered_s / np.where(dur > 0, dur, 1.0), 0.0)

    def total(self) -> tuple[float, float]:
        """Sum of ``net_j`` and its uncertainty (errors taken as fully correlated between
        windows -- calibration and baseline are shared -- so they add linearly)."""
        return float(self.net_j.sum()), float(self.u_j.sum())


def idle_baseline(trace: PowerTrace, windows: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean idle power over ``windows`` and its standard error (NaN, inf without data)."""
    powers: list[FloatArray] = []
    for t0, t1 in windows:
        sel = (trace.t_s >= t0) & (trace.t_s + trace.dt_s <= t1)
        powers.append(trace.power_w[sel])
    p = np.concatenate(powers) if powers else np.zeros(0)
    if p.size == 0:
        return math.nan, math.inf
    # Samples are correlated (noise is not white at 100 kS/s): treat blocks of 100 samples as
    # independent when estimating the standard error.
    n_eff = max(1.0, p.size / 100.0)
    return float(p.mean()), float(p.std() / math.sqrt(n_eff))


def energy_windows(trace: PowerTrace, t0_s: npt.ArrayLike, t1_s: npt.ArrayLike,
                   budget: EnergyBudget | None = None) -> EnergyWindows:
    """Gross and net energy with uncertainty for each window ``[t0, t1]`` (device seconds)."""
    b = budget or EnergyBudget()
    t0 = np.asarray(t0_s, dtype=np.float64)
    t1 = np.asarray(t1_s, dtype=np.float64)
    gross, covered = trace.integrate(t0, t1)
    base = b.baseline_w if math.isfinite(b.baseline_w) else 0.0
    net = gross - base * covered
    err = b.alignment_error_s
    if err > 0 and trace.size:
        e0, c0 = trace.integrate(t0 - err, t0 + err)
        e1, c1 = trace.integrate(t1 - err, t1 + err)
        # Energy that a shift of the edges by +/- err moves in or out (minus idle: the
        # baseline moves with the window).
        u_align = np.abs(e0 - base * c0) / 2.0 + np.abs(e1 - base * c1) / 2.0
    else:
        u_align = np.zeros_like(gross)
    u_gain = b.gain_rel_u * np.abs(gross)
    u_off = b.offset_u_w * covered
    u_base = (b.baseline_u_w if math.isfinite(b.baseline_u_w) else 0.0) * covered
    u = np.sqrt(u_gain**2 + u_off**2 + u_base**2 + u_align**2)
    return EnergyWindows(t0, t1, gross, net, u, covered)


def token_windows(tokens: np.ndarray, infer_begin_s: float) -> tuple[FloatArray, FloatArray]:
    """Token windows of one run: (start, end) per TOKEN row, sorted by token index."""
    rows = np.sort(tokens, order="index")
    end = rows["device_s"].astype(np.float64)
    start = np.concatenate(([infer_begin_s], end[:-1]))
    return start, end


def phase_windows(tokens: np.ndarray, infer_begin_s: float) -> dict[str, tuple[float, float]]:
    """``prefill`` and ``decode`` windows of one run (absent when the phase has no token)."""
    out: dict[str, tuple[float, float]] = {}
    pre = tokens[tokens["phase"] == PREFILL]
    dec = tokens[tokens["phase"] == DECODE]
    boundary = float(pre["device_s"].max()) if pre.size else infer_begin_s
    if pre.size:
        out["prefill"] = (infer_begin_s, boundary)
    if dec.size:
        out["decode"] = (boundary, float(dec["device_s"].max()))
    return out


def layer_energy(trace: PowerTrace, spans: np.ndarray, budget: EnergyBudget | None = None
                 ) -> dict[int, tuple[float, float]]:
    """Net energy and uncertainty summed per layer over SPAN rows (op LAYER or any op)."""
    res = energy_windows(trace, spans["begin_s"], spans["end_s"], budget)
    out: dict[int, tuple[float, float]] = {}
    for layer in np.unique(spans["layer"]):
        sel = spans["layer"] == layer
        out[int(layer)] = (float(res.net_j[sel].sum()), float(res.u_j[sel].sum()))
    return out


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


def energy_breakdown(trace: PowerTrace | None, runs: np.ndarray, tokens: np.ndarray,
                     spans: np.ndarray, alignment_error_s: float) -> dict[str, object] | None:
    """Net-of-idle energy with uncertainties for the summary: per phase, per token, per layer.

    Pools every run that ended OK. The idle baseline comes from the samples outside those
    runs (before the first, after the last); the alignment error bound widens each window's
    edges. None when there is no power or no completed run.
    """
    if trace is None or trace.size == 0 or runs.size == 0:
        return None
    ok = runs[runs["status"] == 0]
    if ok.size == 0:
        return None
    start, end = float(trace.t_s[0]), float(trace.t_s[-1] + trace.dt_s)
    first, last = float(ok["begin_s"].min()), float(ok["end_s"].max())
    base, base_u = idle_baseline(trace, [(start, first), (last, end)])
    budget = EnergyBudget(alignment_error_s=_finite(alignment_error_s),
                          baseline_w=_finite(base), baseline_u_w=_finite(base_u))
    phases = {"prefill": [0.0, 0.0], "decode": [0.0, 0.0]}
    token_net: list[FloatArray] = []
    token_u: list[FloatArray] = []
    for run in ok:
        rows = tokens[tokens["run_id"] == run["run_id"]]
        if rows.size == 0:
            continue
        for name, (t0, t1) in phase_windows(rows, float(run["begin_s"])).items():
            net, u = energy_windows(trace, [t0], [t1], budget).total()
            phases[name][0] += net
            phases[name][1] += u
        t0s, t1s = token_windows(rows, float(run["begin_s"]))
        decode = np.sort(rows, order="index")["phase"] == DECODE
        res = energy_windows(trace, t0s[decode], t1s[decode], budget)
        token_net.append(res.net_j)
        token_u.append(res.u_j)
    per_token = np.concatenate(token_net) if token_net else np.zeros(0)
    per_token_u = np.concatenate(token_u) if token_u else np.zeros(0)
    # Whole-layer spans (op LAYER = 0) of the completed runs.
    whole = spans[np.isin(spans["run_id"], ok["run_id"]) & (spans["layer"] != 0xFFFF)
                  & (spans["op"] == 0)]
    layers = layer_energy(trace, whole, budget) if whole.size else {}
    return {
        "baseline_w": base if math.isfinite(base) else None,
        "baseline_u_w": base_u if math.isfinite(base_u) else None,
        "alignment_error_s": budget.alignment_error_s,
        "prefill_j": {"net": phases["prefill"][0], "u": phases["prefill"][1]},
        "decode_j": {"net": phases["decode"][0], "u": phases["decode"][1]},
        "per_token_j": {
            "n": int(per_token.size),
            "mean": float(per_token.mean()) if per_token.size else None,
            "u_mean": float(per_token_u.mean()) if per_token_u.size else None,
        },
        "per_layer_j": [{"layer": k, "net": v[0], "u": v[1]} for k, v in sorted(layers.items())],
    }
