"""The payload layout helpers every wire message is built from (sans-I/O).

Struct packing that reports bad fields as :class:`~tinytelem.errors.ProtocolError`, the
length-prefixed string field, and :class:`FixedLayout`, the base for messages whose payload is one
fixed struct. Kept apart from the message classes so device events (``messages``) and host
commands (``commands``) share one set of rules.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import ClassVar, Protocol, TypeVar

from tinytelem.errors import ProtocolError
from tinytelem.protocol.enums import MsgType

MAX_PAYLOAD = 1024

__all__ = [
    "MAX_PAYLOAD",
    "U8",
    "FixedLayout",
    "Message",
    "pack_str",
    "pack_struct",
    "unpack_fixed",
    "unpack_str",
]


class Message(Protocol):
    """What every message class provides."""

    TYPE: ClassVar[MsgType]

    def pack(self) -> bytes: ...


def pack_struct(st: struct.Struct, name: str, *values: object) -> bytes:
    """struct.pack that reports out-of-range fields as ProtocolError (the caller's bug to fix)."""
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise ProtocolError(f"{name} field out of range for {st.format!r}: {exc}") from exc


U8 = struct.Struct("<B")


def pack_str(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ProtocolError(f"{what} is {len(raw)} bytes of UTF-8; at most 255 fit in a frame")
    return bytes([len(raw)]) + raw


def unpack_str(payload: bytes, offset: int, what: str, lenient: bool = False
                ) -> tuple[str, int]:
    """A ``str`` field; ``lenient`` keeps bytes that are not UTF-8 as ``\\xNN`` escapes."""
    if offset >= len(payload):
        raise ProtocolError(f"{what}: payload ends before the string length byte")
    n = payload[offset]
    end = offset + 1 + n
    if end > len(payload):
        raise ProtocolError(f"{what}: string of {n} bytes runs past the payload end")
    try:
        return payload[offset + 1 : end].decode(
            "utf-8", "backslashreplace" if lenient else "strict"), end
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: string is not valid UTF-8") from exc


def unpack_fixed(st: struct.Struct, payload: bytes, name: str) -> tuple[int, ...]:
    if len(payload) != st.size:
        raise ProtocolError(f"{name} payload must be {st.size} bytes, got {len(payload)}")
    return st.unpack(payload)


_T = TypeVar("_T", bound="FixedLayout")


class FixedLayout:
    """Pack/unpack for messages whose payload is one fixed struct of all their fields, in order.

    A subclass names its layout in ``_LAYOUT``; its dataclass fields are the struct's values.
    Kept as a small base (as h11 keeps its readers and writers in tables) so each message states
    only what is particular to it.
    """

    __slots__ = ()
    TYPE: ClassVar[MsgType]
    _LAYOUT: ClassVar[struct.Struct]

    def pack(self) -> bytes:
        values = (getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]
        return pack_struct(self._LAYOUT, self.TYPE.name, *values)

    @classmethod
    def unpack(cls: type[_T], payload: bytes) -> _T:
        return cls(*unpack_fixed(cls._LAYOUT, payload, cls.TYPE.name))
