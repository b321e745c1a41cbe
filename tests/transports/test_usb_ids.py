"""The USB id table doctor names ports with."""

from __future__ import annotations

from tinytelem.transports.usb_ids import USB_IDS, identify


def test_every_usb_id_names_its_role_and_source() -> None:
    roles = {"probe", "usb-serial", "boot-rom", "usb-cdc", "power-sensor"}
    assert all(e.source and e.role in roles for e in USB_IDS.values())


def test_identify_needs_both_ids() -> None:
    ppk2 = identify(0x1915, 0xC00A)
    assert ppk2 is not None and ppk2.role == "power-sensor"
    assert identify(None, 0xC00A) is None and identify(0x1915, None) is None
    assert identify(0xFFFF, 0xFFFF) is None


def test_the_probes_and_chips_of_the_boards_are_known() -> None:
    names = {e.name for e in USB_IDS.values()}
    for wanted in ("ST-LINK/V2", "ST-LINK/V2-1", "STLINK-V3E", "SEGGER J-Link",
                   "Arm DAPLink / CMSIS-DAP", "Raspberry Pi Debug Probe (CMSIS-DAP)",
                   "Raspberry Pi RP2040 boot ROM (BOOTSEL)",
                   "Raspberry Pi RP2350 boot ROM (BOOTSEL)",
                   "WCH CH340", "WCH CH9102", "FTDI FT232R", "FTDI FT2232",
                   "Nordic Power Profiler Kit II (ppk2)"):
        assert wanted in names, wanted
