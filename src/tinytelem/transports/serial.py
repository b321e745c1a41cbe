"""Serial links (USB CDC-ACM, USB-UART bridges) as trio streams.

pyserial only opens and configures the port (baud, 8N1, no flow control, exclusive). The bytes
then move one of two ways:

* POSIX: the port's file descriptor (a dup of pyserial's) wrapped in
  :class:`trio.lowlevel.FdStream` -- ~180 MB/s, a few percent of a core at 1 MB/s. pyserial
  leaves the tty at VMIN=0/VTIME=0, where a read on an idle port returns ``b""``, which
  FdStream would take for end of stream; so VMIN=1/VTIME=0 is set through termios after opening.
* Windows (or ``threaded=True`` anywhere): worker threads running ``Serial.read`` with a short
  timeout -- ~30 MB/s, plenty for telemetry, and the only portable option.

A serial port has no end of stream: a read that returns nothing means the device hung up
(reset, unplugged, pty master closed), so :class:`SerialStream` raises
:class:`~tinytelem.errors.LinkBroken` instead of returning ``b""``.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

import serial
import trio

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.transports.base import LinkStream
from tinytelem.transports.url import DEFAULT_BAUD, SerialURL

__all__ = ["PortInfo", "SerialStream", "list_serial_ports", "open_serial"]

LIST_PORTS_HINT = "list the ports with `python -m serial.tools.list_ports -v`"
_THREAD_POLL_S = 0.1  # worst-case delay for noticing cancellation in the threaded path
_THREAD_WRITE_CHUNK = 16384  # bounds how long one uncancellable write thread runs
_DEFAULT_RECEIVE = 65536


@dataclass(frozen=True)
class PortInfo:
    """One serial port the OS knows about (USB ids are None for on-board UARTs)."""

    device: str
    description: str
    hwid: str
    vid: int | None
    pid: int | None
    serial_number: str | None


def list_serial_ports() -> list[PortInfo]:
    """The serial ports present now, sorted by device name."""
    from serial.tools import list_ports  # scans sysfs: only when asked

    ports = [
        PortInfo(p.device, p.description, p.hwid, p.vid, p.pid, p.serial_number)
        for p in list_ports.comports()
    ]
    return sorted(ports, key=lambda p: p.device)


def _open_error(port: str, exc: OSError) -> Exception:
    """Turn a failed open into an error whose message says what to do."""
    code = exc.errno
    text = str(exc)
    if code == errno.ENOENT or "FileNotFoundError" in text:
        return ConfigError(f"no such serial port {port!r}; {LIST_PORTS_HINT}")
    if (
        "exclusively lock" in text
        or code in (errno.EBUSY, errno.EAGAIN)
        or (sys.platform == "win32" and "PermissionError" in text)
    ):
        return LinkBroken(
            f"serial port {port!r} is busy: another program (a serial monitor, ModemManager, "
            "another tinytelem) has it open; close that program and retry"
        )
    if code == errno.EACCES or "PermissionError" in text:
        return ConfigError(
            f"permission denied on serial port {port!r}: add yourself to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log out and back in)"
        )
    return LinkBroken(f"cannot open serial port {port!r} ({exc}); check the cable and replug")


def _open_port(port: str, baud: int) -> serial.Serial:
    """Open and configure the port (blocking; runs in a worker thread)."""
    ser = serial.Serial()
    ser.port = port
    ser.baudrate = baud
    ser.bytesize = serial.EIGHTBITS
    ser.parity = serial.PARITY_NONE
    ser.stopbits = serial.STOPBITS_ONE
    ser.xonxoff = False
    ser.rtscts = False
    ser.dsrdtr = False
    ser.exclusive = True
    ser.timeout = _THREAD_POLL_S
    ser.open()
    if sys.platform != "win32":
        import termios  # POSIX only

        try:
            attrs = termios.tcgetattr(ser.fileno())
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(ser.fileno(), termios.TCSANOW, attrs)
        except BaseException:
            ser.close()
            raise
    return ser


class _ThreadedSerialIO(trio.abc.Stream):
    """Serial I/O in worker threads; raises trio's errors (SerialStream translates them).

    One lock per direction both detects concurrent use (BusyResourceError) and lets ``aclose``
    wait for a worker thread still inside pyserial before the port is closed under it.
    """

    def __init__(self, ser: serial.Serial) -> None:
        self._ser = ser
        self._closed = False
        self._recv_lock = trio.Lock()
        self._send_lock = trio.Lock()

    def _read_blocking(self, max_bytes: int) -> bytes:
        data: bytes = self._ser.read(1)  # waits at most the poll interval
        if data and max_bytes > 1:
            more = min(self._ser.in_waiting, max_bytes - 1)
            if more > 0:
                data += self._ser.read(more)
        return data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = _DEFAULT_RECEIVE
        if not isinstance(max_bytes, int):
            raise TypeError("max_bytes must be integer >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be integer >= 1")
        if self._recv_lock.locked():
            raise trio.BusyResourceError("another task is already receiving on this port")
        async with self._recv_lock:
            while not self._closed:
                data = await trio.to_thread.run_sync(self._read_blocking, max_bytes)
                if data:
                    return data
            raise trio.ClosedResourceError("serial port closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._send_lock.locked():
            raise trio.BusyResourceError("another task is already sending on this port")
        async with self._send_lock:
            view = memoryview(data).cast("B")
            for start in range(0, max(len(view), 1), _THREAD_WRITE_CHUNK):
                if self._closed:
                    raise trio.ClosedResourceError("serial port closed")
                chunk = bytes(view[start : start + _THREAD_WRITE_CHUNK])
                if chunk:
                    await trio.to_thread.run_sync(self._ser.write, chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("serial port closed")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with trio.CancelScope(shield=True):
                self._ser.cancel_read()
                self._ser.cancel_write()
                async with self._recv_lock, self._send_lock:
                    pass  # worker threads have left pyserial
        await trio.lowlevel.checkpoint()


class SerialStream(LinkStream):
    """A serial port as a trio stream; see the module docstring for the two implementations.

    Create it with :func:`open_serial`. ``aclose`` closes the I/O path and the pyserial port,
    each exactly once.
    """

    def __init__(self, ser: serial.Serial, inner: trio.abc.Stream, url: SerialURL) -> None:
        super().__init__(
            inner,
            name=str(url),
            remedy="the device was reset or unplugged; check the cable and reconnect",
        )
        self._ser = ser
        self._port_closed = False
        self.url = url
        self.threaded = isinstance(inner, _ThreadedSerialIO)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return at least one byte; a serial port never reports a clean end of stream."""
        data = await super().receive_some(max_bytes)
        if not data:
            raise self._broken_error("the serial port hung up")
        return data

    async def aclose(self) -> None:
        """Close the I/O path, then the port; idempotent and cancellation-safe."""
        try:
            await super().aclose()
        finally:
            if not self._port_closed:
                self._port_closed = True
                self._ser.close()


async def open_serial(
    port: str, baud: int = DEFAULT_BAUD, *, threaded: bool | None = None
) -> SerialStream:
    """Open ``port`` at ``baud`` (8N1, no flow control, exclusive) as a :class:`SerialStream`.

    Args:
        port: OS name of the port (``/dev/ttyACM0``, ``COM3``).
        baud: baud rate; both sides must agree.
        threaded: force the worker-thread implementation (True) or the FdStream one (False);
            None picks threads on Windows and FdStream elsewhere.

    Raises:
        ConfigError: no such port, permission denied, or an unsupported baud rate.
        LinkBroken: the port is busy or the OS refused to open it.
    """
    url = SerialURL(port, baud)
    if threaded is None:
        threaded = sys.platform == "win32"
    try:
        ser = await trio.to_thread.run_sync(_open_port, port, baud)
    except ValueError as exc:
        raise ConfigError(f"{url}: {exc}; use a standard baud rate such as 921600") from exc
    except OSError as exc:  # serial.SerialException is an OSError
        raise _open_error(port, exc) from exc
    inner: trio.abc.Stream
    if threaded or sys.platform == "win32":
        inner = _ThreadedSerialIO(ser)
    else:
        inner = trio.lowlevel.FdStream(os.dup(ser.fileno()))
    return SerialStream(ser, inner, url)
