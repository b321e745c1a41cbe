"""Wire protocol v1 enums and type codes (kept apart so messages.py stays readable).

Import them from ``tinytelem.protocol.messages``, which re-exports every name. Receivers treat
unknown enum values as opaque numbers (firmware may be newer than the host); docs/protocol.md
lists the values.
"""

from __future__ import annotations

import enum

__all__ = [
    "NO_LAYER",
    "Capability",
    "Counter",
    "ErrorCode",
    "InferStatus",
    "LogLevel",
    "MsgType",
    "Op",
    "Phase",
    "PowerChip",
    "TraceLevel",
]


class MsgType(enum.IntEnum):
    """u8 type codes carried in the frame header."""

    HELLO = 0x01
    INFER_BEGIN = 0x02
    INFER_END = 0x03
    TOKEN = 0x04
    SPAN_BEGIN = 0x05
    SPAN_END = 0x06
    MEMORY = 0x07
    COUNTER = 0x08
    MARKER = 0x09
    LOG = 0x0A
    ERROR = 0x0B
    HEARTBEAT = 0x0C
    PONG = 0x0D
    POWER_SAMPLES = 0x0E
    SPAN_BATCH = 0x0F
    PING = 0x80
    RUN = 0x81
    STOP = 0x82
    CONFIG = 0x83


class Phase(enum.IntEnum):
    """Which part of inference a token belongs to."""

    PREFILL = 0
    DECODE = 1


class TraceLevel(enum.IntEnum):
    """How much the firmware reports (CONFIG)."""

    OFF = 0
    TOKENS = 1
    SPANS = 2


class InferStatus(enum.IntEnum):
    """How an inference ended (INFER_END)."""

    OK = 0
    STOPPED = 1
    ERROR = 2


class Op(enum.IntEnum):
    """Operator ids used by SPAN_BEGIN / SPAN_END."""

    LAYER = 0
    EMBED = 1
    ATTN_NORM = 2
    QKV = 3
    ROPE = 4
    ATTENTION = 5
    ATTN_OUT = 6
    FFN_NORM = 7
    FFN = 8
    FINAL_NORM = 9
    CLASSIFIER = 10
    SAMPLE = 11


NO_LAYER = 0xFFFF
"""Layer id of spans that are not inside a transformer layer (embedding, classifier, sampling)."""


class PowerChip(enum.IntEnum):
    """Which current-sense chip produced POWER_SAMPLES (fixes the register LSBs)."""

    INA219 = 0
    INA226 = 1


class Capability(enum.IntFlag):
    """HELLO capability bits."""

    SPANS = 1 << 0
    MEMORY = 1 << 1
    COUNTERS = 1 << 2
    MARKERS_GPIO = 1 << 3
    TEMPERATURE = 1 << 4
    STOP = 1 << 5


class Counter(enum.IntEnum):
    """Well-known COUNTER ids (others are firmware-specific)."""

    CYCLES = 0
    INSTRUCTIONS = 1
    MACS = 2
    BYTES_READ = 3
    TX_BYTES = 4
    TX_DROPPED_FRAMES = 5


class LogLevel(enum.IntEnum):
    """LOG levels."""

    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


class ErrorCode(enum.IntEnum):
    """Well-known ERROR codes; 0 is reserved, codes >= 0x100 are firmware-specific."""

    BUSY = 1
    """RUN while an inference is running: send STOP or wait for INFER_END."""
    BAD_RUN = 2
    """RUN that cannot start (token id out of range, prompt longer than the context...)."""
    BAD_CONFIG = 3
    """CONFIG with an unknown trace level."""
