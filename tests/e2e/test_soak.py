"""A short soak (bench/soak.py): recording without end must drop nothing and not grow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_ninety_seconds_of_repeated_runs_drop_nothing_and_stay_bounded() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "90", "--every", "15",
         "--warmup", "30", "--rss-growth-mb", "16", "--json"],
        capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, (result, proc.stderr[-2000:])
    assert result["ok"] and result["dropped_total"] == 0, result["drops"]
    assert result["rss_growth_mb"] <= 16
    assert result["runs"] >= 5 and result["power_samples"] > 5_000_000
    assert len(result["samples"]) >= 6 and result["bytes_per_hour"] > 0
    assert result["rolling"]["complete"] >= 5
