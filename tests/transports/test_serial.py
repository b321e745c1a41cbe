"""Serial links over a real pseudo-terminal pair.

``os.openpty()`` gives a master fd and a slave tty; the slave's name is opened as the serial
port, and the master (wrapped in a plain FdStream) plays the device. Both implementations (the
FdStream one and the worker-thread one used on Windows) run the same tests.

``trio.testing.check_two_way_stream`` does not apply here: a serial port has no clean end of
stream (the contract's "close the sender, the receiver gets b''" becomes LinkBroken by design).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import sys
import termios
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import serial
import trio

from tinytelem.errors import ConfigError, LinkBroken, LinkClosed
from tinytelem.transports import PortInfo, SerialStream, list_serial_ports, open_stream
from tinytelem.transports.serial import _open_error, open_serial

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX pseudo-terminals")


@dataclass
class Pty:
    master: int
    slave: int
    name: str


@pytest.fixture
def pty() -> Iterator[Pty]:
    master, slave = os.openpty()
    pair = Pty(master, slave, os.ttyname(slave))
    yield pair
    for fd in (pair.master, pair.slave):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Link:
    serial: SerialStream
    device: trio.lowlevel.FdStream


@pytest.fixture(params=[False, True], ids=["fdstream", "threaded"])
async def link(request: pytest.FixtureRequest, pty: Pty) -> AsyncIterator[Link]:
    stream = await open_serial(pty.name, 921600, threaded=request.param)
    os.close(pty.slave)  # the serial stream holds its own fd now
    pty.slave = -1
    device = trio.lowlevel.FdStream(pty.master)  # owns the master fd from here on
    pty.master = -1
    yield Link(stream, device)
    await stream.aclose()
    await device.aclose()


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        got += await stream.receive_some(65536)
    return bytes(got)


async def test_vmin_is_one_after_open(pty: Pty) -> None:
    with trio.fail_after(5):
        stream = await open_serial(pty.name)
        try:
            cc = termios.tcgetattr(pty.slave)[6]
            assert cc[termios.VMIN] == 1
            assert cc[termios.VTIME] == 0
        finally:
            await stream.aclose()


async def test_without_vmin_an_idle_tty_reads_as_eof(pty: Pty) -> None:
    """The gotcha the VMIN setting exists for: this is what SerialStream must not do."""
    ser = serial.Serial(pty.name, 921600)
    try:
        assert termios.tcgetattr(ser.fileno())[6][termios.VMIN] == 0
        raw = trio.lowlevel.FdStream(os.dup(ser.fileno()))
        with trio.fail_after(5):
            assert await raw.receive_some() == b""
            await raw.aclose()
    finally:
        ser.close()


async def test_idle_read_waits_instead_of_reporting_eof(link: Link) -> None:
    with trio.fail_after(5):
        with trio.move_on_after(0.3) as scope:
            await link.serial.receive_some()
        assert scope.cancelled_caught
        # The stream is still usable afterwards.
        await link.device.send_all(b"late")
        assert await _receive_exactly(link.serial, 4) == b"late"


async def test_megabyte_each_way_without_loss(link: Link) -> None:
    rng = random.Random(1234)
    up = rng.randbytes(1 << 20)  # every byte value, incl. XON/XOFF, ^C, CR, LF, 0x00
    down = rng.randbytes(1 << 20)
    received: dict[str, bytes] = {}

    async def collect(key: str, stream: trio.abc.ReceiveStream, n: int) -> None:
        received[key] = await _receive_exactly(stream, n)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, "at_device", link.device, len(up))
            nursery.start_soon(collect, "at_host", link.serial, len(down))
            nursery.start_soon(link.serial.send_all, up)
            nursery.start_soon(link.device.send_all, down)
    assert received["at_device"] == up
    assert received["at_host"] == down


async def test_device_hang_up_is_link_broken(link: Link) -> None:
    with trio.fail_after(5):
        await link.device.send_all(b"last words")
        assert await _receive_exactly(link.serial, 10) == b"last words"
        await link.device.aclose()  # the pty master goes away: the "cable is pulled"
        with pytest.raises(LinkBroken) as info:
            await link.serial.receive_some()
        assert "check the cable" in str(info.value)
        with pytest.raises(LinkBroken):
            await link.serial.send_all(b"anyone there?")


async def test_close_wakes_a_blocked_receive_with_link_closed(link: Link) -> None:
    outcome: list[BaseException] = []

    async def reader() -> None:
        try:
            await link.serial.receive_some()
        except LinkClosed as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.05)
            await link.serial.aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], trio.ClosedResourceError)


async def test_use_after_close_is_link_closed_and_close_releases_the_port(
    link: Link, pty: Pty
) -> None:
    name = link.serial.url.port
    with trio.fail_after(5):
        await link.serial.aclose()
        await link.serial.aclose()  # idempotent
        with pytest.raises(LinkClosed):
            await link.serial.send_all(b"x")
        with pytest.raises(LinkClosed):
            await link.serial.receive_some()
        # The exclusive lock is gone, so the port opens again.
        again = await open_serial(name)
        await again.aclose()


async def test_second_open_is_refused_as_busy(link: Link) -> None:
    with trio.fail_after(5), pytest.raises(LinkBroken, match="busy") as info:
        await open_serial(link.serial.url.port)
    assert isinstance(info.value.__cause__, serial.SerialException)


async def test_cancelled_close_still_closes_the_port(link: Link) -> None:
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            scope.cancel()
            await link.serial.aclose()
        assert link.serial.closed
        again = await open_serial(link.serial.url.port)
        await again.aclose()


async def test_threaded_io_rejects_bad_sizes_and_concurrent_receives(pty: Pty) -> None:
    with trio.fail_after(5):
        stream = await open_serial(pty.name, threaded=True)
        assert stream.threaded
        try:
            with pytest.raises(ValueError):
                await stream.receive_some(0)
            with pytest.raises(TypeError):
                await stream.receive_some(1.5)  # type: ignore[arg-type]
            await stream.wait_send_all_might_not_block()
            await stream.send_all(b"")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.receive_some)
                await trio.sleep(0.05)
                with pytest.raises(trio.BusyResourceError):
                    await stream.receive_some()
                nursery.cancel_scope.cancel()
        finally:
            await stream.aclose()
        with pytest.raises(LinkClosed):
            await stream.wait_send_all_might_not_block()


async def test_open_stream_serial_url(pty: Pty) -> None:
    with trio.fail_after(5):
        stream = await open_stream(f"serial://{pty.name}?baud=115200")
        try:
            assert isinstance(stream, SerialStream)
            assert not stream.threaded
            assert stream.name == f"serial://{pty.name}?baud=115200"
        finally:
            await stream.aclose()


async def test_missing_port_is_a_config_error_that_says_how_to_list_ports() -> None:
    with trio.fail_after(5), pytest.raises(ConfigError) as info:
        await open_stream("serial:///dev/tinytelem-no-such-tty")
    assert "no such serial port" in str(info.value)
    assert "python -m serial.tools.list_ports" in str(info.value)


async def test_bad_baud_is_a_config_error(pty: Pty) -> None:
    with trio.fail_after(5), pytest.raises(ConfigError, match="baud"):
        await open_serial(pty.name, -5)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (serial.SerialException(errno.EACCES, "could not open port"), ConfigError, "dialout"),
        (serial.SerialException(errno.EBUSY, "could not open port"), LinkBroken, "busy"),
        (serial.SerialException(errno.EIO, "could not open port"), LinkBroken, "replug"),
        (serial.SerialException("FileNotFoundError(2, ...)"), ConfigError, "no such serial"),
    ],
)
def test_open_error_table(exc: OSError, kind: type[Exception], text: str) -> None:
    error = _open_error("/dev/ttyACM0", exc)
    assert isinstance(error, kind)
    assert text in str(error)


def test_list_serial_ports_returns_sorted_port_infos() -> None:
    ports = list_serial_ports()
    assert all(isinstance(p, PortInfo) for p in ports)
    assert [p.device for p in ports] == sorted(p.device for p in ports)


async def test_close_wakes_a_blocked_send_with_link_closed(link: Link) -> None:
    """Nobody reads the device side, so the pty buffer fills and send_all blocks."""
    outcome: list[BaseException] = []

    async def writer() -> None:
        try:
            await link.serial.send_all(b"\x55" * (4 << 20))
        except LinkClosed as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.sleep(0.2)
            assert not outcome  # still blocked
            await link.serial.aclose()
    assert len(outcome) == 1
