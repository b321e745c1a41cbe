"""``tinytelem sensors``: list the power sensors present, read one for a while.

``list`` shows serial ports that look like a PPK2 or an INA bridge, whether the Joulescope
driver is installed, and every Linux power channel (RAPL, hwmon, Jetson, Raspberry Pi 5 PMIC).
``read`` runs one sensor actor for ``--seconds`` and prints what it measured; ``--emulate``
points the real driver at an in-process emulator on a pseudo-terminal (no hardware needed).
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from tinytelem.cli.common import run_trio
from tinytelem.errors import ConfigError

PPK2_USB = (0x1915, 0xC00A)


def _present(sysfs_root: str) -> dict[str, Any]:
    from tinytelem.sensors.joulescope import driver_available
    from tinytelem.sensors.linux import discover
    from tinytelem.transports.serial import list_serial_ports

    ports = []
    for p in list_serial_ports():
        if p.vid is None:  # on-board UARTs: not a USB sensor
            continue
        kind = "ppk2" if (p.vid, p.pid) == PPK2_USB else "serial"
        ports.append({"spec": f"{'ppk2' if kind == 'ppk2' else 'ina'}:{p.device}",
                      "kind": kind, "description": p.description})
    linux = [{"spec": c.spec, "source": c.source, "kind": c.kind} for c in discover(sysfs_root)]
    return {"serial": ports, "joulescope_driver": driver_available(), "linux": linux}


@click.group("sensors")
def sensors() -> None:
    """Power sensors: list what is present, read one."""


@sensors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sysfs-root", default="/", show_default=True, hidden=True)
def list_cmd(as_json: bool, sysfs_root: str) -> None:
    """Show the sensors this machine can use (and the --sensor spec for each)."""
    found = _present(sysfs_root)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("--sensor spec", "what")
    for p in found["serial"]:
        table.add_row(p["spec"], p["description"])
    for c in found["linux"]:
        table.add_row(c["spec"], f"{c['source']} ({c['kind']})")
    table.add_row("joulescope", "driver installed" if found["joulescope_driver"]
                  else "not available here: pip install 'tinytelem[joulescope]'")
    if not found["linux"]:
        table.add_row("rapl / hwmon / jetson / rpi5-pmic", "not available here")
    Console().print(table)


async def _read(spec: str, seconds: float, emulate: bool, calibration: str | None
                ) -> dict[str, Any]:
    import numpy as np
    import trio

    from tinytelem.records import PowerBlock, PowerGap, Record
    from tinytelem.sensors.calibration import Calibration
    from tinytelem.sensors.open import open_sensor, parse_sensor_spec

    cal = Calibration.load(calibration) if calibration else None
    kind, _target, _opts = parse_sensor_spec(spec)
    blocks: list[PowerBlock] = []
    gaps: list[PowerGap] = []
    async with trio.open_nursery() as nursery:
        if emulate:
            if kind == "ppk2":
                from tinytelem.sensors.ppk2_emulator import PPK2Emulator

                emu: Any = PPK2Emulator()
                spec = f"ppk2:{emu.path}"
            elif kind == "ina":
                from tinytelem.sensors.ina import InaBridgeEmulator

                emu = InaBridgeEmulator(lambda i: np.where(i % 400 < 100, 0.25, 0.02))
                spec = f"ina:{emu.url}"
            else:
                raise ConfigError("--emulate works with ppk2 and ina sensors")
            await nursery.start(emu.run)
        sensor = open_sensor(spec, calibration=cal)
        send, recv = trio.open_memory_channel[Record](256)
        await nursery.start(sensor.run, send)
        with trio.move_on_after(seconds):
            async with recv:
                async for rec in recv:
                    if isinstance(rec, PowerBlock):
                        blocks.append(rec)
                    elif isinstance(rec, PowerGap):
                        gaps.append(rec)
        nursery.cancel_scope.cancel()
    current = (np.concatenate([b.current_a for b in blocks]).astype(np.float64)
               if blocks else np.zeros(0))
    volts = float(blocks[-1].voltage_v) if blocks else math.nan
    rate = float(blocks[-1].sample_rate_hz) if blocks else math.nan
    mean_a = float(current.mean()) if current.size else math.nan
    return {
        "sensor": spec.split("?")[0] if not emulate else kind + " (emulated)",
        "samples": int(current.size), "sample_rate_hz": rate,
        "gaps": len(gaps), "missing_samples": int(sum(g.n_missing for g in gaps)),
        "mean_current_a": mean_a, "max_current_a": float(current.max()) if current.size
        else math.nan, "voltage_v": volts, "mean_power_w": mean_a * volts,
        "energy_j": float(current.sum() * volts / rate) if current.size else 0.0,
        "calibration_id": cal.id if cal else "none",
    }


@sensors.command("read")
@click.argument("spec")
@click.option("--seconds", type=click.FloatRange(0.05, 3600), default=2.0, show_default=True)
@click.option("--emulate", is_flag=True,
              help="Run the real driver against an emulated ppk2 / ina on a pseudo-terminal.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
              help="Calibration TOML to apply (see `tinytelem calibrate`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def read_cmd(spec: str, seconds: float, emulate: bool, calibration: str | None,
             as_json: bool) -> None:
    """Read sensor SPEC (e.g. ppk2:/dev/ttyACM0, rapl) for --seconds and summarise."""
    result = run_trio(lambda: _read(spec, seconds, emulate, calibration))
    if as_json:
        click.echo(json.dumps(result, indent=2, allow_nan=True))
        return
    for k, v in result.items():
        click.echo(f"{k:>16}  {v:.6g}" if isinstance(v, float) else f"{k:>16}  {v}")
