"""The twin's power channel, both ends, and the sensor that samples it.

::

    device twin (emulator/)                          host (session/)
    TwinPowerChannel ── tcp: msgpack header, then ──> twin_power_client -> SegmentWaveform
                        [t_start_s, t_end_s, watts]                         │
                                                        TwinSensor = SimulatedPowerSensor(waveform)

Segments are in host ``time.monotonic()`` seconds: the twin runs on the same host, so true time
is shared, and the simulated sensor adds its own drifting clock on top.
"""

from __future__ import annotations

from typing import Any

import msgpack
import trio

from tinytelem.errors import ConfigError, SensorError
from tinytelem.power.simulated import SimulatedPowerSensor
from tinytelem.power.waveform import PowerSegment, SegmentWaveform
from tinytelem.records import Record
from tinytelem.transports.url import parse_host_port

__all__ = ["POWER_QUEUE", "SIM_SENSOR_TRANSPORT_S", "TwinPowerChannel", "TwinSensor",
           "twin_power_client"]

POWER_QUEUE = 4096
"""Batches buffered per power client; further batches are dropped (and counted) until it drains."""
SIM_SENSOR_TRANSPORT_S = 0.001
"""How long after its last sample a simulated block reaches the host (declared in the trace)."""


class TwinPowerChannel:
    """The twin's end: publishes power segments to every connected client, never waiting.

    A client that does not drain its queue loses whole batches (counted in ``dropped``); the
    device keeps its pace.
    """

    def __init__(self, header: dict[str, object], boot_s: float) -> None:
        self.header = header
        self.boot_s = boot_s
        self.clients: list[trio.MemorySendChannel[list[PowerSegment]]] = []
        self.dropped = 0

    def publish(self, segments: list[PowerSegment]) -> None:
        for channel in list(self.clients):
            try:
                channel.send_nowait(segments)
            except trio.WouldBlock:
                self.dropped += len(segments)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.clients.remove(channel)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one client (``trio.serve_listeners`` handler)."""
        send, receive = trio.open_memory_channel[list[PowerSegment]](POWER_QUEUE)
        self.clients.append(send)
        boot = self.boot_s
        try:
            async with stream, receive:
                await stream.send_all(msgpack.packb(self.header))
                async for segments in receive:
                    data = b"".join(
                        msgpack.packb([boot + s.start_s, boot + s.end_s, s.watts])
                        for s in segments
                    )
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if send in self.clients:
                self.clients.remove(send)
            send.close()


async def twin_power_client(
    url: str,
    waveform: SegmentWaveform,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    header_timeout_s: float = 5.0,
) -> None:
    """Feed ``waveform`` from the device twin's power channel until the twin closes it.

    The stream is msgpack: a header map ``{"voltage_v": .., "idle_w": ..}`` then arrays
    ``[t_start_s, t_end_s, watts]``. ``task_status.started()`` fires once the header has
    configured the waveform, so a sensor started afterwards sees the right voltage.

    Args:
        url: ``tcp://host:port`` (or ``host:port``) of the twin's power channel.
        waveform: Receives the header and every segment.
        task_status: For ``nursery.start``.
        header_timeout_s: How long to wait for the header before giving up.

    Raises:
        SensorError: cannot connect, no header in time, or the stream is not the expected
            msgpack format.
    """
    try:
        host, port = parse_host_port(url)
    except ConfigError as exc:
        raise ConfigError(
            f"twin power channel URL {url!r} must look like tcp://127.0.0.1:5556") from exc
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise SensorError(
            f"cannot connect to the twin power channel at {url}: {exc} -- "
            "is the device twin running with its power channel on that port?"
        ) from exc
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
    async with stream:
        with trio.move_on_after(header_timeout_s) as scope:
            header = await _next_object(stream, unpacker, url)
        if scope.cancelled_caught:
            raise SensorError(
                f"no header from the twin power channel at {url} within {header_timeout_s} s "
                "-- is that port really the twin's power channel?"
            )
        if header is None:
            raise SensorError(f"twin power channel at {url} closed before sending its header")
        _apply_header(header, waveform, url)
        task_status.started()
        while (obj := await _next_object(stream, unpacker, url)) is not None:
            if (
                not isinstance(obj, list | tuple)
                or len(obj) != 3
                or not all(isinstance(v, int | float) for v in obj)
            ):
                raise SensorError(
                    f"twin power channel at {url} sent {obj!r}; expected "
                    "[t_start_s, t_end_s, watts] -- is the twin's protocol version the same?"
                )
            waveform.add_segment(float(obj[0]), float(obj[1]), float(obj[2]))


async def _next_object(
    stream: trio.abc.ReceiveStream, unpacker: msgpack.Unpacker, url: str
) -> object:
    """Next msgpack object from ``stream``, or None at a clean end of stream."""
    while True:
        try:
            return next(unpacker)
        except StopIteration:
            pass
        except (ValueError, msgpack.exceptions.UnpackException) as exc:
            raise SensorError(
                f"twin power channel at {url} sent bytes that are not msgpack"
            ) from exc
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            raise SensorError(f"twin power channel at {url} broke: {exc.__cause__}") from exc
        if not data:
            return None
        try:
            unpacker.feed(data)
        except msgpack.exceptions.BufferFull as exc:
            raise SensorError(f"twin power channel at {url} sent an oversized object") from exc


def _apply_header(header: object, waveform: SegmentWaveform, url: str) -> None:
    try:
        assert isinstance(header, dict)
        voltage_v = float(header["voltage_v"])
        idle_w = float(header["idle_w"])
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise SensorError(
            f"twin power channel at {url} sent header {header!r}; expected a map with "
            "voltage_v and idle_w"
        ) from exc
    try:
        waveform.configure(voltage_v, idle_w)
    except ConfigError as exc:
        raise SensorError(f"twin power channel at {url}: bad header: {exc}") from exc


class TwinSensor:
    """The simulated sensor wired to the twin's power waveform (what a shunt would see)."""

    def __init__(self, power_url: str, rate_hz: float, drift_ppm: float, seed: int) -> None:
        self.power_url = power_url
        self.waveform = SegmentWaveform()
        self.sensor = SimulatedPowerSensor(
            self.waveform, rate_hz=rate_hz, drift_ppm=drift_ppm, noise_a=1e-5, seed=seed,
            transport_s=SIM_SENSOR_TRANSPORT_S,
        )

    async def run(
        self,
        send: trio.MemorySendChannel[Record],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(twin_power_client, self.power_url, self.waveform)
            self.sensor.voltage_v = self.waveform.voltage_v
            await nursery.start(self.sensor.run, send)
            task_status.started()

    def statistics(self) -> Any:
        return self.sensor.statistics()
