"""The rolling summary of a scheduled recording (``record --repeat``): how runs compare.

Built from the per-run entries of the summary (``summary["runs"]``) and the runs' device start
times, so it says whether throughput and energy stay put over hours: the mean, spread and last
value of decode tok/s and J/token, and the drift, the least-squares slope of tok/s over the run
index and over time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["render_rolling", "rolling_summary"]


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "last": None}
    return {"mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()), "last": float(values[-1])}


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of y over x (None with fewer than 2 distinct x)."""
    if x.size < 2 or float(np.ptp(x)) == 0.0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def rolling_summary(runs: Sequence[Mapping[str, Any]],
                    begin_s: Mapping[int, float] | None = None) -> dict[str, Any]:
    """Across-run figures of ``runs`` (summary run entries, in run order).

    Args:
        runs: ``summary["runs"]``: run_id, complete, generated, decode_tok_s, energy_j, ...
        begin_s: run_id -> the run's start on the device clock (seconds); gives the drift
            over time. Runs without one count only for the drift over the run index.

    Returns:
        ``runs`` (all), ``complete`` (ended ok with a decode rate), ``tok_s`` and
        ``j_per_token`` statistics (mean, std, min, max, last; None without data),
        ``drift_tok_s_per_run``, ``drift_tok_s_per_hour`` and ``drift_pct_per_hour`` (slope
        relative to the mean). Plain JSON values.
    """
    done = [r for r in runs if r.get("complete") and _finite(r.get("decode_tok_s"))]
    tok_s = np.array([float(r["decode_tok_s"]) for r in done])
    index = np.arange(tok_s.size, dtype=np.float64)
    energy = [float(r["energy_j"]) / int(r["generated"]) for r in done
              if _finite(r.get("energy_j")) and int(r.get("generated") or 0) > 0]
    per_hour = None
    if begin_s is not None:
        timed = [(begin_s[int(r["run_id"])], float(r["decode_tok_s"])) for r in done
                 if _finite(begin_s.get(int(r["run_id"])))]
        if timed:
            t, v = np.array(timed).T
            slope = _slope(t, v)
            per_hour = None if slope is None else slope * 3600.0
    mean = float(tok_s.mean()) if tok_s.size else None
    return {
        "runs": len(runs),
        "complete": len(done),
        "tok_s": _stats(tok_s),
        "j_per_token": _stats(np.array(energy)),
        "drift_tok_s_per_run": _slope(index, tok_s),
        "drift_tok_s_per_hour": per_hour,
        "drift_pct_per_hour": (None if per_hour is None or not mean
                               else 100.0 * per_hour / mean),
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def render_rolling(rolling: dict[str, Any]) -> str:
    """The rolling summary as three lines of text (``record --repeat``, ``trace info``)."""
    tok, joule = rolling["tok_s"], rolling["j_per_token"]

    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = [
        f"rolling over {rolling['complete']} of {rolling['runs']} runs: "
        f"decode {num(tok['mean'], '.2f')} tok/s (sd {num(tok['std'], '.2f')}, "
        f"min {num(tok['min'], '.2f')}, max {num(tok['max'], '.2f')}, "
        f"last {num(tok['last'], '.2f')})",
        f"energy {num(joule['mean'], '.3g')} J/token (last {num(joule['last'], '.3g')})",
        f"drift {num(rolling['drift_tok_s_per_run'], '+.3g')} tok/s per run, "
        f"{num(rolling['drift_pct_per_hour'], '+.3g')} % per hour",
    ]
    return "\n".join(lines)
