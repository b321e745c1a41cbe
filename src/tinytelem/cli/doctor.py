"""``tinytelem doctor``: what this machine can build, emulate and measure, and how to fix gaps."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click


def _version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0].strip() if out else ""


def _tools() -> list[dict[str, Any]]:
    from tinytelem.firmware.targets import APT, INSTALL_HINT

    rows = []
    for tool, package in APT.items():
        found = shutil.which(tool) or (tool == "cc" and (shutil.which("gcc") or
                                                         shutil.which("clang")))
        rows.append({
            "tool": tool, "present": bool(found), "path": found or None,
            "version": _version(str(found)) if found else "",
            "install": None if found else
            f"{INSTALL_HINT}  (or: sudo apt-get install --no-install-recommends {package})",
        })
    return rows


def _firmware_sources() -> dict[str, Any]:
    """Where the firmware's C sources are (a checkout's firmware/ or the wheel's copy)."""
    from tinytelem.errors import ConfigError
    from tinytelem.firmware.targets import firmware_dir

    try:
        return {"path": str(firmware_dir()), "problem": None}
    except ConfigError as exc:
        return {"path": None, "problem": str(exc)}


def _targets(sources: dict[str, Any]) -> list[dict[str, Any]]:
    from tinytelem.firmware.targets import TARGETS, missing_tools

    rows = []
    for t in TARGETS.values():
        missing = missing_tools(t)
        if sources["path"] is None:  # nothing can be built or run without the sources
            missing = ["firmware sources", *missing]
        build_missing = [m for m in missing if m != t.qemu]
        rows.append({"target": t.name, "build": not build_missing,
                     "run": (t.native and not build_missing)
                     or (t.qemu is not None and not missing),
                     "missing": missing, "device": "native:" if t.native else
                     (f"qemu:{t.name}" if t.qemu else None)})
    return rows


def _serial_ports() -> list[dict[str, Any]]:
    """Serial ports, each named from its USB ids (transports/usb_ids.py) when known."""
    from tinytelem.transports.serial import list_serial_ports
    from tinytelem.transports.usb_ids import identify

    rows = []
    for p in list_serial_ports():
        known = identify(p.vid, p.pid)
        rows.append({"device": p.device, "description": p.description,
                     "usb": f"{p.vid:04x}:{p.pid:04x}" if p.vid and p.pid else None,
                     "sensor": known.name if known and known.role == "power-sensor" else None,
                     "serial_number": p.serial_number,
                     "chip": known.name if known else None,
                     "role": known.role if known else None})
    return rows


HWMON_DIR = Path("/sys/class/hwmon")
"""Where Linux exposes hardware monitors (a parameter so tests can point at a fake tree)."""


def _linux_power(hwmon: Path | None = None) -> list[str]:
    """Power readings the kernel exposes (INA2xx through hwmon, batteries, Jetson rails)."""
    found = []
    hwmon = HWMON_DIR if hwmon is None else hwmon
    if hwmon.is_dir():
        for h in sorted(hwmon.iterdir()):
            name = (h / "name").read_text().strip() if (h / "name").is_file() else ""
            if name.startswith("ina") or any(h.glob("power*_input")):
                found.append(f"hwmon {h.name} ({name})")
    return found


def collect() -> dict[str, Any]:
    """Everything doctor reports, as plain data."""
    ports = _serial_ports()
    sources = _firmware_sources()
    return {"tools": _tools(), "firmware_sources": sources, "targets": _targets(sources),
            "serial_ports": ports,
            "power_sensors": [p["sensor"] for p in ports if p["sensor"]] + _linux_power()}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Which toolchains, QEMU machines, serial ports and power sensors are usable here."""
    report = collect()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tools = Table("tool", "status", "version / install with", title="Tools")
    for r in report["tools"]:
        tools.add_row(r["tool"], "[green]ok[/]" if r["present"] else "[red]missing[/]",
                      r["version"] if r["present"] else r["install"])
    console.print(tools)
    sources = report["firmware_sources"]
    console.print(f"firmware sources: {sources['path']}" if sources["path"] else
                  f"[red]firmware sources missing[/]: {sources['problem']}")
    targets = Table("target", "build", "run", "device URL", title="Firmware targets")
    for r in report["targets"]:
        targets.add_row(r["target"], "yes" if r["build"] else "no",
                        "yes" if r["run"] else ("-" if r["device"] is None else "no"),
                        r["device"] or "(flash a board; then serial:// or tcp://)")
    console.print(targets)
    ports = report["serial_ports"]
    console.print(f"serial ports: {', '.join(p['device'] for p in ports) or 'none'}")
    if any(p["chip"] for p in ports):
        known = Table("port", "USB id", "what", "role", "serial number", title="Serial ports")
        for p in ports:
            known.add_row(p["device"], p["usb"] or "-", p["chip"] or p["description"],
                          p["role"] or "-", p["serial_number"] or "-")
        console.print(known)
    sensors = report["power_sensors"]
    console.print(f"power sensors: {', '.join(sensors) or 'none (use --sensor sim with emu:)'}")
