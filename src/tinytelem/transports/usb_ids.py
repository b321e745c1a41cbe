"""USB vendor:product ids of the probes, USB-serial chips, boot ROMs and sensors met on the desk.

``tinytelem doctor`` names the device behind each serial port with :func:`identify`. Every entry
says where its ids come from, so a wrong or missing one can be checked and fixed; a port whose
ids are not here is still listed, just not named.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["USB_IDS", "UsbId", "identify"]


@dataclass(frozen=True)
class UsbId:
    """What a USB vendor:product id is."""

    name: str
    role: str
    """``probe`` (debug probe, often with a virtual COM port), ``usb-serial`` (a bridge chip),
    ``boot-rom`` (a chip's USB boot loader), ``usb-cdc`` (a chip's own USB serial port) or
    ``power-sensor``."""
    source: str


_OPENOCD_STLINK = "OpenOCD src/jtag/drivers/stlink_usb.c (STLINK_*_PID)"
_JLINK = ("SEGGER J-Link product ids as listed by libjaylink and SEGGER's udev rules "
          "(99-jlink.rules)")
_RPI = "Raspberry Pi's USB product id list (github.com/raspberrypi/usb-pid)"
_CP210X = "Linux drivers/usb/serial/cp210x.c"
_CH34X = "Linux drivers/usb/serial/ch341.c (CH340/CH341); WCH CH343 / CH9102 datasheets (CDC)"
_FTDI = "Linux drivers/usb/serial/ftdi_sio_ids.h"

USB_IDS: dict[tuple[int, int], UsbId] = {
    (0x0483, 0x3748): UsbId("ST-LINK/V2", "probe", _OPENOCD_STLINK),
    (0x0483, 0x374B): UsbId("ST-LINK/V2-1", "probe", _OPENOCD_STLINK),
    (0x0483, 0x3752): UsbId("ST-LINK/V2-1 (no mass storage)", "probe", _OPENOCD_STLINK),
    (0x0483, 0x374D): UsbId("STLINK-V3 (USB loader)", "probe", _OPENOCD_STLINK),
    (0x0483, 0x374E): UsbId("STLINK-V3E", "probe", _OPENOCD_STLINK),
    (0x0483, 0x374F): UsbId("STLINK-V3S", "probe", _OPENOCD_STLINK),
    (0x0483, 0x3753): UsbId("STLINK-V3 (two virtual COM ports)", "probe", _OPENOCD_STLINK),
    (0x0483, 0x3754): UsbId("STLINK-V3E (no mass storage)", "probe", _OPENOCD_STLINK),
    (0x1366, 0x0101): UsbId("SEGGER J-Link", "probe", _JLINK),
    (0x1366, 0x0105): UsbId("SEGGER J-Link (with virtual COM port)", "probe", _JLINK),
    (0x1366, 0x1015): UsbId("SEGGER J-Link OB (with virtual COM port)", "probe", _JLINK),
    (0x1366, 0x1020): UsbId("SEGGER J-Link", "probe", _JLINK),
    (0x1366, 0x1050): UsbId("SEGGER J-Link", "probe", _JLINK),
    (0x1366, 0x1051): UsbId("SEGGER J-Link (with virtual COM port)", "probe", _JLINK),
    (0x1366, 0x1061): UsbId("SEGGER J-Link (with virtual COM port)", "probe", _JLINK),
    (0x0D28, 0x0204): UsbId("Arm DAPLink / CMSIS-DAP", "probe",
                            "Arm Mbed DAPLink (github.com/ARMmbed/DAPLink); pyOCD's CMSIS-DAP ids"),
    (0x2E8A, 0x000C): UsbId("Raspberry Pi Debug Probe (CMSIS-DAP)", "probe", _RPI),
    (0x2E8A, 0x0003): UsbId("Raspberry Pi RP2040 boot ROM (BOOTSEL)", "boot-rom", _RPI),
    (0x2E8A, 0x000F): UsbId("Raspberry Pi RP2350 boot ROM (BOOTSEL)", "boot-rom", _RPI),
    (0x2E8A, 0x000A): UsbId("Raspberry Pi Pico SDK USB CDC (RP2040)", "usb-cdc", _RPI),
    (0x2E8A, 0x0009): UsbId("Raspberry Pi Pico SDK USB CDC (RP2350)", "usb-cdc", _RPI),
    (0x2E8A, 0x0005): UsbId("Raspberry Pi Pico running MicroPython", "usb-cdc", _RPI),
    (0x303A, 0x1001): UsbId("Espressif USB-Serial-JTAG (ESP32-S3/C3/C6/H2)", "usb-cdc",
                            "Espressif ESP-IDF Programming Guide, USB Serial/JTAG Controller"),
    (0x303A, 0x0002): UsbId("Espressif ESP32-S2/S3 ROM USB CDC (download mode)", "boot-rom",
                            "Espressif esptool documentation, USB OTG download mode"),
    (0x10C4, 0xEA60): UsbId("Silicon Labs CP210x (CP2102/CP2102N/CP2104)", "usb-serial", _CP210X),
    (0x10C4, 0xEA70): UsbId("Silicon Labs CP2105 (dual)", "usb-serial", _CP210X),
    (0x10C4, 0xEA71): UsbId("Silicon Labs CP2108 (quad)", "usb-serial", _CP210X),
    (0x1A86, 0x7523): UsbId("WCH CH340", "usb-serial", _CH34X),
    (0x1A86, 0x5523): UsbId("WCH CH341", "usb-serial", _CH34X),
    (0x1A86, 0x55D3): UsbId("WCH CH343", "usb-serial", _CH34X),
    (0x1A86, 0x55D4): UsbId("WCH CH9102", "usb-serial", _CH34X),
    (0x0403, 0x6001): UsbId("FTDI FT232R", "usb-serial", _FTDI),
    (0x0403, 0x6010): UsbId("FTDI FT2232", "usb-serial", _FTDI),
    (0x0403, 0x6011): UsbId("FTDI FT4232", "usb-serial", _FTDI),
    (0x0403, 0x6014): UsbId("FTDI FT232H", "usb-serial", _FTDI),
    (0x0403, 0x6015): UsbId("FTDI FT-X (FT230X/FT231X)", "usb-serial", _FTDI),
    (0x1915, 0x521F): UsbId("Nordic nRF52840 Dongle (open DFU boot loader)", "boot-rom",
                            "Nordic nRF52840 Dongle user guide and nrfutil's USB ids"),
    (0x1915, 0xC00A): UsbId("Nordic Power Profiler Kit II (ppk2)", "power-sensor",
                            "Nordic PPK2 (nRF Connect Power Profiler; the ppk2-api package)"),
    (0x16D0, 0x0E88): UsbId("Joulescope JS110", "power-sensor", "Jetperch joulescope driver"),
    (0x16D0, 0x10BA): UsbId("Joulescope JS220", "power-sensor", "Jetperch joulescope driver"),
}
"""Known ids. Probes without a serial interface (an ST-LINK/V2 dongle) appear in this table but
never among serial ports; they are here so that a future USB scan can use the same table."""


def identify(vid: int | None, pid: int | None) -> UsbId | None:
    """The entry for a port's USB ids, or None (an on-board UART, or ids not in the table)."""
    if vid is None or pid is None:
        return None
    return USB_IDS.get((vid, pid))
