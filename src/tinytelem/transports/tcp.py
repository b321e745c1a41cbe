"""TCP links: the device twin, QEMU's serial-over-TCP, and boards with a network stack.

A thin layer over :func:`trio.open_tcp_stream`: a connect timeout, ``TCP_NODELAY`` (telemetry
frames are small and latency matters more than packet count), and OS errors turned into
:class:`~tinytelem.errors.LinkBroken` / :class:`~tinytelem.errors.ConfigError` whose message
says what to do.
"""

from __future__ import annotations

import errno
import socket

import trio

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.transports.base import HalfCloseableLinkStream
from tinytelem.transports.url import TcpURL

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "TWIN_HINT", "open_tcp"]

DEFAULT_CONNECT_TIMEOUT = 5.0

TWIN_HINT = (
    "is the device twin running? start it with "
    "`tinytelem emulate --platform esp32s3 --listen tcp://127.0.0.1:0` and use the URL it prints"
)

_REFUSED = {errno.ECONNREFUSED}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    """The individual connect errors behind trio's 'all attempts failed' OSError.

    Duck-typed on ``.exceptions`` because ExceptionGroup is only built in from Python 3.11.
    """
    subs = getattr(exc.__cause__, "exceptions", None)
    if subs is None:
        return [exc]
    leaves: list[BaseException] = []
    for sub in subs:
        leaves.extend(_leaf_errors(sub))
    return leaves


def _translate_connect_error(url: TcpURL, exc: OSError) -> Exception:
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            f"{url}: cannot resolve host {url.host!r} ({exc}); check the spelling or use an IP"
        )
    codes = {getattr(leaf, "errno", None) for leaf in _leaf_errors(exc)}
    if codes & _REFUSED:
        return LinkBroken(f"{url}: connection refused; {TWIN_HINT}")
    if codes & _UNREACHABLE:
        return LinkBroken(
            f"{url}: host unreachable ({exc}); check the address, the network and any firewall"
        )
    return LinkBroken(f"{url}: cannot connect ({exc}); check the host and port")


async def open_tcp(
    url: TcpURL, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> HalfCloseableLinkStream:
    """Connect to ``url`` and return the link stream.

    Raises:
        ConfigError: port 0, or a host name that does not resolve.
        LinkBroken: refused, unreachable, or no answer within ``connect_timeout`` seconds.
    """
    if url.port == 0:
        raise ConfigError(f"{url}: port 0 means 'any port' when listening; give the real port")
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(url.host, url.port)
    except trio.TooSlowError as exc:
        raise LinkBroken(
            f"{url}: no answer within {connect_timeout:g} s; check the host, port and firewall"
        ) from exc
    except OSError as exc:
        raise _translate_connect_error(url, exc) from exc
    # trio enables TCP_NODELAY already; set it again so the guarantee does not hang on a default.
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    return HalfCloseableLinkStream(
        stream,
        name=str(url),
        remedy="the peer closed or reset the connection; if it is the device twin, "
        "check that it is still running",
    )
