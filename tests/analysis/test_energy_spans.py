"""Energy per token / phase / layer on synthetic waveforms with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest

from tinytelem.analysis.clock import ClockFit
from tinytelem.analysis.energy import PowerTrace
from tinytelem.analysis.energy_spans import (
    EnergyBudget,
    energy_windows,
    idle_baseline,
    layer_energy,
    phase_windows,
    token_windows,
)
from tinytelem.trace.schema import SPAN_DTYPE, TOKEN_DTYPE

RATE = 100_000.0
V = 3.3


def _trace(power_fn, t_end: float, noise: float = 0.0, seed: int = 0) -> PowerTrace:
    idx = np.arange(int(t_end * RATE))
    t = idx / RATE
    p = power_fn(t + 0.5 / RATE)
    if noise:
        p = p + np.random.default_rng(seed).normal(0, noise, p.size)
    ident = ClockFit.make(0.0, 1.0, residual_s=0, error_bound_s=0, n_points=2, method="x")
    return PowerTrace.build(idx, p / V, voltage_v=V, rate_hz=RATE, sensor=ident, device=ident)


def test_sensors_energy_per_token_within_1pct() -> None:
    idle_w = 0.05
    begin = 0.5
    # 4 prefill tokens of 8 ms at 0.4 W above idle, then 20 decode tokens whose duration and
    # power vary; each token's power is a raised sine so energy is not a plain rectangle.
    durs = np.r_[np.full(4, 0.008), np.linspace(0.02, 0.04, 20)]
    amps = np.r_[np.full(4, 0.4), np.linspace(0.2, 0.5, 20)]
    ends = begin + np.cumsum(durs)
    starts = ends - durs

    def power(t: np.ndarray) -> np.ndarray:
        p = np.full(t.shape, idle_w)
        k = np.searchsorted(ends, t, side="right")
        inside = (t >= begin) & (k < ends.size)
        kk = np.minimum(k, ends.size - 1)
        phase = (t - starts[kk]) / durs[kk]
        return np.where(inside, p + amps[kk] * (1 - np.cos(2 * np.pi * phase)), p)

    tr = _trace(power, ends[-1] + 0.5, noise=0.01)
    base, base_u = idle_baseline(tr, [(0.0, begin), (ends[-1] + 0.01, ends[-1] + 0.5)])
    assert base == pytest.approx(idle_w, rel=1e-3)
    tokens = np.zeros(24, dtype=TOKEN_DTYPE)
    tokens["index"] = np.arange(24)
    tokens["phase"] = np.r_[np.zeros(4), np.ones(20)]
    tokens["device_s"] = ends
    t0, t1 = token_windows(tokens[::-1], begin)
    budget = EnergyBudget(gain_rel_u=0.002, offset_u_w=1e-4, alignment_error_s=5e-6,
                          baseline_w=base, baseline_u_w=base_u)
    res = energy_windows(tr, t0, t1, budget)
    analytic = amps * durs  # integral of a(1 - cos) over one period, idle removed
    np.testing.assert_allclose(res.net_j, analytic, rtol=0.01)
    np.testing.assert_allclose(res.gross_j, analytic + idle_w * durs, rtol=0.01)
    assert np.all(res.u_j > 0) and np.all(res.u_j < 0.01 * res.gross_j + 1e-5)
    np.testing.assert_allclose(res.coverage, 1.0, atol=1e-6)
    phases = phase_windows(tokens, begin)
    pre = energy_windows(tr, *map(np.array, zip(phases["prefill"], strict=True)), budget)
    dec = energy_windows(tr, *map(np.array, zip(phases["decode"], strict=True)), budget)
    assert pre.net_j[0] == pytest.approx(analytic[:4].sum(), rel=0.01)
    assert dec.net_j[0] == pytest.approx(analytic[4:].sum(), rel=0.01)
    total, u = res.total()
    assert total == pytest.approx(analytic.sum(), rel=0.01) and u > 0
    # Per layer: two layers alternate inside each decode token.
    spans = np.zeros(40, dtype=SPAN_DTYPE)
    spans["layer"] = np.tile([0, 1], 20)
    spans["begin_s"] = np.repeat(starts[4:], 2) + np.tile([0.0, 0.5], 20) * np.repeat(durs[4:], 2)
    spans["end_s"] = spans["begin_s"] + np.repeat(durs[4:], 2) / 2
    per_layer = layer_energy(tr, spans, budget)
    # first half of (1 - cos) and second half carry equal energy
    assert per_layer[0][0] == pytest.approx(analytic[4:].sum() / 2, rel=0.01)
    assert per_layer[1][0] == pytest.approx(analytic[4:].sum() / 2, rel=0.01)


def test_sensors_energy_alignment_error_widens_uncertainty() -> None:
    tr = _trace(lambda t: np.where((t > 0.1) & (t < 0.2), 1.0, 0.0), 0.3)
    tight = energy_windows(tr, [0.1], [0.2], EnergyBudget(alignment_error_s=1e-6))
    loose = energy_windows(tr, [0.1], [0.2], EnergyBudget(alignment_error_s=1e-3))
    assert loose.u_j[0] > 100 * tight.u_j[0]
    assert loose.u_j[0] == pytest.approx(1e-3, rel=0.05)  # half of each edge's 2 ms x 1 W
    nan_base = energy_windows(tr, [0.1], [0.2], EnergyBudget(baseline_w=float("nan")))
    assert nan_base.net_j[0] == pytest.approx(0.1, rel=1e-3)
    assert idle_baseline(tr, [(5.0, 6.0)])[0] != idle_baseline(tr, [(5.0, 6.0)])[0]  # NaN
