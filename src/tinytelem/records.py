"""Records that actors pass to each other through the hub.

Small frozen dataclasses (h11 style). Times: ``host_s`` is ``trio.current_time()``-independent
host monotonic time (``time.monotonic()``), so actors in one process and a device twin in
another share one time base on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from tinytelem.protocol.codec import FrameError
    from tinytelem.protocol.messages import AnyMessage


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One decoded frame from the device, its clock extended and converted."""

    host_s: float
    """Host monotonic time the bytes carrying the frame arrived."""
    seq: int
    ticks: int
    """Device ticks extended to 64 bits."""
    device_s: float
    """ticks / tick_hz (NaN before the first HELLO told us tick_hz)."""
    message: AnyMessage


@dataclass(frozen=True, slots=True)
class DecodeErrorRecord:
    """Bytes the decoder rejected."""

    host_s: float
    error: FrameError


@dataclass(frozen=True, slots=True)
class PingRecord:
    """A completed PING/PONG round trip (clock alignment data)."""

    nonce: int
    send_host_s: float
    recv_host_s: float
    ticks: int


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The link went down (``up=False``) or came back (``up=True``)."""

    host_s: float
    up: bool
    url: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PowerBlock:
    """A block of power-sensor samples, contiguous in the sensor's sample index."""

    host_s: float
    """Host time the block arrived (used only to fit the sensor clock)."""
    first_index: int
    current_a: np.ndarray
    """float32 amperes, one per sample."""
    voltage_v: float
    sample_rate_hz: float


@dataclass(frozen=True, slots=True)
class PowerGap:
    """Samples that were lost (sensor counter jump, overflow, sensor gone)."""

    host_s: float
    first_index: int
    n_missing: int


Record = DeviceRecord | DecodeErrorRecord | PingRecord | LinkStatus | PowerBlock | PowerGap

RecordBatch = tuple[Record, ...]
"""Records that travel together (one link read's worth of frames): channels carry batches so
that task switches are paid per batch, not per record."""
