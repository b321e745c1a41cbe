"""load_report_data places the power samples once and shares them with every consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.report.helpers import write_synthetic
from tinytelem.analysis import metrics, rundata
from tinytelem.analysis.loader import load_run_data
from tinytelem.report.data import load_report_data


def test_power_placed_once_and_equal_to_public_api(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "synthetic.h5"
    truth = write_synthetic(path)
    calls: list[int] = []
    real = metrics.place_power

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "place_power", counting)
    rd = load_report_data(path)
    assert len(calls) == 1
    assert rd.power is not None and rd.power.size > 0
    expected = rundata.power_trace(load_run_data(path))
    assert expected is not None
    assert np.array_equal(rd.power.t_s, expected.t_s)
    assert np.array_equal(rd.power.power_w, expected.power_w)
    ffn = next(r for r in rd.bottlenecks.ops if r.op == "ffn")
    assert ffn.energy_j is not None
    total = ffn.energy_j * rd.bottlenecks.forward_passes
    assert total == pytest.approx(truth["ffn_energy"], rel=0.02)
