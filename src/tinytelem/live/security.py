"""Listen addresses, bearer tokens, TLS and log redaction for the live streamer.

The rules (docs/streaming.md, "Security"):

* A token is required whenever the listen address is not loopback: anything else would let
  anyone on the network watch (and time) a run. The streamer refuses to start without one.
* The token travels in ``Authorization: Bearer <token>``. A ``?token=`` query parameter is
  accepted too, because the browser ``WebSocket`` API cannot set request headers; query strings
  end up in proxy logs, so prefer the header everywhere else.
* Tokens never reach logs: :class:`RedactFilter` rewrites log records of tinytelem's and
  trio-websocket's loggers (the latter logs handshake events, headers included, at DEBUG).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tinytelem.errors import ConfigError

__all__ = [
    "TOKEN_ENV",
    "ListenAddress",
    "RedactFilter",
    "check_listen_security",
    "client_ssl_context",
    "extract_token",
    "parse_listen",
    "redact_logs",
    "server_ssl_context",
    "token_matches",
]

# The environment variable's name, not a secret.
TOKEN_ENV = "TINYTELEM_TOKEN"  # nosec B105
REDACTED = "<redacted>"
_REDACT_LOGGERS = ("tinytelem.live", "trio-websocket")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the streamer listens: ``ws://host:port`` or ``wss://host:port``."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "wss"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port if port is None else port}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IPs; false for everything else (0.0.0.0 included)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: could resolve to anything


def parse_listen(url: str) -> ListenAddress:
    """Parse ``ws://127.0.0.1:8765`` (port 0 picks a free port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(
            f"listen address {url!r} must look like ws://127.0.0.1:8765 or wss://0.0.0.0:8765"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"listen address {url!r} has an invalid port") from exc
    if port is None:
        raise ConfigError(f"listen address {url!r} needs a port, e.g. ws://127.0.0.1:8765")
    return ListenAddress(parts.scheme, parts.hostname, port)


def resolve_token(token: str | None) -> str | None:
    """The option's token, else ``$TINYTELEM_TOKEN``, else None (empty strings count as none)."""
    value = token if token else os.environ.get(TOKEN_ENV, "")
    return value or None


def check_listen_security(
    address: ListenAddress, token: str | None, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Refuse configurations that would expose a run: see the module docstring."""
    if not address.loopback and not token:
        raise ConfigError(
            f"refusing to listen on {address.url()} without a token: it is not a loopback "
            f"address, so anyone on the network could connect. Pass --token or set "
            f"{TOKEN_ENV} (clients then send 'Authorization: Bearer <token>'), or listen on "
            "ws://127.0.0.1"
        )
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key (PEM files)")
    if tls_cert is not None and not address.tls:
        raise ConfigError(f"--tls-cert given: listen on wss://{address.host}:{address.port}")
    if address.tls and tls_cert is None:
        raise ConfigError(f"{address.url()} needs --tls-cert and --tls-key (PEM files)")
    if token is not None and len(token) < 8:
        raise ConfigError("the token is shorter than 8 characters; use a long random one, e.g. "
                          "python -c 'import secrets; print(secrets.token_urlsafe(24))'")


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context from PEM certificate (chain) and key files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {cert} / key {key}: {exc}; both must be PEM files "
            "and the key must match the certificate"
        ) from exc
    return ctx


def client_ssl_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A verifying client context; ``cafile`` trusts a self-signed server certificate."""
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {cafile}: {exc}") from exc


def extract_token(headers: list[tuple[bytes, bytes]], path: str) -> str | None:
    """The bearer token of a handshake: the Authorization header, else ``?token=``."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, cred = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                return cred.strip()
    query = parse_qs(urlsplit(path).query)
    values = query.get("token")
    return values[0] if values else None


def token_matches(offered: str | None, expected: str) -> bool:
    """Constant-time comparison (no timing oracle on the token)."""
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


class RedactFilter(logging.Filter):
    """Replaces secrets in log records by ``<redacted>`` (formats the record first)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                text = text.replace(s, REDACTED)
            record.msg, record.args = text, None
        return True


class redact_logs:  # noqa: N801 - used like a function in ``with``
    """Context manager: redact ``secrets`` from tinytelem and trio-websocket log records."""

    def __init__(self, *secrets: str | None) -> None:
        self._filter = RedactFilter([s for s in secrets if s])
        self._loggers = [logging.getLogger(name) for name in _REDACT_LOGGERS]

    def __enter__(self) -> redact_logs:
        if self._filter.secrets:
            for logger in self._loggers:
                logger.addFilter(self._filter)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for logger in self._loggers:
            logger.removeFilter(self._filter)
