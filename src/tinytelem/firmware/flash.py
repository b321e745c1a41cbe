"""``tinytelem firmware flash``: build a board's firmware and run the flash tool its users run.

The command comes from the board file (:mod:`tinytelem.firmware.boards`): pyOCD or OpenOCD for
the ST and Nordic boards, ``picotool`` for the Picos, ``idf.py`` for the ESP32-S3. A plan is
made without hardware or tools (``--dry-run`` prints it); :func:`flash` builds, checks that the
image fits the board's flash and runs the tool, or names how to install it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tinytelem.errors import ConfigError
from tinytelem.firmware.boards import Board
from tinytelem.firmware.build import build, default_build_dir, plan_model, write_model_source
from tinytelem.firmware.targets import firmware_dir, get_target

__all__ = ["FlashPlan", "flash", "plan_flash"]

FLASH_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class FlashPlan:
    """What flashing a board takes: the build, the image, the tool's command line."""

    board: Board
    model: Path | None
    build_dir: Path
    elf: Path
    bin: Path | None
    command: tuple[str, ...]
    build: str
    """The build, in words (the ESP-IDF build is part of ``command``)."""

    def shell(self) -> str:
        """The command as one shell line."""
        return shlex.join(self.command)


def _fill(board: Board, values: dict[str, str], probe: str | None) -> tuple[str, ...]:
    out: list[str] = []
    for word in board.command:
        if word == "{probe_args}":
            if probe:
                out += [a.format(probe=probe) for a in board.probe_args]
        elif word == "{model_defs}":
            out += values["model_defs"].split()
        else:
            out.append(word.format(**values))
    return tuple(out)


def plan_flash(board: Board, model: Path | None = None, probe: str | None = None) -> FlashPlan:
    """The build and flash command for ``board`` (with ``model``, a .tlm, on the llama engine);
    runs nothing.

    Raises:
        ConfigError: the model is not a valid .tlm or does not fit the board.
    """
    if board.esp_idf:
        # The ESP-IDF project sizes nothing from a linker map here: the whole context is kept.
        plan = None if model is None else plan_model(get_target("native"), model)
        variant = "demo" if plan is None else f"llama-{plan.sha256[:12]}-{plan.context}"
        build_dir = default_build_dir(board.name, variant)
        defs = "" if plan is None else (
            f"-DTT_MODEL_C={build_dir / 'model' / 'tlm_model.c'} "
            f"-DTT_ARENA_BYTES={plan.arena_bytes} -DTT_MAX_SEQ={plan.context}")
        values = {"esp_project": str(firmware_dir() / "ports" / "esp-idf"),
                  "build_dir": str(build_dir), "engine": "demo" if plan is None else "llama",
                  "model_defs": defs}
        elf = build_dir / "tinytelem.elf"
        return FlashPlan(board, model, build_dir, elf, None, _fill(board, values, probe),
                         "by idf.py (the ESP-IDF project firmware/ports/esp-idf)")
    target = get_target(board.firmware_target)
    plan = None if model is None else plan_model(target, model)
    variant = "demo" if plan is None else f"llama-{plan.sha256[:12]}-{plan.context}"
    build_dir = default_build_dir(target.name, f"{board.name}-{variant}")
    elf, image = build_dir / "tinytelem-fw.elf", build_dir / "tinytelem-fw.bin"
    if plan is not None and len(plan.image) > board.flash_bytes:
        raise ConfigError(f"the model ({len(plan.image)} B) does not fit the "
                          f"{board.flash_bytes} B flash of {board.display_name}; quantize to "
                          "fewer bits or pick a bigger board")
    words = [f"target {target.name}", f"link {board.baud} baud (drop policy)"]
    if board.build_cflags:
        words.append(board.build_cflags)
    return FlashPlan(board, model, build_dir, elf, image,
                     _fill(board, {"elf": str(elf), "bin": str(image)}, probe),
                     ", ".join(words))


def flash(plan: FlashPlan) -> None:
    """Build the firmware and run the board's flash tool (its output goes to the terminal).

    Raises:
        ConfigError: the flash tool is not installed (naming how to install it), the build
            failed, the image does not fit the board's flash, or the tool failed.
    """
    board = plan.board
    if shutil.which(plan.command[0]) is None:
        raise ConfigError(f"{board.display_name} is flashed with {plan.command[0]}, which is not "
                          f"installed; install it: {board.install}")
    if board.esp_idf:
        if plan.model is not None:
            write_model_source(plan_model(get_target("native"), plan.model), plan.build_dir)
    else:
        result = build(board.firmware_target, plan.model, build_dir=plan.build_dir,
                       extra_cflags=board.build_cflags, link_baud=board.baud)
        assert result.bin is not None
        size = result.bin.stat().st_size
        if size > board.flash_bytes:
            raise ConfigError(f"the image ({size} B) does not fit the {board.flash_bytes} B "
                              f"flash of {board.display_name}")
    try:
        proc = subprocess.run(list(plan.command), timeout=FLASH_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{plan.command[0]} failed to run: {exc}") from exc
    if proc.returncode != 0:
        raise ConfigError(f"{plan.shell()} failed with status {proc.returncode}; is the board "
                          f"connected through its {board.probe.get('name', 'probe')}?")
