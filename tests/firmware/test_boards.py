"""Board files: each loads, names its sources, and its firmware target builds here (board files
compile in CI wherever the cross compiler exists)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.helpers import need_tools
from tinytelem.errors import ConfigError
from tinytelem.firmware.boards import all_boards, get_board
from tinytelem.firmware.targets import TARGETS

BOARDS = ["nucleo-f446re", "nucleo-h743zi", "nrf52840-dk", "pico", "pico2",
          "esp32-s3-devkitc-1"]


def test_the_shipped_boards_are_the_ones_documented() -> None:
    assert sorted(all_boards()) == sorted(BOARDS)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "boards.md").read_text()
    for b in all_boards().values():
        assert f"`{b.name}`" in docs


@pytest.mark.parametrize("name", BOARDS)
def test_a_board_names_its_target_pins_tool_and_manual(name: str) -> None:
    b = get_board(name)
    assert b.esp_idf or b.firmware_target in TARGETS
    assert b.sources and all(s.strip() for s in b.sources)
    assert b.link["tx_pin"] and b.link["rx_pin"] and b.baud >= 9600
    assert b.command[0] == b.tool and b.install
    assert "{probe}" in " ".join(b.probe_args)
    assert b.flash_bytes > 0 and b.status


def test_unknown_board_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="nucleo-f446re"):
        get_board("arduino-uno")


@pytest.mark.parametrize("name", [n for n in BOARDS if not get_board(n).esp_idf])
def test_board_firmware_builds(name: str, tmp_path: Path) -> None:
    from tinytelem.firmware.build import build
    from tinytelem.firmware.footprint import footprint

    b = get_board(name)
    need_tools(b.firmware_target, run=False)
    result = build(b.firmware_target, build_dir=tmp_path, extra_cflags=b.build_cflags,
                   link_baud=b.baud)
    assert result.bin is not None and 0 < result.bin.stat().st_size <= b.flash_bytes
    assert footprint(result.elf).flash > 0
