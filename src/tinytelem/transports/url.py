"""Device URLs: the one string a user types to pick a device.

Accepted forms::

    emu:<platform>                    the device twin (the caller spawns it, then uses tcp)
    tcp://host:port                   a device or twin listening on TCP
    serial:///dev/ttyACM0?baud=N      a serial port (POSIX path; default baud 921600)
    serial:COM3?baud=N                a serial port (Windows name)
    exec:<command line>               a child process speaking the protocol on stdin/stdout

    qemu:<target>                     the firmware under QEMU (cortex-m4, cortex-m7, stm32f405,
                                      riscv32); the caller builds it and starts QEMU
    native:                           the firmware built for this host, run as a child process
Parsing is pure (no I/O, no trio) so the CLI can validate options cheaply; opening is
:func:`tinytelem.transports.open_stream`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields
from typing import ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tinytelem.errors import ConfigError

__all__ = [
    "DEFAULT_BAUD",
    "DeviceURL",
    "EmuURL",
    "ExecURL",
    "NativeURL",
    "QemuURL",
    "SerialURL",
    "TcpURL",
    "parse_device_url",
    "parse_host_port",
]

DEFAULT_BAUD = 921600

ACCEPTED_FORMS = (
    "emu:<platform> (e.g. emu:esp32s3), tcp://host:port, "
    "serial:///dev/ttyACM0?baud=921600, serial:COM3?baud=921600, exec:<command line>, "
    "qemu:<target> (e.g. qemu:cortex-m4), native:"
)

_PLATFORM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_WINDOWS_PORT_RE = re.compile(r"/?(COM[0-9]+)", re.IGNORECASE)
_PATH_SAFE = "/:@-._~+,="


@dataclass(frozen=True)
class DeviceURL:
    """Base of the parsed device URL types; ``scheme`` tells them apart."""

    scheme: ClassVar[str] = ""

    def format(self) -> str:
        """The canonical URL string; ``parse_device_url(u.format()) == u``.

        By default ``scheme:`` followed by the one field's value (``emu:esp32-s3``,
        ``qemu:mps2-an385``, ``native:``); schemes with more to say override it.
        """
        return f"{self.scheme}:" + "".join(str(getattr(self, f.name)) for f in fields(self))

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class EmuURL(DeviceURL):
    """The device twin for a platform; the platform name is validated by the platform registry."""

    platform: str
    scheme: ClassVar[str] = "emu"


@dataclass(frozen=True)
class TcpURL(DeviceURL):
    """A TCP endpoint. Port 0 parses (listen addresses use it) but cannot be connected to."""

    host: str
    port: int
    scheme: ClassVar[str] = "tcp"

    def format(self) -> str:
        """The canonical URL string (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True)
class SerialURL(DeviceURL):
    """A serial port by OS name (``/dev/ttyACM0``, ``COM3``) and baud rate (always 8N1)."""

    port: str
    baud: int = DEFAULT_BAUD
    scheme: ClassVar[str] = "serial"

    def format(self) -> str:
        """The canonical URL string: ``serial://`` + absolute path, or ``serial:`` + name."""
        prefix = "serial://" if self.port.startswith("/") else "serial:"
        return f"{prefix}{quote(self.port, safe=_PATH_SAFE)}?baud={self.baud}"


@dataclass(frozen=True)
class ExecURL(DeviceURL):
    """A command whose stdin/stdout carry the protocol (tests, wrappers, ssh to a board)."""

    argv: tuple[str, ...]
    scheme: ClassVar[str] = "exec"

    def format(self) -> str:
        """The canonical URL string (the command line re-quoted with POSIX shell rules)."""
        return "exec:" + shlex.join(self.argv)


@dataclass(frozen=True)
class QemuURL(DeviceURL):
    """The real firmware under QEMU; the target name is validated by the firmware registry."""

    target: str
    scheme: ClassVar[str] = "qemu"


@dataclass(frozen=True)
class NativeURL(DeviceURL):
    """The firmware built for this host, speaking the protocol on its stdin/stdout."""

    scheme: ClassVar[str] = "native"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"bad device URL {url!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def _hint_for_bare(url: str) -> str:
    """A guess at what the user meant when the URL has no scheme we know."""
    if url.startswith("/dev/") or _WINDOWS_PORT_RE.fullmatch(url):
        return f"did you mean serial:{'//' if url.startswith('/') else ''}{url}?"
    if re.fullmatch(r"[\w.\-]+:[0-9]+", url):
        return f"did you mean tcp://{url}?"
    return "unknown scheme"


def _parse_emu(url: str, rest: str) -> EmuURL:
    if not _PLATFORM_RE.fullmatch(rest):
        raise _bad(url, "emu: needs a platform name, e.g. emu:esp32s3")
    return EmuURL(rest)


def _parse_tcp(url: str) -> TcpURL:
    parts = urlsplit(url)
    if not url.lower().startswith("tcp://"):
        raise _bad(url, "tcp URLs look like tcp://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad(url, "tcp URLs take no path or query")
    try:
        port = parts.port
    except ValueError as exc:
        raise _bad(url, "the port must be a number 0-65535") from exc
    if not parts.hostname or port is None:
        raise _bad(url, "tcp URLs need both host and port, e.g. tcp://127.0.0.1:5555")
    return TcpURL(parts.hostname, port)


def parse_host_port(url: str) -> tuple[str, int]:
    """``tcp://host:port`` (or bare ``host:port``) -> ``(host, port)``; the one TCP address
    parser for devices, the twin's listeners and its power channel.

    Raises:
        ConfigError: not a host and a port (the message shows the form).
    """
    tcp = _parse_tcp(url if "://" in url else f"tcp://{url}")
    return tcp.host, tcp.port


def _parse_serial(url: str) -> SerialURL:
    parts = urlsplit(url)
    if parts.netloc:
        raise _bad(
            url, "serial URLs use three slashes for a path (serial:///dev/ttyACM0) or serial:COM3"
        )
    port = unquote(parts.path)
    windows = _WINDOWS_PORT_RE.fullmatch(port)
    if windows:
        port = windows.group(1).upper()
    if not port or port == "/":
        raise _bad(url, "serial URLs need a port, e.g. serial:///dev/ttyACM0")
    baud = DEFAULT_BAUD
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "baud":
            raise _bad(url, f"unknown serial option {key!r} (only baud=N is accepted)")
        if not value.isdigit() or int(value) <= 0:
            raise _bad(url, f"baud must be a positive integer, not {value!r}")
        baud = int(value)
    return SerialURL(port, baud)


def _parse_exec(url: str, rest: str) -> ExecURL:
    try:
        argv = tuple(shlex.split(rest))
    except ValueError as exc:
        raise _bad(url, f"cannot split the command line ({exc})") from exc
    if not argv:
        raise _bad(url, "exec: needs a command, e.g. exec:cat")
    return ExecURL(argv)


def parse_device_url(url: str) -> DeviceURL:
    """Parse a device URL into one of :class:`EmuURL`, :class:`TcpURL`, :class:`SerialURL`,
    :class:`ExecURL`, :class:`QemuURL`, :class:`NativeURL`.

    Raises:
        ConfigError: the URL is malformed, names an unknown scheme (the message lists the
            accepted forms).
    """
    url = url.strip()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or len(scheme) == 1:  # no colon, or a Windows drive letter (C:\...)
        raise _bad(url, _hint_for_bare(url))
    if scheme == "emu":
        return _parse_emu(url, rest)
    if scheme == "tcp":
        return _parse_tcp(url)
    if scheme == "serial":
        return _parse_serial(url)
    if scheme == "exec":
        return _parse_exec(url, rest)
    if scheme == "qemu":
        if not _PLATFORM_RE.fullmatch(rest):
            raise _bad(url, "qemu: needs a firmware target, e.g. qemu:cortex-m4")
        return QemuURL(rest.lower())
    if scheme == "native":
        if rest not in ("", "//"):
            raise _bad(url, "native: takes nothing after the colon")
        return NativeURL()
    raise _bad(url, _hint_for_bare(url))
