"""Consistent Overhead Byte Stuffing (COBS), the framing of wire protocol v1.

The encoded form never contains 0x00, so 0x00 delimits frames on the wire. The encoder is the
canonical one of Cheshire & Baker (the one most C libraries implement), so a firmware encoder
built from any textbook COBS routine is byte-identical to this one; docs/protocol.md gives the
exact rules, including the end-of-frame case after a full 254-byte run. These functions work a
block at a time (``bytes.split`` / slicing), never a byte at a time in Python.
"""

from __future__ import annotations

from tinytelem.errors import ProtocolError

__all__ = ["decode", "encode", "max_encoded_len"]


def max_encoded_len(n: int) -> int:
    """Worst-case encoded size of ``n`` bytes (delimiter excluded): one code byte per 254, plus one.

    Firmware sizes its transmit buffer with this bound.
    """
    return n + n // 254 + 1


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (without the trailing 0x00 delimiter).

    Every zero-delimited chunk becomes a code byte (chunk length + 1) and the chunk; chunks of
    254 bytes or more are cut into code-0xFF blocks of 254 bytes, which imply no zero. When the
    data *ends* exactly after a 0xFF block, no further code byte follows (canonical COBS).
    """
    out = bytearray()
    chunks = data.split(b"\x00")
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        n = len(chunk)
        if n < 254:  # the common case for telemetry frames
            out.append(n + 1)
            out += chunk
            continue
        start = 0
        while n - start >= 254:
            out.append(0xFF)
            out += chunk[start : start + 254]
            start += 254
        if start < n or i != last:
            out.append(n - start + 1)
            out += chunk[start:]
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Decode one COBS block (delimiter removed); raise ProtocolError if it is malformed.

    Accepts both the canonical encoding and the redundant form that ends a frame with a 0x01
    code after a full 0xFF block (both decode to the same bytes).
    """
    if 0 in data:
        raise ProtocolError(
            f"COBS: zero byte inside an encoded frame at offset {data.index(0)}; "
            "split the stream on 0x00 before decoding"
        )
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise ProtocolError(f"COBS: code {code} at offset {i} runs past the frame end ({n})")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
