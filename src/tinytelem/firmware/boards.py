"""Boards on the desk: which firmware target each runs, how its users flash it, where its link is.

One TOML file per board in ``tinytelem/firmware/board_data/`` (shipped as package data), written
from the vendor's user manual, which each file names. A board maps to a firmware target
(:data:`tinytelem.firmware.targets.TARGETS`, or ``esp-idf:<chip>`` for the ESP-IDF project) and
to the flash tool command its users run, with placeholders :mod:`tinytelem.firmware.flash` fills.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from tinytelem.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Board", "all_boards", "get_board"]


@dataclass(frozen=True)
class Board:
    """A development board: its MCU, firmware target, link pins, probe and flash command."""

    name: str
    display_name: str
    mcu: str
    flash_bytes: int
    firmware_target: str
    """A firmware target name, or ``esp-idf:<chip>`` (built and flashed by ``idf.py``)."""
    build_cflags: str
    """Extra compiler flags for this board (its clock after reset and UART rate)."""
    baud: int
    status: str
    """What has and has not been verified of this board's firmware."""
    sources: tuple[str, ...]
    link: dict[str, str]
    probe: dict[str, str]
    tool: str
    command: tuple[str, ...]
    probe_args: tuple[str, ...]
    install: str
    alternatives: tuple[str, ...]
    power: dict[str, str]

    @property
    def esp_idf(self) -> bool:
        """Built and flashed by ESP-IDF's ``idf.py`` rather than the project's Makefile."""
        return self.firmware_target.startswith("esp-idf:")


def _board(data: dict[str, Any], origin: str) -> Board:
    try:
        flash = data["flash"]
        return Board(
            name=str(data["name"]), display_name=str(data["display_name"]), mcu=str(data["mcu"]),
            flash_bytes=int(data["flash_bytes"]), firmware_target=str(data["firmware_target"]),
            build_cflags=str(data.get("build_cflags", "")), baud=int(data["baud"]),
            status=str(data["status"]), sources=tuple(map(str, data["sources"])),
            link={k: str(v) for k, v in data["link"].items()},
            probe={k: str(v) for k, v in data["probe"].items()},
            tool=str(flash["tool"]), command=tuple(map(str, flash["command"])),
            probe_args=tuple(map(str, flash.get("probe_args", ()))),
            install=str(flash["install"]),
            alternatives=tuple(map(str, flash.get("alternatives", ()))),
            power={k: str(v) for k, v in data.get("power", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"board file {origin} is malformed ({exc!r}); compare it with "
                          "nucleo-f446re.toml") from exc


@cache
def all_boards() -> dict[str, Board]:
    """Every board file shipped with tinytelem, by name."""
    root = resources.files("tinytelem.firmware") / "board_data"
    boards = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            b = _board(tomllib.loads(entry.read_text(encoding="utf-8")), entry.name)
            boards[b.name] = b
    return boards


def get_board(name: str) -> Board:
    """The board called ``name``.

    Raises:
        ConfigError: naming the known boards.
    """
    try:
        return all_boards()[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown board {name!r}; choose one of "
                          f"{', '.join(all_boards())}") from None
