"""Runs longer than the context: the twin clips them like llama2.c, and says so on the host
and in the run's record (summary warnings, the trace's runs table and device log); ``record``
refuses them before it starts, naming the context (it can repeat runs instead)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.trace.reader import open_trace


@pytest.mark.slow
def test_run_longer_than_the_context_is_clipped_with_a_warning(tmp_path: Path) -> None:
    refused = CliRunner().invoke(cli, ["record", "--device", "emu:rpi4", "--run", "--tokens",
                                       "60000", "--out", str(tmp_path / "refused.h5")])
    assert "room for 496 tokens" in str(refused.exception) and "--repeat" in str(refused.exception)
    out = tmp_path / "long" / "trace.h5"
    args = ["profile", "--device", "emu:rpi4", "--out", str(out.parent), "--tokens", "60000",
            "--trace-level", "tokens"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, (res.output, res.exception)
    # The prompt is BOS + 16 byte tokens; the 512-position context leaves 496 after it.
    shown = " ".join(res.output.split())  # rich wraps lines at the terminal width
    assert "warning: run 1: asked for 60000 tokens" in shown and "room for 496 after" in shown
    with open_trace(out) as tr:
        (run,) = tr.runs
        assert int(run["n_tokens"]) == 496 and int(run["n_generated"]) <= 496
        assert tr.attrs["requested_tokens"] == 60000
        logs = [str(t) for t in tr.logs["text"]]
    assert any("asked for 60000 tokens" in t and "llama2.c" in t for t in logs)
    res = CliRunner().invoke(cli, [*args, "--overwrite", "--json"])
    summary = json.loads(res.stdout)
    assert any("asked for 60000" in w for w in summary["warnings"])


@pytest.mark.slow
def test_a_run_within_the_context_has_no_clip_warning(tmp_path: Path) -> None:
    out = tmp_path / "short.h5"
    res = CliRunner().invoke(cli, ["record", "--device", "emu:rpi4", "--out", str(out), "--run",
                                   "--tokens", "8", "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert not any("asked for" in w for w in json.loads(res.stdout)["warnings"])
