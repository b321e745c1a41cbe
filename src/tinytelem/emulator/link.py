"""The link to the host as a budget: a UART's byte rate, the firmware's transmit ring, a policy.

Real boards talk to the host through a UART (115 200 baud carries 11 520 bytes/s, 8N1: ten bits
per byte) or a USB CDC port. Frames enter the firmware's transmit ring when the engine emits
them and leave at the link's byte rate. When the ring is full the ``drop`` policy discards a
trace frame (span, counter, memory) and counts it (``tx_dropped`` in HEARTBEAT; its sequence
number is spent, so the host sees the gap); the frames a session cannot do without (HELLO,
INFER_BEGIN/END, TOKEN, PONG, errors, logs) wait for room instead, so a run always ends and
every token arrives, late when the link is slow. :class:`TxRing` is that arithmetic, sans-I/O;
the twin puts every frame through it.

:func:`link_fit` answers before a run whether a trace level fits a link: the bytes one decode
token's frames take on the wire (laid out by the same schedule the twin runs, encoded with the
real codec) against the link's byte rate and the predicted token time.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytelem.costing.model import CostModel
from tinytelem.emulator.schedule import RunLayout, SpanDraft
from tinytelem.errors import ConfigError
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.messages import MsgType, TraceLevel

__all__ = [
    "BITS_PER_BYTE",
    "DEFAULT_TX_BUFFER",
    "DROPPABLE",
    "LinkFit",
    "TxRing",
    "link_fit",
    "parse_baud",
]

BITS_PER_BYTE = 10
"""8N1 framing: a start bit, eight data bits, a stop bit."""

DEFAULT_TX_BUFFER = 4096
"""Transmit ring of the firmware's ESP-IDF port (``uart_driver_install`` tx buffer)."""


DROPPABLE = frozenset({MsgType.SPAN_BEGIN, MsgType.SPAN_END, MsgType.SPAN_BATCH,
                       MsgType.COUNTER, MsgType.MEMORY, MsgType.MARKER})
"""Trace frames the drop policy may discard (a SPAN_BATCH with all its spans); every other
kind waits for room."""


def parse_baud(text: str | int | None) -> int | None:
    """``115200`` -> 115200; None/``0``/``free`` -> None (an unlimited link).

    Raises:
        ConfigError: not a positive integer.
    """
    if text is None or str(text).strip().lower() in ("", "0", "free", "none"):
        return None
    try:
        baud = int(str(text).strip())
    except ValueError:
        baud = 0
    if baud < 300:
        raise ConfigError(f"bad link baud rate {text!r}; give bits per second such as 115200, "
                          "or 0 for a free link")
    return baud


class TxRing:
    """A transmit ring drained at ``baud / 10`` bytes per second (times in seconds).

    :meth:`offer` puts a frame in at time ``t`` and returns when its last byte is on the wire, or
    None when it does not fit (dropped). Frames must be offered in time order.
    """

    def __init__(self, baud: int, capacity: int = DEFAULT_TX_BUFFER) -> None:
        if baud <= 0 or capacity <= 0:
            raise ConfigError("a link needs a positive baud rate and transmit buffer")
        self.byte_rate = baud / BITS_PER_BYTE
        self.capacity = capacity
        self._busy_until = 0.0
        self.sent_bytes = 0
        self.sent_frames = 0
        self.dropped_frames = 0
        self.dropped_bytes = 0

    def queued(self, t: float) -> float:
        """Bytes still in the ring at ``t``."""
        return max(0.0, self._busy_until - t) * self.byte_rate

    def offer(self, t: float, n_bytes: int, droppable: bool = True) -> float | None:
        """Queue ``n_bytes`` at ``t``: the time its last byte leaves, or None (dropped).

        A frame that is not ``droppable`` waits for room when the ring is full (it is queued
        behind what is there, whatever the ring's size).
        """
        if droppable and self.queued(t) + n_bytes > self.capacity:
            self.dropped_frames += 1
            self.dropped_bytes += n_bytes
            return None
        self._busy_until = max(self._busy_until, t) + n_bytes / self.byte_rate
        self.sent_bytes += n_bytes
        self.sent_frames += 1
        return self._busy_until


STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1_000_000,
                  2_000_000, 3_000_000, 4_000_000, 6_000_000, 12_000_000)
"""Rates UARTs and USB-serial bridges are commonly set to: the advice names one of them."""


@dataclass(frozen=True)
class LinkFit:
    """Whether a trace level's frames fit a link during decode (predicted from the cost model)."""

    baud: int
    level: TraceLevel
    bytes_per_token: int
    frames_per_token: int
    token_s: float
    """Predicted decode token time at this level (frame costs included)."""

    @property
    def needed_bytes_s(self) -> float:
        """Wire bytes per second the level produces while decoding."""
        return self.bytes_per_token / self.token_s if self.token_s > 0 else float("inf")

    @property
    def utilisation(self) -> float:
        """Needed over available byte rate (above 1: the link cannot keep up)."""
        return self.needed_bytes_s / (self.baud / BITS_PER_BYTE)

    @property
    def fits(self) -> bool:
        """True when the link carries the level's frames as fast as they are made."""
        return self.utilisation <= 1.0

    @property
    def baud_needed(self) -> int:
        """The smallest standard baud rate that carries this level."""
        need = self.needed_bytes_s * BITS_PER_BYTE
        for baud in STANDARD_BAUDS:
            if baud >= need:
                return baud
        return int(need) + 1


def link_fit(cost: CostModel, baud: int, pos: int = 1) -> LinkFit:
    """Lay out one decode token at ``pos`` at the cost model's trace level and weigh its frames
    against ``baud``.

    Token ids do not change the frames' kinds or sizes much (COBS adds a byte per zero run), so
    fixed ids stand in; the frames are encoded with the real codec.
    """
    level = cost.trace_level
    layout = RunLayout(cost, run_id=1, n_prompt=pos, n_tokens=2, start_s=0.0, level=level)
    for i in range(pos):
        layout.prefill(i, 1)
    layout.decode(0, 2)
    layout.take()
    before = layout.horizon_s
    layout.decode(1, 3)
    frames, _ = layout.take()
    tick_hz = cost.platform.tick_hz
    sizes = [len(encode_frame(f.message.nominal(tick_hz)[1], 0x1234, 0x12345678))
             if isinstance(f.message, SpanDraft)
             else len(encode_frame(f.message, 0x1234, 0x12345678)) for f in frames]
    return LinkFit(baud, level, sum(sizes), len(sizes), layout.horizon_s - before)
