"""A fleet's directories as compare and report read them: a lab's (real twins profiled by
``profile --session``) and a collector's (those summaries kept from MQTT messages)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.analysis.compare import compare_runs
from tinytelem.analysis.fleet import TracesNeeded, fleet_runs
from tinytelem.cli.main import cli
from tinytelem.live.collect import Collector
from tinytelem.live.schema import encode

from ..session.helpers import TWO_TWINS


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab")
    (root / "lab.toml").write_text(TWO_TWINS)
    result = CliRunner().invoke(cli, ["profile", "--session", str(root / "lab.toml"), "--out",
                                      str(root / "runs"), "--tokens", "4", "--trace-level",
                                      "tokens", "--json"])
    assert result.exit_code == 0, result.output
    return root / "runs"


@pytest.fixture
def collected(lab_dir: Path, tmp_path: Path) -> Path:
    """What ``collect`` keeps when hosts h1 and h2 each publish the lab's two summaries."""
    c = Collector(tmp_path / "fleet", prefix="lab")
    for host in ("h1", "h2"):
        for device in ("esp", "rp"):
            summary = json.loads((lab_dir / f"{device}.summary.json").read_text())
            message = {"type": "session_summary", "run_uid": f"{host}-{device}-1", "ok": True,
                       "url": "emu:x", "trace": f"{device}.h5", "summary": summary,
                       "host": host, "device_id": device}
            c.handle(f"lab/{host}/{device}/session_summary", bytes(encode(message, "msgpack")))
    assert c.statistics().sessions == 4
    return tmp_path / "fleet"


def test_compare_reads_a_lab_directory_with_host_and_device(lab_dir: Path,
                                                             tmp_path: Path) -> None:
    host = json.loads((lab_dir / "lab.json").read_text())["host"]
    runs = fleet_runs([lab_dir])
    assert [(r.host, r.device, r.path.name) for r in runs] == [
        (host, "esp", "esp.h5"), (host, "rp", "rp.h5")]
    out = tmp_path / "summaries.csv"
    result = CliRunner().invoke(cli, ["compare", str(lab_dir), "--csv", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(r["host"], r["device"], r["platform"]) for r in doc["rows"]] == [
        (host, "esp", "esp32s3"), (host, "rp", "rp2040")]
    assert doc["rows"][0]["label"].startswith(f"{host}/esp · esp32s3")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["host"], r["device"]) for r in rows] == [(host, "esp"), (host, "rp")]
    assert float(rows[0]["decode_tok_s"]) > 0 and rows[0]["flash_bytes"]  # from the trace


def test_compare_reads_a_collect_directory_and_any_folder_of_it(collected: Path,
                                                               tmp_path: Path) -> None:
    comp = compare_runs([collected])
    assert [(r["host"], r["device"]) for r in comp.rows] == [
        ("h1", "esp"), ("h1", "rp"), ("h2", "esp"), ("h2", "rp")]
    assert len({r["label"] for r in comp.rows}) == 4
    assert comp.rows[2]["label"].startswith("h2/esp · esp32s3")
    assert [r["host"] for r in compare_runs([collected / "h2"]).rows] == ["h2", "h2"]
    assert len(compare_runs([collected / "h1" / "rp" / "h1-rp-1"]).rows) == 1
    out = tmp_path / "fleet.csv"
    result = CliRunner().invoke(cli, ["compare", str(collected), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5  # header and four runs


def test_report_of_a_lab_directory_reports_every_device(lab_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lab.report.json"
    result = CliRunner().invoke(cli, ["report", str(lab_dir), "--format", "json", "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in json.loads(result.stdout)["traces"]] == ["esp.h5", "rp.h5"]
    doc = json.loads(out.read_text())
    assert [t["summary"]["platform"] for t in doc["traces"]] == ["esp32s3", "rp2040"]


@pytest.mark.parametrize("fmt", ["perfetto", "html"])
def test_report_of_collected_summaries_is_refused_naming_the_remedy(
        collected: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "r.out"
    result = CliRunner().invoke(cli, ["report", str(collected), "--format", fmt, "--out",
                                      str(out)])
    assert isinstance(result.exception, TracesNeeded)
    text = str(result.exception)
    assert f"a {fmt} report needs the trace itself" in text
    assert "esp.h5 on host h1" in text and f"tinytelem compare {collected}" in text
    assert not out.exists()


def test_a_rotated_lab_is_compared_by_its_last_segment_and_reported_whole(
        tmp_path: Path) -> None:
    (tmp_path / "lab.toml").write_text(TWO_TWINS)
    out = tmp_path / "runs"
    recorded = CliRunner().invoke(cli, [
        "record", "--session", str(tmp_path / "lab.toml"), "--out", str(out), "--run",
        "--tokens", "8", "--trace-level", "tokens", "--rotate", "0.5s"])
    assert recorded.exit_code == 0, recorded.output
    runs = fleet_runs([out])
    assert [(r.device, r.trace) for r in runs] == [("esp", out / "esp.h5"), ("rp", out / "rp.h5")]
    assert all(r.path.name.startswith(f"{r.device}-0") for r in runs)  # a segment
    assert [r["device"] for r in compare_runs([out]).rows] == ["esp", "rp"]
    result = CliRunner().invoke(cli, ["report", str(out), "--format", "json", "--out",
                                      str(tmp_path / "r.json"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["traces"] == [str(out / "esp.h5"), str(out / "rp.h5")]
