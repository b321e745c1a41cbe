"""A report of a recording with many runs: every run in the aggregates, a bounded detail, and
the report says which runs the detail holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.report.helpers import FFN_WATTS, write_many_runs
from tinytelem.analysis.rundata import in_windows
from tinytelem.report.data import detail_runs, load_report_data
from tinytelem.report.writers import write_report

N_RUNS = 260
DETAIL = 40


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    path = tmp_path_factory.mktemp("many") / "many.h5"
    return path, write_many_runs(path, N_RUNS)


def test_detail_is_bounded_and_aggregates_pool_every_run(
        many: tuple[Path, dict[str, float]]) -> None:
    path, truth = many
    rd = load_report_data(path, max_detail_runs=DETAIL)
    full = load_report_data(path, max_detail_runs=N_RUNS)
    assert full.detail is None and full.rolling is None
    assert rd.detail is not None and rd.detail.runs == N_RUNS
    ids = rd.detail.run_ids
    assert len(ids) == DETAIL and ids[0] == 0 and ids[-1] == N_RUNS - 1
    # the detail holds those runs only
    assert set(rd.data.spans["run_id"].tolist()) == set(ids)
    assert rd.data.spans.size == DETAIL * truth["spans_per_run"]
    assert rd.data.tokens.size == DETAIL * truth["tokens_per_run"]
    assert rd.events.size == DETAIL * truth["frames_per_run"]
    assert full.events.size == N_RUNS * truth["frames_per_run"]
    # the aggregates pool every run, exactly as without the cap
    assert rd.summary == full.summary
    assert len(rd.summary["runs"]) == N_RUNS
    assert rd.summary["power"]["energy_j"] == pytest.approx(truth["runs_energy_j"], rel=0.01)
    assert rd.rolling is not None and rd.rolling["runs"] == N_RUNS
    assert rd.rolling["complete"] == N_RUNS
    # per-pass figures from the detailed runs equal the whole recording's (identical runs)
    bn, bn_full = rd.bottlenecks, full.bottlenecks
    assert bn.forward_passes * N_RUNS == bn_full.forward_passes * DETAIL
    ffn = {r.op: r for r in bn.ops}["ffn"]
    ffn_full = {r.op: r for r in bn_full.ops}["ffn"]
    assert ffn.measured_s == pytest.approx(truth["ffn_s_per_pass"], rel=1e-6)
    assert ffn.measured_s == pytest.approx(ffn_full.measured_s, rel=1e-9)
    assert ffn.energy_j == pytest.approx(truth["ffn_s_per_pass"] * FFN_WATTS, rel=0.1)
    assert ffn.energy_j == pytest.approx(ffn_full.energy_j, rel=1e-6)
    assert bn.tracing is not None and bn_full.tracing is not None
    assert bn.tracing.share == pytest.approx(bn_full.tracing.share, rel=1e-9)
    assert bn.tracing.frames * N_RUNS == bn_full.tracing.frames * DETAIL
    assert any(f"from {DETAIL} runs" in w for w in bn.warnings)
    assert not any("runs evenly spaced" in w for w in bn_full.warnings)


def test_every_output_states_the_detail(many: tuple[Path, dict[str, float]], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, truth = many
    monkeypatch.setattr("tinytelem.report.data.DETAIL_RUNS", DETAIL)
    out = write_report([path], "json", tmp_path / "r.json")
    doc = json.loads(out.read_text())["traces"][0]
    assert doc["detail"]["runs"] == N_RUNS and doc["detail"]["detailed_runs"] == DETAIL
    assert doc["rolling"]["runs"] == N_RUNS
    html = write_report([path], "html", tmp_path / "r.html").read_text()
    assert f"{N_RUNS:,} runs" in html and f"from {DETAIL} runs evenly spaced" in html
    assert "Runs (aggregated)" in html
    write_report([path], "csv", tmp_path / "csv")
    tokens = (tmp_path / "csv" / "tokens.csv").read_text().splitlines()
    assert len(tokens) - 1 == DETAIL * truth["tokens_per_run"]
    runs = (tmp_path / "csv" / "runs.csv").read_text().splitlines()
    assert len(runs) - 1 == N_RUNS
    assert "detailed_runs" in (tmp_path / "csv" / "detail.csv").read_text()
    perfetto = json.loads(write_report([path], "perfetto", tmp_path / "p.json").read_text())
    names = [e["args"]["name"] for e in perfetto["traceEvents"] if e["name"] == "process_name"]
    assert names and f"{DETAIL} of {N_RUNS} runs detailed" in names[0]
    assert sum(e.get("cat") == "token" for e in perfetto["traceEvents"]) \
        == DETAIL * truth["tokens_per_run"]


def test_up_to_the_limit_nothing_is_sampled(many: tuple[Path, dict[str, float]],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = many
    monkeypatch.setattr("tinytelem.report.data.DETAIL_RUNS", N_RUNS)
    doc = json.loads(write_report([path], "json", tmp_path / "r.json").read_text())
    assert "detail" not in doc["traces"][0] and "rolling" not in doc["traces"][0]
    assert not any("evenly spaced" in w for w in doc["traces"][0]["bottlenecks"]["warnings"])


def test_detail_runs_evenly_spaced() -> None:
    runs = np.zeros(10, dtype=[("run_id", "<u4"), ("begin_s", "<f8")])
    runs["run_id"] = np.arange(10)[::-1]
    runs["begin_s"] = np.arange(10)[::-1] * 1.0  # table order is not start order
    assert detail_runs(runs, 10) is None
    assert detail_runs(runs, 4) == (0, 3, 6, 9)
    assert detail_runs(runs, 2) == (0, 9)


def test_in_windows_matches_the_loop() -> None:
    rng = np.random.default_rng(4)
    begin = rng.uniform(0, 100, 50)
    end = begin + rng.uniform(-1, 5, 50)  # some empty (end < begin), some overlapping
    begin[3] = np.nan
    t = np.concatenate([rng.uniform(-5, 110, 2000), begin[:10], end[:10], [np.nan]])
    loop = np.zeros(t.size, dtype=bool)
    for b, e in zip(begin, end, strict=True):
        loop |= (t >= b) & (t <= e)
    assert np.array_equal(in_windows(t, begin, end), loop)
