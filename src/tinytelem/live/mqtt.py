"""An MQTT connection driven by trio: paho-mqtt in its external-event-loop mode.

paho (2.x) is a sans-I/O-ish client when it is not given a thread: ``loop_read()``,
``loop_write()`` and ``loop_misc()`` do one step each on its non-blocking socket, and
``want_write()`` says whether it has bytes to send. Here one task awaits
``trio.lowlevel.wait_readable`` and calls ``loop_read``, one awaits ``wait_writable`` when paho
wants to write and calls ``loop_write``, and one calls ``loop_misc`` every second (keepalive).
Only the TCP (and TLS) connect, which paho does with blocking calls, runs in a worker thread
for the moment it takes; trio is never blocked.

::

    outbox (kept: QoS 1, bulk: QoS 0, bounded) ──> writer ──publish──> paho ──> socket
                                                   reader <──loop_read── socket (PUBACK,
                                                                          messages, CONNACK)

:class:`MqttConnection` reconnects with backoff (0.5 s doubling to 10 s) for as long as it
runs. QoS 1 messages stay in the outbox until the broker acknowledged them (PUBACK); those in
flight when the connection breaks go back to the front of the kept queue and are sent again
(the broker may then see one twice: receivers dedupe). QoS 0 messages wait in a bounded queue
and the oldest are dropped and counted when it is full, so a broker outage never blocks the
producer. A broker that refuses the credentials raises :class:`BrokerRefused` on the first
connection (a configuration mistake, reported at once) and is retried afterwards; so does a
TLS handshake that fails for want of trust (:class:`BrokerTLSError`: the broker's certificate
is not signed by a CA we trust, or the broker wants a client certificate we did not give).

Credentials never reach logs or messages: :class:`BrokerConfig` hides the password in its
``repr`` and :meth:`BrokerConfig.display` drops the userinfo from the URL.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from tinytelem.errors import ConfigError, LinkError

__all__ = ["BrokerConfig", "BrokerRefused", "BrokerTLSError", "MqttConnection",
           "MqttStatistics", "OutMessage", "parse_broker_url"]

log = logging.getLogger("tinytelem.mqtt")

# Environment variable names, not secrets.
USERNAME_ENV = "TINYTELEM_MQTT_USERNAME"
PASSWORD_ENV = "TINYTELEM_MQTT_PASSWORD"  # nosec B105
CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 30
BACKOFF_S = (0.5, 10.0)
PAHO_BATCH = 256
"""Messages handed to paho at a time; the next batch waits until paho wrote the last one, so
paho's own buffer stays bounded and our outbox is where waiting (and dropping) happens."""


class BrokerRefused(LinkError):
    """The MQTT broker refused the connection (credentials, authorisation); the message names
    the remedy and never the password."""


class BrokerTLSError(BrokerRefused):
    """The TLS handshake with an ``mqtts://`` broker failed for want of trust: its certificate
    is not signed by a CA we trust (remedy: ``--mqtt-ca``), or it asks for a client
    certificate we did not give or it does not accept (``--mqtt-cert``/``--mqtt-key``)."""


_NOT_TRUSTED = ("certificate_verify_failed", "certificate verify failed")
_CLIENT_CERT = ("certificate required", "certificate_required", "handshake failure",
                "unknown ca", "bad certificate", "certificate unknown", "peer did not return")


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to authenticate (``mqtt://`` or ``mqtts://``)."""

    scheme: str
    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def display(self) -> str:
        """The URL without credentials, for logs and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{host}:{self.port}/{self.prefix}"

    def ssl_context(self) -> ssl.SSLContext:
        """Verify the broker (against ``cafile`` or the system CAs); present a client
        certificate when one is given."""
        ctx = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        if self.certfile is not None:
            try:
                ctx.load_cert_chain(str(self.certfile),
                                    str(self.keyfile) if self.keyfile else None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the MQTT client certificate {self.certfile}: "
                                  f"{exc}; give a PEM certificate and its key") from exc
        return ctx


def parse_broker_url(
    url: str, *, password_file: Path | None = None, cafile: Path | None = None,
    certfile: Path | None = None, keyfile: Path | None = None,
    env: dict[str, str] | None = None,
) -> BrokerConfig:
    """``mqtt://[user[:password]@]host[:port][/prefix]`` (``mqtts://``: TLS, port 8883).

    The username and password come from the URL's userinfo, else from the environment
    (``TINYTELEM_MQTT_USERNAME``, ``TINYTELEM_MQTT_PASSWORD``); ``password_file`` (its first
    line) overrides both. Messages about the URL never repeat it with its password.
    """
    env = dict(os.environ) if env is None else env
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("broker URL: bad port; give mqtt://host:1883/prefix") from exc
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError("broker URL must look like mqtt://host:1883/prefix or "
                          "mqtts://host:8883/prefix (credentials in the URL's userinfo, "
                          f"{USERNAME_ENV}/{PASSWORD_ENV}, or --mqtt-password-file)")
    prefix = parts.path.strip("/") or "tinytelem"
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ConfigError(f"broker URL topic prefix {prefix!r} may not hold '+', '#' or an "
                          "empty level")
    username = unquote(parts.username) if parts.username else env.get(USERNAME_ENV) or None
    password = unquote(parts.password) if parts.password else env.get(PASSWORD_ENV) or None
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --mqtt-password-file {password_file}: "
                              f"{exc.strerror or exc}") from exc
        password = lines[0] if lines else ""
    if password is not None and username is None:
        raise ConfigError("an MQTT password needs a username: mqtt://USER@host/prefix or "
                          f"{USERNAME_ENV}")
    if (certfile or cafile) and parts.scheme != "mqtts":
        raise ConfigError("a client certificate or CA file needs an mqtts:// broker URL")
    return BrokerConfig(parts.scheme, parts.hostname,
                        port or (8883 if parts.scheme == "mqtts" else 1883), prefix,
                        username, password, cafile, certfile, keyfile)


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to publish."""

    topic: str
    payload: bytes
    qos: int
    kind: str
    """Its stream class (what drops are counted by)."""


@dataclass(frozen=True, slots=True)
class MqttStatistics:
    """Counters of one MQTT connection (immutable snapshot)."""

    connected: bool
    connects: int
    outages: int
    published: int
    acked: int
    resent: int
    dropped: int
    dropped_by_class: dict[str, int]
    queued: int
    received: int


class _Lost(Exception):
    """The connection ended (broken socket, keepalive, broker closed it)."""


_RETRIED = (_Lost, OSError, ssl.SSLError, trio.TooSlowError)


class MqttConnection:
    """A broker connection that publishes an outbox and delivers subscriptions (see module
    docstring). :meth:`run` until cancelled; :meth:`offer` never blocks.

    ``clean_session=False`` with a stable ``client_id`` (the collector) asks the broker to keep
    the subscriptions, and the QoS 1 messages for them, while this client is away.
    """

    def __init__(
        self, config: BrokerConfig, *, client_id: str | None = None,
        bulk_queue: int = 10000, kept_queue: int = 100_000,
        subscriptions: tuple[tuple[str, int], ...] = (),
        on_message: Callable[[str, bytes], None] | None = None,
        clean_session: bool = True,
    ) -> None:
        self.config = config
        self.client_id = client_id or f"tinytelem-{secrets.token_hex(6)}"
        self._bulk: deque[OutMessage] = deque()
        self._kept: deque[OutMessage] = deque()
        self._bulk_max = bulk_queue
        self._kept_max = kept_queue
        self._subscriptions = subscriptions
        self._clean_session = clean_session
        self._on_message = on_message
        self._inflight: dict[int, OutMessage] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._connack: Any = None
        self._socket_error: str | None = None
        self.connected = False
        self.ever_connected = False
        self._connects = self._outages = self._published = self._acked = 0
        self._resent = self._received = 0
        self._dropped: dict[str, int] = {}
        self.connected_event = trio.Event()
        self.first_attempt = trio.Event()
        """Set once the first connection attempt succeeded or failed."""

    # ------------------------------------------------------------------ outbox

    def offer(self, message: OutMessage) -> None:
        """Queue ``message``: QoS 1 in the kept queue, QoS 0 in the bulk queue (drop-oldest)."""
        queue, limit = ((self._kept, self._kept_max) if message.qos
                        else (self._bulk, self._bulk_max))
        queue.append(message)
        while len(queue) > limit:
            lost = queue.popleft()
            self._dropped[lost.kind] = self._dropped.get(lost.kind, 0) + 1
        self._lot.unpark_all()

    def pending(self) -> int:
        """Messages not yet handed over, plus QoS 1 messages not yet acknowledged."""
        return len(self._bulk) + len(self._kept) + len(self._inflight)

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every message was sent and every QoS 1 message
        acknowledged; returns whether that happened."""
        with trio.move_on_after(timeout_s):
            while self.pending():
                await trio.sleep(0.02)
            return True
        return False

    def statistics(self) -> MqttStatistics:
        return MqttStatistics(self.connected, self._connects, self._outages, self._published,
                              self._acked, self._resent, sum(self._dropped.values()),
                              dict(self._dropped), self.pending(), self._received)

    # ------------------------------------------------------------------ connection

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, publish and receive until cancelled, reconnecting with backoff.

        Started at once (the outbox fills while the broker is away). Raises
        :class:`BrokerRefused` when the very first connection is refused.
        """
        task_status.started()
        delay = BACKOFF_S[0]
        while True:
            try:
                await self._connection()
                delay = BACKOFF_S[0]
            except BrokerRefused:
                if not self.ever_connected:
                    raise
                log.error("broker %s refused the connection; retrying", self.config.display())
            except _RETRIED as exc:
                self.first_attempt.set()
                log.info("broker %s: %s; retrying in %.1f s", self.config.display(),
                         type(exc).__name__ if not str(exc) else exc, delay)
            self._requeue_inflight()
            if self.connected:
                self._outages += 1
            self.connected = False
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    def _client(self) -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv311,
                             clean_session=self._clean_session)
        client.max_inflight_messages_set(PAHO_BATCH)
        client.max_queued_messages_set(0)
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls:
            client.tls_set_context(self.config.ssl_context())
        client.on_connect = self._connected
        client.on_log = self._log_cb
        client.on_publish = self._acked_cb
        client.on_message = self._message_cb
        client.connect_async(self.config.host, self.config.port, keepalive=KEEPALIVE_S)
        return client

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        self._connack = reason

    def _log_cb(self, client: Any, userdata: Any, level: int, text: str) -> None:
        import paho.mqtt.client as paho

        if level == paho.MQTT_LOG_ERR:  # a socket error paho turned into a return code
            self._socket_error = text

    def _tls_refusal(self, reason: str) -> BrokerTLSError | None:
        """The TLS failure in ``reason`` (an SSL error's text) as a typed error naming the
        remedy; None when it is no TLS trust failure (then the connection is retried)."""
        if not self.config.tls:
            return None
        where, low = self.config.display(), reason.lower()
        if any(k in low for k in _NOT_TRUSTED):
            return BrokerTLSError(
                f"broker {where}: its TLS certificate is not trusted ({reason}). Pass the CA "
                "certificate that signed it with --mqtt-ca ca.pem (or add it to this "
                "machine's CAs), and connect by the name or address the certificate holds")
        if any(k in low for k in _CLIENT_CERT):
            if self.config.certfile is None:
                return BrokerTLSError(
                    f"broker {where} requires a client certificate ({reason}). Pass "
                    "--mqtt-cert cert.pem --mqtt-key key.pem: a certificate signed by a CA "
                    "the broker trusts, and its key")
            return BrokerTLSError(
                f"broker {where} did not accept the client certificate of --mqtt-cert "
                f"({reason}). Give one signed by a CA the broker trusts (its cafile)")
        return None

    def _lost(self, what: str) -> Exception:
        """A failed paho read or write: a TLS refusal when the socket error was one."""
        error, self._socket_error = self._socket_error, None
        refusal = self._tls_refusal(error) if error else None
        return refusal if refusal is not None else _Lost(f"{what} ({error})" if error else what)

    def _acked_cb(self, client: Any, userdata: Any, mid: int, reason: Any,
                  properties: Any) -> None:
        if self._inflight.pop(mid, None) is not None:
            self._acked += 1

    def _message_cb(self, client: Any, userdata: Any, message: Any) -> None:
        self._received += 1
        if self._on_message is not None:
            self._on_message(str(message.topic), bytes(message.payload))

    async def _connection(self) -> None:
        try:
            await self._connect_and_serve()
        except _Lost as exc:
            # TLS 1.3 brokers refuse a missing client certificate after the handshake; paho may
            # then meet a bare EOF where the broker's alert was (it writes CONNECT first). Ask
            # the broker again, reading only, so the first connection fails with the reason.
            if self.config.tls and not self.ever_connected and self._connack is None:
                reason = await trio.to_thread.run_sync(self._probe_tls, abandon_on_cancel=True)
                refusal = self._tls_refusal(reason) if reason else None
                if refusal is not None:
                    raise refusal from exc
            raise

    def _probe_tls(self) -> str | None:
        """Shake hands with the broker and read: the TLS alert it answers with, if any."""
        import socket

        try:
            with socket.create_connection((self.config.host, self.config.port),
                                          timeout=CONNECT_TIMEOUT_S) as raw, \
                    self.config.ssl_context().wrap_socket(
                        raw, server_hostname=self.config.host) as tls:
                tls.settimeout(2.0)
                tls.recv(1)
        except ssl.SSLError as exc:
            return str(exc)
        except (OSError, ConfigError):
            return None
        return None

    async def _connect_and_serve(self) -> None:
        client = self._client()
        self._connack = None
        self._inflight.clear()
        self._socket_error = None
        with trio.fail_after(CONNECT_TIMEOUT_S + 1):
            # paho connects (and shakes hands) with blocking calls: a worker thread waits for
            # them, and nothing else touches this client until it returns.
            try:
                await trio.to_thread.run_sync(client.reconnect, abandon_on_cancel=True)
            except ssl.SSLError as exc:
                refusal = self._tls_refusal(str(exc))
                if refusal is not None:
                    raise refusal from exc
                raise
        sock = client.socket()
        if sock is None:  # paho gave up after the handshake (a TLS alert) and closed it
            raise self._lost("connection closed while connecting")
        try:
            await self._session(client, sock)
        except BaseExceptionGroup as group:
            # The session's tasks fail one at a time: raise the reason itself, unless the
            # group also carries a cancellation (then it belongs to whoever cancelled).
            cancelled, _ = group.split(trio.Cancelled)
            reason, _ = group.split((*_RETRIED, BrokerRefused))
            if cancelled is None and reason is not None:
                leaf: BaseException = reason
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                raise leaf from group
            raise
        finally:
            sock.close()  # this client is dropped; the next connection makes a new one

    async def _session(self, client: Any, sock: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, client, sock)
            nursery.start_soon(self._misc, client)
            with trio.fail_after(CONNECT_TIMEOUT_S):
                while self._connack is None:
                    await self._flush(client, sock)
                    await trio.sleep(0.005)
            if self._connack.is_failure:
                raise BrokerRefused(self._refusal(self._connack))
            for topic, qos in self._subscriptions:
                client.subscribe(topic, qos)
            self.connected = self.ever_connected = True
            self._connects += 1
            self.connected_event.set()
            self.first_attempt.set()
            log.info("connected to broker %s", self.config.display())
            await self._writer(client, sock)

    def _refusal(self, reason: Any) -> str:
        where = self.config.display()
        text = str(reason)
        if "user name or password" in text.lower() or "not authorized" in text.lower():
            who = (f"user {self.config.username!r}" if self.config.username
                   else "no username")
            return (f"broker {where} refused {who}: {text}. Check the username and password "
                    f"(URL userinfo, {USERNAME_ENV}/{PASSWORD_ENV} or --mqtt-password-file) "
                    "and the broker's ACL")
        return f"broker {where} refused the connection: {text}"

    async def _reader(self, client: Any, sock: Any) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            if client.loop_read() != 0:
                if self._connack is not None and self._connack.is_failure:
                    raise BrokerRefused(self._refusal(self._connack))
                raise self._lost("connection lost")
            self._lot.unpark_all()  # a PUBACK may have freed room; paho may want to write

    async def _misc(self, client: Any) -> None:
        while True:
            await trio.sleep(1.0)
            if client.loop_misc() != 0:
                raise _Lost("keepalive timed out")
            self._lot.unpark_all()

    async def _flush(self, client: Any, sock: Any) -> None:
        while client.want_write():
            await trio.lowlevel.wait_writable(sock)
            if client.loop_write() != 0:
                raise self._lost("connection lost while writing")

    async def _writer(self, client: Any, sock: Any) -> None:
        while True:
            await self._flush(client, sock)
            batch = self._take(PAHO_BATCH - len(self._inflight))
            if not batch:
                with trio.move_on_after(1.0):
                    await self._lot.park()
                continue
            for message in batch:
                info = client.publish(message.topic, message.payload, qos=message.qos)
                if info.rc != 0:
                    self._put_back(message)
                    raise _Lost(f"publish failed ({info.rc})")
                self._published += 1
                if message.qos:
                    self._inflight[info.mid] = message
            # PUBACKs can arrive (in the reader) only after this; nothing awaited in between.

    def _take(self, room: int) -> list[OutMessage]:
        out: list[OutMessage] = []
        while self._kept and len(out) < max(room, 0):
            out.append(self._kept.popleft())
        while self._bulk and len(out) < PAHO_BATCH:
            out.append(self._bulk.popleft())
        return out

    def _put_back(self, message: OutMessage) -> None:
        (self._kept if message.qos else self._bulk).appendleft(message)

    def _requeue_inflight(self) -> None:
        """Unacknowledged QoS 1 messages go back to the front, in their order."""
        for mid in sorted(self._inflight, reverse=True):
            self._kept.appendleft(self._inflight[mid])
            self._resent += 1
        self._inflight.clear()

