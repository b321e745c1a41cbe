"""Host -> device commands of wire protocol v1 (types 0x80..0x8F), sans-I/O.

PING, RUN, STOP and CONFIG: what the host sends and the device (or its twin) decodes. They share
the envelope and layout rules of the device events in :mod:`tinytelem.protocol.messages`, which
also holds the table that decodes either direction by type code.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from tinytelem.errors import ProtocolError
from tinytelem.protocol.enums import MsgType
from tinytelem.protocol.layout import MAX_PAYLOAD, U8, FixedLayout, pack_struct

__all__ = ["Config", "Ping", "Run", "Stop"]

_NONCE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Ping(FixedLayout):
    """Host asks for a PONG carrying the same nonce (clock alignment, liveness)."""

    TYPE: ClassVar[MsgType] = MsgType.PING
    _LAYOUT: ClassVar[struct.Struct] = _NONCE
    nonce: int


_RUN = struct.Struct("<IIfHH")


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise ProtocolError(f"RUN temperature {temperature} must be finite and >= 0 (0 = greedy)")


_MAX_PROMPT = (MAX_PAYLOAD - _RUN.size) // 4


@dataclass(frozen=True, slots=True)
class Run:
    """Host starts an inference: prompt token ids, tokens to generate, seed and temperature."""

    TYPE: ClassVar[MsgType] = MsgType.RUN
    run_id: int
    seed: int
    temperature: float
    n_tokens: int
    prompt: tuple[int, ...] = field(default=())

    def pack(self) -> bytes:
        if len(self.prompt) > _MAX_PROMPT:
            raise ProtocolError(
                f"RUN prompt has {len(self.prompt)} tokens; at most {_MAX_PROMPT} fit in a frame"
            )
        _check_temperature(self.temperature)
        head = pack_struct(
            _RUN, "RUN", self.run_id, self.seed, self.temperature, self.n_tokens, len(self.prompt)
        )
        prompt = struct.Struct(f"<{len(self.prompt)}I")
        return head + pack_struct(prompt, "RUN prompt", *self.prompt)

    @classmethod
    def unpack(cls, payload: bytes) -> Run:
        if len(payload) < _RUN.size:
            raise ProtocolError(f"RUN payload too short: {len(payload)} bytes")
        run_id, seed, temp, n_tokens, n_prompt = _RUN.unpack_from(payload)
        if len(payload) != _RUN.size + 4 * n_prompt:
            raise ProtocolError(
                f"RUN announces {n_prompt} prompt tokens but carries "
                f"{len(payload) - _RUN.size} bytes of them"
            )
        _check_temperature(temp)
        prompt = struct.unpack_from(f"<{n_prompt}I", payload, _RUN.size)
        return cls(run_id, seed, temp, n_tokens, tuple(prompt))


@dataclass(frozen=True, slots=True)
class Stop:
    """Host asks the device to stop the running inference (INFER_END with STOPPED follows)."""

    TYPE: ClassVar[MsgType] = MsgType.STOP

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> Stop:
        if payload:
            raise ProtocolError(f"STOP payload must be empty, got {len(payload)} bytes")
        return cls()


@dataclass(frozen=True, slots=True)
class Config:
    """Host sets the trace level (:class:`TraceLevel`)."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIG
    trace_level: int

    def pack(self) -> bytes:
        return pack_struct(U8, "CONFIG trace_level", self.trace_level)

    @classmethod
    def unpack(cls, payload: bytes) -> Config:
        if len(payload) != 1:
            raise ProtocolError(f"CONFIG payload must be 1 byte, got {len(payload)}")
        return cls(payload[0])
