"""``tinytelem record``: its sensor options and its refusals (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError
from tinytelem.trace.reader import open_trace


def test_two_sensors_are_refused_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "two.h5"
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3", "--out", str(out),
                                      "--sensor", "sim", "--sensor", "rapl"])
    assert isinstance(result.exception, ConfigError)
    assert "one --sensor per trace" in str(result.exception)
    assert not out.exists()


def test_unknown_sensor_spec_is_refused_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "bad.h5"
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3", "--out", str(out),
                                      "--sensor", "ppk3:/nowhere"])
    assert isinstance(result.exception, ConfigError)
    assert "ppk2:" in str(result.exception)  # names the accepted forms
    assert not out.exists()


@pytest.mark.slow
def test_record_with_simulated_sensor_aligns_power_to_tokens(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    result = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--sensor", "sim", "--run", "--tokens", "24",
        "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["power"]["sensor"] == "sim"
    assert summary["power"]["energy_per_token_j"] > 0
    assert summary["power"]["coverage"] == pytest.approx(1.0, abs=0.01)
    # The sensor clock was fitted to the host clock and the device clock to the host clock,
    # so every generated token has its power: one net energy per token.
    assert summary["clock"]["sensor"]["n_points"] > 3
    assert summary["clock"]["device"]["n_points"] > 3
    assert summary["power"]["net"]["per_token_j"]["n"] == 24
    with open_trace(out) as tr:
        assert tr.attrs["sensor"] == "sim" and tr.attrs["complete"]
        assert tr.n_power_samples > 10_000 and tr.power_gaps.size == 0
        blocks, tokens = tr.power_blocks, tr.tokens
        # Power was sampled from before the first token to after the last one.
        assert blocks["host_s"][0] < tokens["host_s"][0]
        assert blocks["host_s"][-1] > tokens["host_s"][-1]
        assert np.all(np.diff(blocks["first_index"].astype(np.int64)) > 0)


def test_tokens_beyond_the_context_are_refused_with_the_remedy(tmp_path: Path) -> None:
    out = tmp_path / "long.h5"
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3", "--out", str(out),
                                      "--run", "--tokens", "5000"])
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "seq_len 512" in message and "--repeat" in message
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--repeat", "3"], "add --run"),
    (["--run", "--repeat", "0"], "at least 1"),
])
def test_schedule_options_are_checked(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3",
                                      "--out", str(tmp_path / "x.h5"), *args])
    assert isinstance(result.exception, ConfigError)
    assert words in str(result.exception)


def test_repeat_must_be_a_count_or_forever(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3", "--run",
                                      "--out", str(tmp_path / "x.h5"), "--repeat", "often"])
    assert result.exit_code == 2 and "forever" in result.output


@pytest.mark.slow
def test_scheduled_runs_keep_their_ids_and_a_rolling_summary(tmp_path: Path) -> None:
    out = tmp_path / "sched.h5"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\n\nThe little dog\n")
    result = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--sensor", "sim", "--run", "--repeat", "3",
        "--interval", "1.5", "--prompts", str(prompts), "--tokens", "8", "--out", str(out),
        "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert [r["run_id"] for r in summary["runs"]] == [1, 2, 3]
    assert all(r["complete"] and r["generated"] == 8 for r in summary["runs"])
    prompt_lengths = [r["prompt"] for r in summary["runs"]]
    assert prompt_lengths[0] == prompt_lengths[2] != prompt_lengths[1]  # prompts in turn
    rolling = summary["rolling"]
    assert rolling["runs"] == rolling["complete"] == 3
    assert rolling["tok_s"]["mean"] > 0 and rolling["j_per_token"]["mean"] > 0
    assert rolling["drift_tok_s_per_run"] is not None
    with open_trace(out) as tr:
        runs = tr.runs
        assert tr.group_attrs("session")["runs_done"] == 3
    # A run starts 1.5 s after the previous one started (runs of 8 tokens are shorter).
    assert np.diff(runs["begin_s"]) == pytest.approx([1.5, 1.5], abs=0.15)
    info = CliRunner().invoke(cli, ["trace", "info", str(out), "--json"])
    data = json.loads(info.output)
    assert data["rolling"]["complete"] == 3 and data["schedule"]["repeat"] == 3
    text = CliRunner().invoke(cli, ["trace", "info", str(out)])
    assert "rolling over 3 of 3 runs" in text.output


@pytest.mark.slow
def test_repeat_forever_runs_until_the_duration(tmp_path: Path) -> None:
    out = tmp_path / "forever.h5"
    result = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--run", "--repeat", "forever", "--tokens", "4",
        "--duration", "5", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["rolling"]["complete"] >= 3
    with open_trace(out) as tr:
        ids = tr.runs["run_id"].tolist()
    assert ids == list(range(1, len(ids) + 1))


def test_bad_rotate_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["record", "--device", "emu:esp32s3", "--out",
                                      str(tmp_path / "r.h5"), "--rotate", "weekly"])
    assert isinstance(result.exception, ConfigError) and "90s, 30m, 1h" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_rotated_recording_reads_back_as_one(tmp_path: Path) -> None:
    from tinytelem.analysis.loader import load_run_data
    from tinytelem.trace.reader import segment_paths

    def record(out: Path, *rotate: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, [
            "record", "--device", "emu:esp32s3", "--sensor", "sim", "--run", "--repeat", "3",
            "--tokens", "24", "--seed", "7", *rotate, "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout[result.stdout.index("{"):]))

    whole = record(tmp_path / "whole.h5")
    rotated = record(tmp_path / "rot.h5", "--rotate", "0.4s")
    segments = segment_paths(tmp_path / "rot.h5")
    assert [str(p) for p in segments] == rotated["segments"] and len(segments) >= 3
    joined, single = load_run_data(segments), load_run_data(tmp_path / "whole.h5")
    # The twin runs the same three inferences: the same tokens, whatever the segments.
    assert joined.tokens["token_id"].tolist() == single.tokens["token_id"].tolist()
    assert joined.runs["run_id"].tolist() == [1, 2, 3] == single.runs["run_id"].tolist()
    assert (joined.runs["status"] == 0).all()
    counts = []
    for path in segments:
        with open_trace(path) as tr:
            counts.append(tr.n_power_samples)
    assert joined.power_current_a.size == sum(counts) == int(joined.power_blocks["n"].sum())
    # The summary and the rolling summary (in the last segment) cover every segment.
    assert len(rotated["runs"]) == len(whole["runs"]) == 3
    assert rotated["rolling"]["runs"] == whole["rolling"]["runs"] == 3
    assert rotated["tokens"]["generated"] == whole["tokens"]["generated"]
    assert rotated["power"]["n_samples"] == sum(counts)
    with open_trace(segments[-1]) as tr:
        assert tr.summary["tokens"]["generated"] == whole["tokens"]["generated"]
    # trace info and report take the recording's name and read the segments as one.
    shown = CliRunner().invoke(cli, ["trace", "info", str(tmp_path / "rot.h5"), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["segments"] == rotated["segments"]
    assert info["power"]["samples"] == sum(counts)
    assert info["rows"]["tokens"] == joined.tokens.size == single.tokens.size
    assert info["rolling"]["runs"] == 3
    made = CliRunner().invoke(cli, ["report", str(tmp_path / "rot.h5"), "--format", "json",
                                    "--out", str(tmp_path / "r.json")])
    assert made.exit_code == 0, made.output
    reported = json.loads((tmp_path / "r.json").read_text())["traces"][0]["summary"]
    assert len(reported["runs"]) == 3
    assert reported["tokens"]["generated"] == whole["tokens"]["generated"]
    # trace replay decodes the segments' raw captures as one stream, into one trace.
    replayed = CliRunner().invoke(cli, ["trace", "replay", str(tmp_path / "rot.ttraw.zst"),
                                        "--out", str(tmp_path / "re.h5"), "--json"])
    assert replayed.exit_code == 0, replayed.output
    again = load_run_data(tmp_path / "re.h5")
    assert again.tokens["token_id"].tolist() == single.tokens["token_id"].tolist()
    assert again.runs["run_id"].tolist() == [1, 2, 3]
    # Statistics only, rotated: only the last segment describes the levels; all count.
    stats = record(tmp_path / "st.h5", "--rotate", "0.4s", "--power-store", "stats")
    assert len(stats["segments"]) >= 3
    assert stats["power"]["energy_j"] == pytest.approx(whole["power"]["energy_j"], rel=0.02)


@pytest.mark.slow
def test_rotated_segments_each_read_on_their_own(tmp_path: Path) -> None:
    from tinytelem.analysis.loader import summary_of_trace

    out = tmp_path / "seg.h5"
    result = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--sensor", "sim", "--run", "--repeat", "forever",
        "--tokens", "16", "--duration", "7", "--rotate", "2s", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    segments = [Path(p) for p in summary["segments"]]
    assert len(segments) >= 3 and not out.exists()
    assert segments[0] == tmp_path / "seg-0001.h5"
    end_index = 0
    for k, path in enumerate(segments, 1):
        assert path.with_suffix(".ttraw.zst").stat().st_size > 0
        with open_trace(path) as tr:
            assert tr.attrs["complete"] and tr.attrs["segment"] == k
            assert tr.attrs["tick_hz"] > 0  # HELLO facts in every segment
            assert tr.group_attrs("power")["sample_rate_hz"] > 0
            blocks = tr.power_blocks
            assert int(blocks["first_index"][0]) == end_index  # no sample lost in between
            end_index = int(blocks["first_index"][-1] + blocks["n"][-1])
            assert tr.power_gaps.size == 0
    first = summary_of_trace(segments[0])
    assert first["tokens"]["generated"] > 0 and first["power"]["energy_j"] > 0
    again = CliRunner().invoke(cli, [
        "record", "--device", "emu:esp32s3", "--run", "--duration", "1", "--rotate", "1h",
        "--out", str(out)])
    assert isinstance(again.exception, ConfigError) and "seg-0001" in str(again.exception)


@pytest.mark.parametrize(("args", "words"), [
    (["--device", "emu:esp32s3", "--session", "LAB"], "--device URL (one device) or --session"),
    (["--out", "x"], "--device URL (one device) or --session"),
    (["--session", "LAB", "--sensor", "sim"], "drop --sensor"),
    (["--session", "LAB", "--out", "runs.h5"], "--out is a directory"),
    (["--device", "emu:esp32s3", "--publish", "http://h/x"], "mqtt://host"),
    (["--device", "emu:esp32s3", "--publish", "mqtt://h/x", "--serve", "ws://127.0.0.1:0"],
     "needs --session"),
])
def test_lab_and_publish_options_are_checked_before_anything_starts(
        tmp_path: Path, args: list[str], words: str) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text('[devices.a]\nurl = "emu:esp32s3"\n')
    argv = ["record", *[str(lab) if a == "LAB" else a for a in args]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert words in (result.output + str(result.exception)), result.output
    assert not (tmp_path / "runs").exists()
