"""``tinytelem firmware build/footprint`` (cli/firmware.py): output and missing tools.

Missing tools are simulated the way a user meets them (the ``no_tools`` fixture): PATH points at
an empty directory, so every ``shutil.which`` lookup fails for real.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.firmware.helpers import need_tools
from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError


def test_firmware_cli_build_json_then_text(tmp_path: Path) -> None:
    need_tools("cortex-m4", run=False)
    out = tmp_path / "m4"
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "cortex-m4", "--build-dir",
                                   str(out), "--trace-level", "2", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["target"] == "cortex-m4"
    elf = Path(info["elf"])
    assert elf.is_file() and elf.parent == out
    assert Path(info["bin"]).stat().st_size == info["footprint"]["flash"]
    assert info["footprint"]["bss"] > 80_000
    # make's flags file records the level the image was built with
    assert "-DTT_DEFAULT_LEVEL=2" in (out / "flags").read_text()
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "cortex-m4", "--build-dir",
                                   str(out), "--trace-level", "2"])
    assert res.exit_code == 0, res.output
    assert f"built {elf}" in res.output
    assert f"flash {info['footprint']['flash']} B" in res.output


def test_firmware_cli_native_build_has_no_image(tmp_path: Path) -> None:
    need_tools("native", run=False)
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "native", "--build-dir",
                                   str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["bin"] is None and Path(info["elf"]).name == "tinytelem-fw"


def test_firmware_cli_footprint_table_matches_json(wide: None) -> None:
    need_tools("cortex-m4", run=False)
    need_tools("riscv32", run=False)
    args = ["firmware", "footprint", "--target", "cortex-m4", "--target", "riscv32"]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["target"]: r for r in json.loads(res.output)}
    assert set(rows) == {"cortex-m4", "riscv32"}
    assert rows["riscv32"]["text"] != rows["cortex-m4"]["text"]  # two different ISAs
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    for name, r in rows.items():
        line = next(ln for ln in res.output.splitlines() if name in ln)
        for key in ("flash", "static_ram", "text", "bss", "stack"):
            assert str(r[key]) in line, (key, line)
        assert "demo" in line


def test_firmware_cli_rejects_unknown_target() -> None:
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "z80"])
    assert res.exit_code == 2
    assert "cortex-m4" in res.output  # the choices are listed


def test_firmware_cli_missing_compiler_names_the_install_command(no_tools: None) -> None:
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "riscv32"])
    assert isinstance(res.exception, ConfigError)
    text = str(res.exception)
    assert "bash scripts/setup-system.sh" in text
    assert "gcc-riscv64-unknown-elf" in text and "riscv64-unknown-elf-gcc" in text
    assert "qemu" not in text  # building does not need the emulator
    res = CliRunner().invoke(cli, ["firmware", "footprint", "--target", "stm32f405"])
    assert isinstance(res.exception, ConfigError)
    assert "gcc-arm-none-eabi" in str(res.exception)
