"""A summary of a recording with more power samples than it loads: the stored statistics stand
for them, the totals stay those of the samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.analysis.loader import load_run_data
from tinytelem.analysis.summary import build_summary
from tinytelem.cli.main import cli


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "r.h5"
    result = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--sensor", "sim", "--run", "--repeat", "3",
        "--tokens", "16", "--seed", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("segments", [False, True])
def test_statistics_stand_for_samples_beyond_the_limit(recording: Path, segments: bool) -> None:
    source = [recording] if segments else recording
    full = build_summary(load_run_data(source), None)
    n = full["power"]["n_samples"]
    assert n > 10_000
    data = load_run_data(source, max_samples=n // 50)
    assert data.power_current_a.size == 0 and data.power_samples_summarised == n
    assert data.power_buckets is not None and 0 < data.power_buckets.size <= n // 50
    limited = build_summary(data, None)
    assert limited["power"]["n_samples"] == n
    assert limited["power"]["energy_j"] == pytest.approx(full["power"]["energy_j"], rel=0.01)
    for a, b in zip(full["runs"], limited["runs"], strict=True):
        assert b["energy_j"] == pytest.approx(a["energy_j"], rel=0.02)
    assert any("more than a summary loads" in w for w in limited["warnings"])
    assert not any("more than a summary loads" in w for w in full["warnings"])
    # Under the limit nothing changes: the samples are loaded.
    assert load_run_data(source, max_samples=n).power_current_a.size == n
    json.dumps(limited, allow_nan=False)
