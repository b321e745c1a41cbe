"""Consistent Overhead Byte Stuffing (COBS), the framing of wire protocol v1.

The encoded form never contains 0x00, so 0x00 delimits frames on the wire. These functions work
a block at a time (``bytes.find`` / slicing), never a byte at a time in Python.
"""

from __future__ import annotations

from tinytelem.errors import ProtocolError


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (without the trailing 0x00 delimiter)."""
    out = bytearray()
    for chunk in data.split(b"\x00"):
        # Each zero-delimited chunk becomes runs of at most 254 data bytes behind a code byte.
        start = 0
        while len(chunk) - start >= 254:
            out.append(0xFF)
            out += chunk[start : start + 254]
            start += 254
        out.append(len(chunk) - start + 1)
        out += chunk[start:]
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Decode one COBS block (delimiter removed); raise ProtocolError if it is malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError(f"COBS: zero byte inside an encoded frame at offset {i}")
        end = i + code
        if end > n:
            raise ProtocolError(f"COBS: code {code} at offset {i} runs past the frame end")
        block = data[i + 1 : end]
        if 0 in block:
            raise ProtocolError("COBS: zero byte inside an encoded frame")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
