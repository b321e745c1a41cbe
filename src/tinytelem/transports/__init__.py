"""Byte transports to devices: trio streams, no parsing (see docs/transports.md).

``open_stream(url)`` opens ``tcp://``, ``serial:`` and ``exec:`` device URLs; every stream
raises :class:`~tinytelem.errors.LinkClosed` after our own ``aclose`` and
:class:`~tinytelem.errors.LinkBroken` when the world breaks the link, and otherwise follows
trio's stream contract (``receive_some`` returns ``b""`` at a clean end of stream).
"""

from __future__ import annotations

from tinytelem.transports.base import (
    HalfCloseableLinkStream,
    LinkStream,
    StreamBroken,
    StreamClosed,
)
from tinytelem.transports.memory import memory_link_pair
from tinytelem.transports.opener import open_stream
from tinytelem.transports.serial import PortInfo, SerialStream, list_serial_ports, open_serial
from tinytelem.transports.subprocess import ProcessStream, open_process_stream
from tinytelem.transports.tcp import open_tcp
from tinytelem.transports.url import (
    DEFAULT_BAUD,
    DeviceURL,
    EmuURL,
    ExecURL,
    SerialURL,
    TcpURL,
    parse_device_url,
)

__all__ = [
    "DEFAULT_BAUD",
    "DeviceURL",
    "EmuURL",
    "ExecURL",
    "HalfCloseableLinkStream",
    "LinkStream",
    "PortInfo",
    "ProcessStream",
    "SerialStream",
    "SerialURL",
    "StreamBroken",
    "StreamClosed",
    "TcpURL",
    "list_serial_ports",
    "memory_link_pair",
    "open_process_stream",
    "open_serial",
    "open_stream",
    "open_tcp",
    "parse_device_url",
]
