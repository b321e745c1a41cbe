"""The rolling summary across the runs of a scheduled recording."""

from __future__ import annotations

import pytest

from tinytelem.analysis.rolling import render_rolling, rolling_summary


def _run(run_id: int, tok_s: float, energy_j: float | None = None, complete: bool = True,
         generated: int = 10) -> dict[str, object]:
    return {"run_id": run_id, "complete": complete, "generated": generated,
            "decode_tok_s": tok_s, "energy_j": energy_j}


def test_drift_is_the_slope_over_run_index_and_time() -> None:
    runs = [_run(i + 1, 30.0 - 0.5 * i, energy_j=0.2 + 0.01 * i) for i in range(5)]
    begin = {i + 1: 60.0 * i for i in range(5)}  # one run a minute
    r = rolling_summary(runs, begin)
    assert r["runs"] == r["complete"] == 5
    assert r["tok_s"]["mean"] == pytest.approx(29.0)
    assert r["tok_s"]["last"] == pytest.approx(28.0)
    assert r["drift_tok_s_per_run"] == pytest.approx(-0.5)
    assert r["drift_tok_s_per_hour"] == pytest.approx(-30.0)
    assert r["drift_pct_per_hour"] == pytest.approx(-30.0 / 29.0 * 100)
    assert r["j_per_token"]["mean"] == pytest.approx(0.022)
    assert "tok/s per run" in render_rolling(r)


def test_unfinished_runs_and_missing_energy_are_left_out() -> None:
    runs = [_run(1, 20.0), _run(2, float("nan")), _run(3, 25.0, complete=False)]
    r = rolling_summary(runs)
    assert r["runs"] == 3 and r["complete"] == 1
    assert r["drift_tok_s_per_run"] is None and r["drift_tok_s_per_hour"] is None
    assert r["j_per_token"]["mean"] is None
    assert "n/a" in render_rolling(r)
    empty = rolling_summary([])
    assert empty["tok_s"]["mean"] is None and empty["drift_pct_per_hour"] is None
