"""`tinytelem platforms list/show`, through the group itself, the top-level CLI and a process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tinytelem.cli import platforms as cli_platforms
from tinytelem.cli.main import cli
from tinytelem.cli.platforms import platforms
from tinytelem.platforms import Platform, all_platforms, get_platform
from tinytelem.units import format_bytes, format_hz, format_rate, format_watts


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(platforms, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_table_has_every_platform() -> None:
    out = _run(["list"])
    for p in all_platforms():
        assert p.name in out
    assert "netduinoplus2" in out
    assert "2x Arm Cortex-M0+" in out
    assert "1056 KiB" in out  # STM32H743 SRAM, not truncated on a pipe


def test_list_json_parses_and_round_trips() -> None:
    data = json.loads(_run(["list", "--json"]))
    assert [d["name"] for d in data] == [p.name for p in all_platforms()]
    for entry in data:
        assert Platform.from_dict(entry) == get_platform(entry["name"])


def test_show_json_round_trips() -> None:
    data = json.loads(_run(["show", "esp32s3", "--json"]))
    assert data["psram_bytes"] == 8 * 2**20
    assert data["aliases"][0] == "esp32-s3"
    assert Platform.from_dict(data) == get_platform("esp32s3")


def test_show_human_has_units_estimates_and_sources() -> None:
    out = _run(["show", "ESP32-S3"])  # alias, any case
    assert "esp32s3: Espressif ESP32-S3" in out
    assert "240 MHz" in out
    assert "8 MiB" in out
    assert "≈ 8 (estimate)" in out  # int8 MACs/cycle
    assert "Sources" in out
    assert "esp32-s3_datasheet_en.pdf" in out
    assert "Notes" in out


def test_show_sbc_formats_dram_and_watts() -> None:
    out = _run(["show", "rpi4"])
    assert "4 GiB" in out
    assert "1.5 GHz" in out
    assert "≈ 6.4 W (estimate)" in out
    assert "≈ 4.5 GB/s (estimate)" in out


def test_show_unknown_is_a_usage_error_with_suggestion() -> None:
    result = CliRunner().invoke(platforms, ["show", "esp32s4"])
    assert result.exit_code == 2
    assert "did you mean 'esp32s3'?" in result.output


def test_through_top_level_cli() -> None:
    result = CliRunner().invoke(cli, ["platforms", "show", "rp2040", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["core"] == "Arm Cortex-M0+"
    assert data["simd"] == []
    result = CliRunner().invoke(cli, ["platforms", "list"])
    assert result.exit_code == 0
    assert "jetson-nano" in result.output


def test_console_script_in_a_real_process() -> None:
    code = "from tinytelem.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "platforms", "show", "k210", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tick_hz"] == 8_000_000
    done = subprocess.run(
        [sys.executable, "-c", code, "platforms", "show", "stm32f5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "did you mean 'stm32f4'?" in done.stderr


def test_name_completion() -> None:
    assert cli_platforms._complete_names(None, None, "RP2") == ["rp2040", "rp2350"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "—"),
        (100, "100 B"),
        (1536, "1.50 KiB"),
        (1_081_344, "1056 KiB"),
        (8 * 2**20, "8 MiB"),
        (4 * 2**30, "4 GiB"),
        (3 * 2**20 + 1, "3.00 MiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_format_units() -> None:
    assert format_hz(1_430_000_000) == "1.43 GHz"
    assert format_hz(133_000_000) == "133 MHz"
    assert format_hz(32_768) == "32.77 kHz"
    assert format_hz(50) == "50 Hz"
    assert format_rate(0) == "—"
    assert format_rate(4.5e9) == "4.5 GB/s"
    assert format_rate(18e6) == "18 MB/s"
    assert format_rate(500) == "500 B/s"
    assert format_watts(0.015) == "15 mW"
    assert format_watts(6.4) == "6.4 W"
