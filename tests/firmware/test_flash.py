"""``tinytelem firmware flash``: the exact tool command per board, dry runs for every board, a
clear error without the tool, and a real run of the command (a stand-in tool on PATH)."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.firmware.helpers import need_tools
from tinytelem.cli.main import cli
from tinytelem.firmware.boards import all_boards, get_board
from tinytelem.firmware.flash import plan_flash


def test_dry_run_prints_every_boards_command_without_hardware() -> None:
    res = CliRunner().invoke(cli, ["firmware", "flash", "--dry-run"])
    assert res.exit_code == 0, res.output
    commands = [line for line in res.output.splitlines() if not line.startswith("#")]
    assert len(commands) == len(all_boards())
    tools = sorted(shlex.split(c)[0] for c in commands)
    assert tools == sorted(b.tool for b in all_boards().values())
    assert "openocd -f interface/stlink.cfg -f target/stm32f4x.cfg -c 'program " in res.output
    assert "pyocd flash --target nrf52840 " in res.output
    assert "picotool load -x -t elf " in res.output
    assert "idf.py -C " in res.output and "set-target esp32s3 build flash" in res.output


def test_probe_goes_where_each_tool_takes_it() -> None:
    def cmd(board: str) -> str:
        return plan_flash(get_board(board), probe="ABC123").shell()

    assert "-f interface/stlink.cfg -c 'adapter serial ABC123' -f target/" in cmd("nucleo-f446re")
    assert "--target nrf52840 --uid ABC123 " in cmd("nrf52840-dk")
    assert "--ser ABC123 " in cmd("pico")
    assert cmd("esp32-s3-devkitc-1").endswith("build flash -p ABC123")
    assert "ABC123" not in plan_flash(get_board("pico")).shell()


def _error(res: object) -> str:
    """What the user sees: main() prints a TinyTelemError raised by a command."""
    return f"{getattr(res, 'output', '')}{getattr(res, 'exception', '')}"


def test_target_picks_its_board_and_refuses_targets_no_board_runs() -> None:
    res = CliRunner().invoke(cli, ["firmware", "flash", "--target", "stm32h7", "--dry-run"])
    assert res.exit_code == 0 and "nucleo-h743zi" in res.output and "stm32h7x.cfg" in res.output
    res = CliRunner().invoke(cli, ["firmware", "flash", "--target", "riscv32"])
    assert res.exit_code != 0 and "no board file runs target 'riscv32'" in _error(res)
    res = CliRunner().invoke(cli, ["firmware", "flash"])
    assert res.exit_code != 0 and "--board" in _error(res)


def test_without_the_tool_the_error_names_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    res = CliRunner().invoke(cli, ["firmware", "flash", "--board", "nrf52840-dk"])
    assert res.exit_code != 0
    assert "pyocd, which is not installed; install it: pip install pyocd" in _error(res)


def test_flash_builds_then_runs_the_boards_command(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    need_tools("stm32f405", run=False)
    log = tmp_path / "argv"
    tool = tmp_path / "openocd"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    res = CliRunner().invoke(cli, ["firmware", "flash", "--board", "nucleo-f446re"])
    assert res.exit_code == 0, res.output
    argv = log.read_text().splitlines()
    assert argv[:4] == ["-f", "interface/stlink.cfg", "-f", "target/stm32f4x.cfg"]
    elf = Path(argv[-1].removeprefix("program ").removesuffix(" verify reset exit"))
    assert elf.is_file() and elf.name == "tinytelem-fw.elf"
    assert "115200 baud" in res.output
