"""``tinytelem platforms``: list the supported platforms and show one in full.

Humans get rich tables with units (KiB, MHz, MB/s, mW); scripts get ``--json``, which is
exactly :meth:`tinytelem.platforms.Platform.to_dict` so it round-trips through
``Platform.from_dict``.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinytelem.errors import ConfigError
from tinytelem.platforms import Platform, all_platforms, get_platform
from tinytelem.units import DASH, format_bytes, format_hz, format_rate, format_watts

# Width used when stdout is not a terminal (pipes, CliRunner): wide enough that no column of
# the list table is truncated, so greps on the output work.
_PIPE_WIDTH = 160

_LABELS: dict[str, str] = {
    "display_name": "Display name",
    "aliases": "Aliases",
    "vendor": "Vendor",
    "core": "Core",
    "isa": "ISA",
    "cores": "Cores",
    "cpu_hz": "CPU clock",
    "sram_bytes": "SRAM",
    "psram_bytes": "PSRAM",
    "flash_bytes": "Flash",
    "dram_bytes": "DRAM",
    "simd": "SIMD / FPU",
    "int8_macs_per_cycle": "int8 MACs/cycle/core",
    "fp32_flops_per_cycle": "fp32 FLOPs/cycle/core",
    "sram_bandwidth_bytes_per_s": "SRAM bandwidth",
    "psram_bandwidth_bytes_per_s": "PSRAM bandwidth",
    "flash_bandwidth_bytes_per_s": "Flash bandwidth",
    "dram_bandwidth_bytes_per_s": "DRAM bandwidth",
    "active_power_w": "Active power",
    "idle_power_w": "Idle power",
    "supply_voltage_v": "Supply voltage",
    "tick_hz": "Timestamp tick",
    "toolchain": "Toolchain",
    "qemu_machine": "QEMU machine",
}


def format_field(platform: Platform, key: str) -> str:
    """One field of ``platform`` as a human string with its unit."""
    value = getattr(platform, key)
    if key.endswith("_bytes"):
        text = format_bytes(value)
    elif key.endswith("_bytes_per_s"):
        text = format_rate(value)
    elif key.endswith("_hz"):
        text = format_hz(value)
    elif key.endswith("_w"):
        text = format_watts(value)
    elif key.endswith("_v"):
        text = f"{value:g} V"
    elif isinstance(value, tuple):
        text = ", ".join(value) if value else "none"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value) if value != "" else DASH
    if platform.is_estimate(key):
        text = f"≈ {text} (estimate)"
    return text


def _console() -> Console:
    # Resolve the stream at call time: CliRunner swaps sys.stdout per invocation.
    stream = sys.stdout
    width = None if stream.isatty() else _PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False)


def _resolve(name: str) -> Platform:
    try:
        return get_platform(name)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from exc


def _complete_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [p.name for p in all_platforms() if p.name.startswith(incomplete.lower())]


@click.group(name="platforms")
def platforms() -> None:
    """List and show supported platforms (clocks, memories, SIMD, power, QEMU machine)."""


@platforms.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print every platform as JSON.")
def list_cmd(as_json: bool) -> None:
    """One line per platform: core, clock, memories, SIMD and QEMU machine."""
    items = all_platforms()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in items], indent=2))
        return
    table = Table(title="tinytelem platforms", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("core")
    table.add_column("clock MHz", justify="right")
    for label in ("SRAM", "PSRAM", "flash", "DRAM"):
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("SIMD")
    table.add_column("QEMU", no_wrap=True)
    for p in items:
        core = p.core if p.cores == 1 else f"{p.cores}x {p.core}"
        table.add_row(
            p.name,
            core,
            f"{p.cpu_hz / 1e6:g}",
            format_bytes(p.sram_bytes),
            format_bytes(p.psram_bytes),
            format_bytes(p.flash_bytes),
            format_bytes(p.dram_bytes),
            ", ".join(p.simd) or "none",
            p.qemu_machine or DASH,
        )
    _console().print(table)


@platforms.command(name="show")
@click.argument("name", shell_complete=_complete_names)
@click.option("--json", "as_json", is_flag=True, help="Print the platform as JSON.")
def show_cmd(name: str, as_json: bool) -> None:
    """Every field of platform NAME (a name or alias, any case), with units and sources."""
    p = _resolve(name)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    console = _console()
    table = Table(title=f"{p.name}: {p.display_name}", title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, label in _LABELS.items():
        table.add_row(label, format_field(p, key))
    table.add_row(
        "Chip int8 rate",
        f"≈ {p.int8_macs_per_s / 1e9:.3g} GMAC/s ({p.cores} cores x clock x MACs/cycle)",
    )
    console.print(table)
    console.print(Text("Sources", style="bold"))
    for key, source in p.sources.items():
        console.print(Text(f"  {key}: {source}"))
    console.print(Text("Notes", style="bold"))
    console.print(Text("  " + p.notes.strip()))
