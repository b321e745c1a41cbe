"""``tinytelem doctor`` (cli/doctor.py): tools, targets, serial ports and power sensors.

Missing tools are simulated the way a user meets them (the ``no_tools`` fixture): PATH points at
an empty directory, so every ``shutil.which`` lookup fails for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.firmware.helpers import need_tools
from tinytelem.cli import doctor as doctor_mod
from tinytelem.cli.main import cli
from tinytelem.firmware.targets import APT, TARGETS
from tinytelem.transports import serial as serial_mod
from tinytelem.transports.serial import PortInfo


@pytest.fixture
def no_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """No serial ports, whatever this machine has plugged in."""
    monkeypatch.setattr(serial_mod, "list_serial_ports", lambda: [])


def test_doctor_json_without_any_tool(no_tools: None, no_ports: None) -> None:
    res = CliRunner().invoke(cli, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    tools = {t["tool"]: t for t in report["tools"]}
    assert set(tools) == set(APT)
    for name, t in tools.items():
        assert not t["present"] and t["path"] is None and t["version"] == ""
        assert "bash scripts/setup-system.sh" in t["install"]
        assert APT[name] in t["install"]
    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == set(TARGETS)
    assert not any(t["build"] for t in targets.values())
    assert targets["riscv32"]["missing"] == ["make", "riscv64-unknown-elf-gcc",
                                             "qemu-system-riscv32"]
    assert targets["cortex-m4"]["run"] is False and targets["cortex-m4"]["device"] == \
        "qemu:cortex-m4"
    assert targets["native"]["device"] == "native:"
    assert targets["rp2040"]["device"] is None
    assert report["serial_ports"] == []


def test_doctor_json_with_the_tools_present(no_ports: None) -> None:
    need_tools("cortex-m4", run=False)
    report = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    tools = {t["tool"]: t for t in report["tools"]}
    arm = tools["arm-none-eabi-gcc"]
    assert arm["present"] and arm["install"] is None
    assert "arm-none-eabi-gcc" in arm["version"]  # first line of `--version`
    assert Path(arm["path"]).is_file()
    targets = {t["target"]: t for t in report["targets"]}
    assert targets["cortex-m4"]["build"] and targets["nrf52840"]["build"]


def test_doctor_table_marks_missing_tools(no_tools: None, no_ports: None, wide: None) -> None:
    res = CliRunner().invoke(cli, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.output
    qemu_line = next(ln for ln in out.splitlines() if "qemu-system-arm" in ln)
    assert "missing" in qemu_line and "scripts/setup-system.sh" in qemu_line
    m4_line = next(ln for ln in out.splitlines() if ln.strip().startswith("│ cortex-m4"))
    assert "no" in m4_line and "qemu:cortex-m4" in m4_line
    rp_line = next(ln for ln in out.splitlines() if "rp2040" in ln)
    assert "flash a board" in rp_line
    assert "serial ports: none" in out
    assert "power sensors: none" in out


def test_doctor_table_lists_ports_and_sensors(monkeypatch: pytest.MonkeyPatch, wide: None,
                                             tmp_path: Path) -> None:
    ports = [PortInfo("/dev/ttyACM7", "PPK2", "USB VID:PID=1915:C00A", 0x1915, 0xC00A, "X1"),
             PortInfo("/dev/ttyS0", "n/a", "n/a", None, None, None)]
    monkeypatch.setattr(serial_mod, "list_serial_ports", lambda: ports)
    hwmon = tmp_path / "hwmon"
    for name, kind, files in (("hwmon0", "ina3221", []), ("hwmon1", "coretemp", []),
                              ("hwmon2", "BAT0", ["power1_input"]), ("hwmon3", None, [])):
        d = hwmon / name
        d.mkdir(parents=True)
        if kind is not None:
            (d / "name").write_text(kind + "\n")
        for f in files:
            (d / f).write_text("1000\n")
    monkeypatch.setattr(doctor_mod, "HWMON_DIR", hwmon)
    report = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    assert report["serial_ports"][0] == {
        "device": "/dev/ttyACM7", "description": "PPK2", "usb": "1915:c00a",
        "sensor": "Nordic Power Profiler Kit II (ppk2)", "serial_number": "X1",
        "chip": "Nordic Power Profiler Kit II (ppk2)", "role": "power-sensor"}
    assert report["serial_ports"][1]["usb"] is None
    assert report["power_sensors"] == ["Nordic Power Profiler Kit II (ppk2)",
                                       "hwmon hwmon0 (ina3221)", "hwmon hwmon2 (BAT0)"]
    res = CliRunner().invoke(cli, ["doctor"])
    assert "serial ports: /dev/ttyACM7, /dev/ttyS0" in res.output
    assert "power sensors: Nordic Power Profiler Kit II (ppk2), hwmon hwmon0 (ina3221)" \
        in res.output


def test_doctor_without_hwmon_and_with_a_broken_tool(tmp_path: Path) -> None:
    assert doctor_mod._linux_power(tmp_path / "absent") == []
    assert doctor_mod._version(str(tmp_path / "no-such-tool")) == ""
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    assert doctor_mod._version(str(silent)) == ""


def _port(device: str, vid: int | None, pid: int | None, serial: str | None,
          description: str) -> Any:
    """A pyserial ListPortInfo as list_ports.comports() returns it (no sysfs behind it)."""
    from serial.tools.list_ports_common import ListPortInfo

    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial, description
    return info


def test_doctor_names_probes_and_usb_serial_chips(monkeypatch: pytest.MonkeyPatch,
                                                 wide: None) -> None:
    from serial.tools import list_ports

    fake = [_port("/dev/ttyACM0", 0x0483, 0x374B, "066DFF", "STM32 STLink"),
            _port("/dev/ttyACM1", 0x2E8A, 0x000C, "E6614C", "Debugprobe on Pico (CMSIS-DAP)"),
            _port("/dev/ttyACM2", 0x303A, 0x1001, "7C:DF", "USB JTAG/serial debug unit"),
            _port("/dev/ttyUSB0", 0x1A86, 0x55D4, "5434", "USB Single Serial"),
            _port("/dev/ttyUSB1", 0x0403, 0x6001, "A50285", "FT232R USB UART"),
            _port("/dev/ttyACM3", 0x1366, 0x1015, "000683", "J-Link"),
            _port("/dev/ttyACM4", 0x1234, 0x5678, None, "something else"),
            _port("/dev/ttyS0", None, None, None, "n/a")]
    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    monkeypatch.setattr(doctor_mod, "_linux_power", lambda hwmon=None: [])
    report = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    by_dev = {p["device"]: p for p in report["serial_ports"]}
    assert by_dev["/dev/ttyACM0"]["chip"] == "ST-LINK/V2-1"
    assert by_dev["/dev/ttyACM0"]["role"] == "probe"
    assert by_dev["/dev/ttyACM0"]["serial_number"] == "066DFF"
    assert by_dev["/dev/ttyACM1"]["chip"] == "Raspberry Pi Debug Probe (CMSIS-DAP)"
    assert by_dev["/dev/ttyACM2"]["role"] == "usb-cdc"
    assert by_dev["/dev/ttyUSB0"]["chip"] == "WCH CH9102"
    assert by_dev["/dev/ttyUSB1"]["chip"] == "FTDI FT232R"
    assert by_dev["/dev/ttyACM3"]["chip"].startswith("SEGGER J-Link OB")
    assert by_dev["/dev/ttyACM4"]["chip"] is None and by_dev["/dev/ttyACM4"]["usb"] == "1234:5678"
    assert by_dev["/dev/ttyS0"]["chip"] is None and by_dev["/dev/ttyS0"]["usb"] is None
    assert all(p["sensor"] is None for p in report["serial_ports"])
    assert report["power_sensors"] == []
    table = CliRunner().invoke(cli, ["doctor"]).output
    line = next(ln for ln in table.splitlines() if "/dev/ttyUSB0" in ln and "1a86" in ln)
    assert "WCH CH9102" in line and "usb-serial" in line and "5434" in line

