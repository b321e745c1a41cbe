"""``tinytelem record``: its sensor options and its refusals (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

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
