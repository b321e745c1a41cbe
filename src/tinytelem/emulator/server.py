"""Put a :class:`~tinytelem.emulator.twin.TwinDevice` on a TCP socket or a pseudo-terminal.

One task (the pump) paces the device in real time: it computes the active run's next tokens
in a worker thread while they are needed to cover the next moments (the twin streams: a run
never waits for a plan of the whole run), emits every frame whose time has come, then sleeps
until the next one (at least 1 ms), waking early when a host command arrives. When the host
computes slower than the board it emulates, frames leave late but keep their device times. The
device keeps running while no host is connected; its frames are then lost, but their sequence
numbers are spent, so a host that reconnects sees the gap (after the HELLO it gets first).

Power side channel: what a current probe on the device's supply would report. A TCP client gets
one msgpack map ``{"voltage_v", "idle_w", "active_w", "platform", "timebase", "version"}`` then
msgpack arrays ``[t_start_s, t_end_s, watts]`` in host ``time.monotonic()`` seconds, contiguous,
as each segment finishes (idle segments fill the time between runs). docs/emulator.md is the
normative description.
"""

from __future__ import annotations

import errno
import os
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from tinytelem.emulator.twin import EmittedFrame, TwinDevice
from tinytelem.errors import ConfigError, ModelError
from tinytelem.power.twin import TwinPowerChannel
from tinytelem.protocol.codec import Frame, FrameDecoder
from tinytelem.protocol.commands import Run
from tinytelem.protocol.messages import AnyMessage, InferBegin, InferEnd, Token
from tinytelem.transports.url import parse_host_port

__all__ = ["POWER_PERIOD_S", "ServerAddresses", "parse_listen_url", "serve"]

POWER_PERIOD_S = 0.05
"""The pump wakes at least this often, so idle power reaches power clients steadily."""

MIN_SLEEP_S = 0.001


@dataclass(frozen=True, slots=True)
class ServerAddresses:
    """Where the twin listens: ``tcp://host:port`` or the pty slave path; power URL or None."""

    link: str
    power: str | None


class _Sink(Protocol):
    async def send_all(self, data: bytes) -> None: ...
    async def aclose(self) -> None: ...


def parse_listen_url(url: str) -> tuple[str, int] | None:
    """``tcp://host:port`` -> (host, port); ``pty`` -> None.

    Raises:
        ConfigError: any other form.
    """
    if url == "pty":
        return None
    if not url.startswith("tcp://"):
        raise ConfigError(f"cannot listen on {url!r}; use tcp://HOST:PORT (port 0 = any) or pty")
    try:
        return parse_host_port(url)
    except ConfigError as exc:
        raise ConfigError(f"cannot listen on {url!r}: {exc}; use tcp://HOST:PORT (port 0 = any) "
                          "or pty") from exc


class _PtySink:
    """The master side of a pseudo-terminal: writes never block, like a UART with no reader."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped_bytes = 0

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                self.dropped_bytes += len(view)  # nobody drains the slave: bytes vanish
                return
            except OSError as exc:
                raise trio.BrokenResourceError(f"pty write failed: {exc}") from exc
            view = view[n:]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _Server:
    def __init__(
        self,
        device: TwinDevice,
        faults: Sequence[tuple[str, int]],
        once: bool,
        boot_s: float,
    ) -> None:
        self.device = device
        self.boot_s = boot_s
        self.faults = [(kind, n) for kind, n in faults]
        for kind, n in self.faults:
            if kind != "drop" or n < 1:
                raise ConfigError(f"unknown fault {kind}@{n}; the twin knows drop@N (N >= 1)")
        self.once = once
        self.sink: _Sink | None = None
        self.send_lock = trio.Lock()
        self.wake = trio.Event()
        self.run_tokens = 0
        self.completed_while_connected = False
        p = device.platform
        self.power = TwinPowerChannel({
            "version": 1, "voltage_v": p.supply_voltage_v, "idle_w": p.idle_power_w,
            "active_w": p.active_power_w, "platform": p.name, "timebase": "CLOCK_MONOTONIC",
        }, boot_s)
        self.done = trio.Event()

    def now(self) -> float:
        return time.monotonic() - self.boot_s

    # -- device pump -------------------------------------------------------------------------

    async def pump(self) -> None:
        device = self.device
        while True:
            self.wake = trio.Event()
            stream = device.next_step(self.now())
            if stream is not None:  # one token per turn, so frames go out between tokens
                value = await trio.to_thread.run_sync(stream.compute)
                device.commit(stream, value)
            async with self.send_lock:
                frames = device.pop_due(self.now())
                if frames:
                    await self._send_frames(frames)
            segments = device.drain_power(self.now())
            if segments:
                self.power.publish(segments)
            now = self.now()
            if device.next_step(now) is not None:
                await trio.lowlevel.checkpoint()
                continue
            delay = min(device.next_due(), now + POWER_PERIOD_S) - now
            with trio.move_on_after(max(delay, MIN_SLEEP_S)):
                await self.wake.wait()

    async def _send_frames(self, frames: list[EmittedFrame]) -> None:
        chunks: list[bytes] = []
        close_after = False
        for i, frame in enumerate(frames):
            msg = frame.message
            if isinstance(msg, InferBegin):
                self.run_tokens = 0
            elif isinstance(msg, Token):
                self.run_tokens += 1
                close_after = self._fault_fires()
            chunks.append(frame.encode())
            if isinstance(msg, InferEnd) and self.sink is not None:
                self.completed_while_connected = True
            if close_after:
                await self._write(b"".join(chunks), len(chunks))
                await self._drop_connection()
                self.device.tx_dropped += len(frames) - i - 1
                return
        await self._write(b"".join(chunks), len(chunks))

    def _fault_fires(self) -> bool:
        # A drop needs a connection to drop: while the host is still reconnecting it waits
        # for the first token after the n-th that goes to a connected host.
        if self.sink is None:
            return False
        for k, (kind, n) in enumerate(self.faults):
            if kind == "drop" and self.run_tokens >= n:
                del self.faults[k]
                return True
        return False

    async def _write(self, data: bytes, n_frames: int) -> None:
        sink = self.sink
        if sink is None:
            self.device.tx_dropped += n_frames
            return
        try:
            await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.device.tx_dropped += n_frames
            if self.sink is sink:
                self.sink = None

    async def _drop_connection(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            await sink.aclose()

    # -- host link ---------------------------------------------------------------------------

    async def command(self, message: AnyMessage) -> None:
        device = self.device
        if isinstance(message, Run) and not device.busy:
            try:  # the engine's set-up takes real time for a large model: not in the loop
                prepared = await trio.to_thread.run_sync(device.prepare_run, message)
            except ModelError:
                prepared = None  # start_run reports it to the host as ERROR + INFER_END
            device.start_run(message, self.now(), prepared)
        else:
            device.receive(message, self.now())
        self.wake.set()

    async def _serve_commands(self, receive: trio.abc.ReceiveStream) -> None:
        decoder = FrameDecoder()
        while True:
            data = await receive.receive_some(4096)
            if not data:
                return
            decoder.receive_data(bytes(data))
            for event in decoder.events():
                if isinstance(event, Frame):
                    await self.command(event.message)

    async def handle_tcp(self, stream: trio.SocketStream) -> None:
        async with self.send_lock:
            await self._drop_connection()  # one host at a time: the newest wins
            self.sink = stream
            self.completed_while_connected = False
            hello = self.device.stamp(self.device.hello(), self.now())
            await self._write(hello.encode(), 1)
        try:
            await self._serve_commands(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self.sink is stream:
                self.sink = None
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if self.once and self.completed_while_connected:
                self.done.set()

    async def serve_pty(self, master: int) -> None:
        sink = _PtySink(master)
        async with self.send_lock:
            self.sink = sink
            await self._write(self.device.stamp(self.device.hello(), self.now()).encode(), 1)
        decoder = FrameDecoder()
        while True:
            await trio.lowlevel.wait_readable(master)
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                await trio.sleep(0.05)  # EIO: no slave open right now; poll until one is
                continue
            decoder.receive_data(data)
            for event in decoder.events():
                if isinstance(event, Frame):
                    await self.command(event.message)


async def _tcp_listener(url: str, what: str) -> tuple[trio.SocketListener, str]:
    addr = parse_listen_url(url)
    if addr is None:
        raise ConfigError(f"the {what} channel needs tcp://HOST:PORT, not {url!r}")
    host, port = addr
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {url} for the {what}: {exc.strerror or exc}; "
                          "pick another port (0 = any free one)") from exc
    for extra in listeners[1:]:
        await extra.aclose()
    listener = listeners[0]
    bound_host, bound_port = listener.socket.getsockname()[:2]
    return listener, f"tcp://{bound_host}:{bound_port}"


def _open_pty() -> tuple[int, int, str]:
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise ConfigError(f"cannot open a pseudo-terminal: {exc}; use --listen tcp://...") from exc
    tty.setraw(master)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


async def serve(
    device: TwinDevice,
    listen_url: str = "tcp://127.0.0.1:0",
    power_listen_url: str | None = None,
    *,
    faults: Sequence[tuple[str, int]] = (),
    once: bool = False,
    boot_s: float | None = None,
    task_status: trio.TaskStatus[ServerAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the twin until cancelled (or, with ``once``, until a host that saw a complete run
    disconnects).

    Args:
        device: the twin; its time 0 is ``boot_s`` on ``time.monotonic()`` (default: now).
        listen_url: ``tcp://HOST:PORT`` (port 0 = any) or ``pty``.
        power_listen_url: ``tcp://HOST:PORT`` for the power side channel, or None.
        faults: ``("drop", n)`` closes the host connection after the n-th TOKEN frame of a run,
            or the first one after it while a host is connected (each fault fires once).
        once: return after the first host disconnects following a completed run.
        task_status: receives the :class:`ServerAddresses` once listening.

    Raises:
        ConfigError: a bad URL, a port in use, no pseudo-terminal.
    """
    server = _Server(device, faults, once, time.monotonic() if boot_s is None else boot_s)
    addr = parse_listen_url(listen_url)
    pty_fds: tuple[int, int] | None = None
    power_listener: trio.SocketListener | None = None
    power_addr: str | None = None
    link_listener: trio.SocketListener | None = None
    try:
        if addr is None:
            master, slave, link_addr = _open_pty()
            pty_fds = (master, slave)
        else:
            link_listener, link_addr = await _tcp_listener(listen_url, "device link")
        if power_listen_url is not None:
            power_listener, power_addr = await _tcp_listener(power_listen_url, "power channel")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.pump)
            if link_listener is not None:
                nursery.start_soon(trio.serve_listeners, server.handle_tcp, [link_listener])
            elif pty_fds is not None:
                nursery.start_soon(server.serve_pty, pty_fds[0])
            if power_listener is not None:
                nursery.start_soon(trio.serve_listeners, server.power.handle, [power_listener])
            task_status.started(ServerAddresses(link_addr, power_addr))
            await server.done.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in (link_listener, power_listener):
                if listener is not None:
                    await listener.aclose()
        if pty_fds is not None:
            for fd in pty_fds:
                os.close(fd)
