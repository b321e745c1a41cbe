"""Open a device URL as a stream: the single entry point the link actor uses."""

from __future__ import annotations

from tinytelem.errors import ConfigError
from tinytelem.transports.base import LinkStream
from tinytelem.transports.serial import open_serial
from tinytelem.transports.subprocess import open_process_stream
from tinytelem.transports.tcp import DEFAULT_CONNECT_TIMEOUT, open_tcp
from tinytelem.transports.url import (
    DeviceURL,
    EmuURL,
    ExecURL,
    SerialURL,
    TcpURL,
    parse_device_url,
)

__all__ = ["open_stream"]


async def open_stream(
    url: DeviceURL | str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> LinkStream:
    """Open a tcp:, serial: or exec: device URL.

    The result is a :class:`LinkStream`; tcp and exec links are also
    :class:`trio.abc.HalfCloseableStream` (check with ``isinstance``), serial links are not.

    Args:
        url: a parsed URL or the string form.
        connect_timeout: seconds to wait for a TCP connection.

    Raises:
        ConfigError: a bad URL, ``emu:`` (the caller starts the twin and connects over tcp),
            or a local problem the user must fix (no such port, permission denied).
        LinkBroken: the device did not answer (refused, busy, unreachable).
    """
    if isinstance(url, str):
        url = parse_device_url(url)
    if isinstance(url, TcpURL):
        return await open_tcp(url, connect_timeout=connect_timeout)
    if isinstance(url, SerialURL):
        return await open_serial(url.port, url.baud)
    if isinstance(url, ExecURL):
        return await open_process_stream(url)
    if isinstance(url, EmuURL):
        raise ConfigError(
            f"{url}: the device twin is not opened directly; start it with "
            f"`tinytelem emulate --platform {url.platform} --listen tcp://127.0.0.1:0` "
            "and open the tcp:// URL it prints"
        )
    raise ConfigError(f"{url}: no transport for this device URL")
