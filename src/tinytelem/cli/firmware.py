"""``tinytelem firmware``: build the firmware for a target and report its footprint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tinytelem.firmware.targets import TARGETS


def _targets() -> click.Choice[str]:
    return click.Choice(sorted(TARGETS))


@click.group("firmware")
def firmware() -> None:
    """Build the C firmware (telemetry + engine) and inspect its images."""


@firmware.command("build")
@click.option("--target", "target", type=_targets(), required=True, help="Firmware target.")
@click.option("--model", "model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help=".tlm model to link in (llama engine).")
@click.option("--build-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Output directory (default build/firmware/<target>).")
@click.option("--trace-level", type=click.IntRange(0, 2), default=1, show_default=True,
              help="Trace level after boot (0 off, 1 tokens, 2 spans); hosts send CONFIG anyway.")
@click.option("--link-baud", metavar="BAUD", default=None,
              help="Drain the transmit path through a ring at this UART rate (8N1), timed by "
                   "the device clock; default 0: a free link.")
@click.option("--tx-policy", type=click.Choice(["drop", "block"]), default="drop",
              show_default=True,
              help="A full transmit ring drops trace frames (counted in tx_dropped) or blocks.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build_cmd(target: str, model: Path | None, build_dir: Path | None, trace_level: int,
              link_baud: str | None, tx_policy: str, as_json: bool) -> None:
    """Compile the firmware for TARGET with its toolchain (make; deterministic output)."""
    from tinytelem.emulator.link import parse_baud
    from tinytelem.firmware.build import build
    from tinytelem.firmware.footprint import footprint

    result = build(target, model, build_dir=build_dir, trace_level=trace_level,
                   link_baud=parse_baud(link_baud), tx_policy=tx_policy)
    fp = footprint(result.elf)
    if as_json:
        click.echo(json.dumps({"target": target, "elf": str(result.elf),
                               "bin": str(result.bin) if result.bin else None,
                               "footprint": fp.as_dict(), "context": result.context,
                               "arena_bytes": result.arena_bytes}, indent=2))
        return
    click.echo(f"built {result.elf}")
    click.echo(f"flash {fp.flash} B, static RAM {fp.static_ram} B, stack {fp.stack} B")
    if model is not None:
        click.echo(f"peak arena {result.arena_bytes} B (context {result.context} positions)")


@firmware.command("footprint")
@click.option("--target", "targets", type=_targets(), multiple=True, required=True,
              help="Firmware target (repeat for a table).")
@click.option("--model", "model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help=".tlm model linked in.")
@click.option("--json", "as_json", is_flag=True, help="Print the footprints as JSON.")
def footprint_cmd(targets: tuple[str, ...], model: Path | None, as_json: bool) -> None:
    """Flash / static RAM / stack per target, from the ELF sections (builds when needed).

    With --model the llama engine is linked; its peak arena (activations + KV cache at the
    context that fits the board) is part of static RAM.
    """
    from tinytelem.firmware.build import build
    from tinytelem.firmware.footprint import footprint

    rows = []
    for target in targets:
        result = build(target, model)
        rows.append({"target": target, "model": str(model) if model else "demo",
                     **footprint(result.elf).as_dict(), "arena": result.arena_bytes,
                     "context": result.context})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "model", "flash B", "static RAM B", ".text", ".rodata", ".data",
                  ".bss", "stack B", "peak arena B", "context")
    for r in rows:
        table.add_row(str(r["target"]), Path(str(r["model"])).name, str(r["flash"]),
                      str(r["static_ram"]),
                      str(r["text"]), str(r["rodata"]), str(r["data"]), str(r["bss"]),
                      str(r["stack"]), str(r["arena"]), str(r["context"]))
    Console().print(table)


build_cmd.name = "build"
footprint_cmd.name = "footprint"


@firmware.command("calibrate")
@click.option("--family", "families", multiple=True,
              help="ISA family to calibrate (repeatable; default all: cortex-m4, cortex-m7, "
                   "cortex-m0plus, rv32imac, rv32imafc).")
@click.option("--shape", "shapes", multiple=True,
              help="Calibration model shape (repeatable; default 260k, d96, d128).")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Calibration file (default calibration/engine.json of the checkout).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Builds and models (default build/calibration).")
def calibrate_cmd(families: tuple[str, ...], shapes: tuple[str, ...], out: Path | None,
                  work_dir: Path | None) -> None:
    """Measure the C engine's instructions per operator under QEMU and fit the cost model.

    Builds the llama engine for every family with seeded random models at 2/3/4/8/32 bits,
    runs each under -icount shift=0 at trace levels off/tokens/spans, fits instructions per
    operator kind and writes the calibration with the git hash of firmware/ (docs/emulator.md).
    """
    from tinytelem.costing.measure import FAMILIES, SHAPES, calibrate, write_calibration
    from tinytelem.firmware.targets import firmware_dir

    root = firmware_dir().parent
    for name in families:
        if name not in FAMILIES:
            raise click.BadParameter(f"unknown family {name!r}; use {', '.join(FAMILIES)}")
    for name in shapes:
        if name not in SHAPES:
            raise click.BadParameter(f"unknown shape {name!r}; use {', '.join(SHAPES)}")
    doc = calibrate(list(families or FAMILIES), list(shapes or SHAPES),
                    work_dir or root / "build" / "calibration", root,
                    progress=lambda s: click.echo(f"... {s}", err=True))
    path = out or root / "calibration" / "engine.json"
    write_calibration(doc, path)
    click.echo(f"wrote {path} (engine {doc['engine_hash']})")


@firmware.command("flash")
@click.option("--target", "target", default=None,
              help="Firmware target (stm32f405, stm32h7, nrf52840, rp2040, rp2350, "
                   "esp-idf:esp32s3); picks its board when --board is not given.")
@click.option("--board", "board", default=None,
              help="Board file: nucleo-f446re, nucleo-h743zi, nrf52840-dk, pico, pico2, "
                   "esp32-s3-devkitc-1 (docs/boards.md).")
@click.option("--model", "model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help=".tlm model to link in (llama engine); default: the demo "
                                 "engine.")
@click.option("--probe", default=None, metavar="ID",
              help="Which probe or port: a probe's serial number (pyOCD --uid, OpenOCD "
                   "adapter serial, picotool --ser) or the serial port for idf.py (-p).")
@click.option("--dry-run", is_flag=True,
              help="Print the build and the flash command without running them (every board "
                   "when neither --board nor --target is given).")
def flash_cmd(target: str | None, board: str | None, model: Path | None, probe: str | None,
              dry_run: bool) -> None:
    """Build the firmware for a board and flash it with the tool the board's users use."""
    from tinytelem.errors import ConfigError
    from tinytelem.firmware.boards import all_boards, get_board
    from tinytelem.firmware.flash import flash, plan_flash

    if board is not None:
        boards = [get_board(board)]
        if target is not None and boards[0].firmware_target != target:
            raise ConfigError(f"{boards[0].display_name} runs target "
                              f"{boards[0].firmware_target}, not {target}")
    elif target is not None:
        boards = [b for b in all_boards().values() if b.firmware_target == target]
        if not boards:
            known = sorted({b.firmware_target for b in all_boards().values()})
            raise ConfigError(f"no board file runs target {target!r}; boards run "
                              f"{', '.join(known)}")
    elif dry_run:
        boards = list(all_boards().values())
    else:
        raise ConfigError("give --board (or --target) to flash; --dry-run alone prints the "
                          "command of every board")
    if not dry_run and len(boards) > 1:
        raise ConfigError(f"target {target} is on several boards "
                          f"({', '.join(b.name for b in boards)}); choose one with --board")
    plans = [plan_flash(b, model, probe) for b in boards]
    if not dry_run:
        click.echo(f"building {plans[0].build}; then: {plans[0].shell()}", err=True)
        flash(plans[0])
        click.echo(f"flashed {plans[0].board.display_name}; link: {plans[0].board.link['host']}"
                   f" at {plans[0].board.baud} baud")
        return
    for p in plans:
        b = p.board
        click.echo(f"# {b.display_name} ({b.name}): build {p.build}")
        click.echo(f"#   {b.status}")
        click.echo(p.shell())


flash_cmd.name = "flash"
