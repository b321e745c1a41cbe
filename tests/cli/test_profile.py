"""``tinytelem profile --session``: every device of a lab profiled at once (real twins over the
real wire protocol), one combined table, a failing device as a bulkhead (CliRunner)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.trace.reader import open_trace

from ..session.helpers import TWO_TWINS

FAST = ["--tokens", "4", "--trace-level", "tokens"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("wide")
def test_a_session_profiles_every_device_and_marks_twin_figures_predicted(
        tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(TWO_TWINS)
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["profile", "--session", str(lab), "--out", str(out),
                                      *FAST])
    assert result.exit_code == 0, result.output
    for device_id, platform in (("esp", "esp32s3"), ("rp", "rp2040")):
        with open_trace(out / f"{device_id}.h5") as tr:
            assert tr.attrs["platform"] == platform and len(tr.tokens) >= 4
        summary = json.loads((out / f"{device_id}.summary.json").read_text())
        assert summary["prediction"]["source"] == "twin"
        assert (out / f"{device_id}.ttraw.zst").is_file()
    report = json.loads((out / "lab.json").read_text())
    assert [(d["id"], d["ok"], d["trace"], d["summary"]) for d in report["devices"]] == [
        ("esp", True, "esp.h5", "esp.summary.json"), ("rp", True, "rp.h5", "rp.summary.json")]
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│")}
    assert set(rows) == {"esp", "rp"}
    for line in rows.values():
        # TTFT, decode and peak heap of a twin are its cost model's, as profile labels them.
        assert line.count("(predicted)") >= 3, line
        assert "ok" in line
    assert "esp32s3" in rows["esp"] and "tok/s (predicted)" in rows["esp"]
    assert "J (predicted)" in rows["esp"]  # the sim sensor measured esp: energy per token


def test_a_failing_device_exits_1_and_the_others_are_kept(tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(f'[devices.good]\nurl = "emu:rp2040"\n'
                   f'[devices.gone]\nurl = "tcp://127.0.0.1:{_closed_port()}"\n')
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["profile", "--session", str(lab), "--out", str(out),
                                      "--json", *FAST])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    by_id = {d["id"]: d for d in doc["devices"]}
    assert [d["id"] for d in doc["devices"]] == ["good", "gone"]
    assert by_id["good"]["ok"] and by_id["good"]["summary"]["platform"] == "rp2040"
    assert not by_id["gone"]["ok"] and "connection refused" in by_id["gone"]["error"]
    with open_trace(out / "good.h5") as tr:
        assert len(tr.tokens) >= 4
    assert not (out / "gone.h5").exists()  # an empty trace of a device never reached
    report = json.loads((out / "lab.json").read_text())
    assert {d["id"]: d["ok"] for d in report["devices"]} == {"good": True, "gone": False}


@pytest.mark.parametrize(("extra", "words"), [
    (["--device", "emu:rp2040"], "--device and --session are mutually exclusive"),
    (["--sensor", "sim"], "drop --sensor"),
])
def test_session_refuses_device_and_sensor_options(tmp_path: Path, extra: list[str],
                                                   words: str) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(TWO_TWINS)
    result = CliRunner().invoke(cli, ["profile", "--session", str(lab), "--out",
                                      str(tmp_path / "runs"), *extra])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not (tmp_path / "runs").exists()
