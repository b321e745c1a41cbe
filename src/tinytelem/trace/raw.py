"""Raw link capture: every byte that crossed the link, zstd-compressed, for later re-decoding.

Format (docs/trace-format.md, "Raw capture"): a sequence of zstd frames whose concatenated
content is ``b"TTRAW1\\n"``, one JSON header line, then records
``<d host_s><B direction><I length><length bytes>`` (little-endian). Each flush ends a frame
(``FLUSH_FRAME``, with a content checksum), so a writer killed at any moment leaves a file that
decodes up to its last flush; the reader returns the complete records and says ``truncated``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import zstandard as zstd

import tinytelem
from tinytelem.errors import TraceError
from tinytelem.trace._h5 import translate_error

MAGIC = b"TTRAW1\n"
RECORD_HEADER = struct.Struct("<dBI")
DEVICE_TO_HOST = 0
HOST_TO_DEVICE = 1
LINK_EVENT = 2
"""Link status, not link bytes: data is ``b"down <reason>"`` or ``b"up"`` (replay needs it)."""
_READ_SIZE = 1 << 20


class RawCaptureWriter:
    """Streams link bytes into a zstd-compressed capture file."""

    def __init__(self, path: Path, fh: BinaryIO, flush_interval_s: float, level: int) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self._fh = fh
        cctx = zstd.ZstdCompressor(level=level, write_checksum=True)
        self._writer = cctx.stream_writer(fh, closefd=False)
        self._closed = False
        self._unflushed = False
        self._last_flush = time.monotonic()
        self.records = 0
        """Records written so far."""
        self.bytes_in = 0
        """Payload bytes written so far (before compression)."""

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        header: Mapping[str, Any],
        *,
        flush_interval_s: float = 1.0,
        level: int = 3,
        overwrite: bool = False,
    ) -> RawCaptureWriter:
        """Create a capture; ``header`` (url, ...) is stored as JSON with created/tool_version.

        The magic and header are flushed at once, so even an immediately killed writer leaves
        a file that identifies itself.
        """
        path = Path(path)
        try:
            fh = open(path, "wb" if overwrite else "xb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise translate_error(exc, path, "create raw capture") from exc
        writer = cls(path, fh, flush_interval_s, level)
        full = {
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            "tool_version": tinytelem.__version__,
            **dict(header),
        }
        line = json.dumps(full, default=str, sort_keys=True).encode() + b"\n"
        writer._write_raw(MAGIC + line)
        writer.flush()
        return writer

    def write(self, host_s: float, direction: int, data: bytes | bytearray | memoryview) -> None:
        """Append one chunk of link bytes (0 = device->host, 1 = host->device, 2 = link event)."""
        if self._closed:
            raise TraceError(f"raw capture {self.path} is closed; create a new one")
        if direction not in (DEVICE_TO_HOST, HOST_TO_DEVICE, LINK_EVENT):
            raise TraceError(
                f"direction must be 0 (device->host), 1 (host->device) or 2 (link event): "
                f"{direction}"
            )
        self._write_raw(RECORD_HEADER.pack(host_s, direction, len(data)))
        if len(data):
            self._write_raw(data)
        self.records += 1
        self.bytes_in += len(data)

    def _write_raw(self, data: bytes | bytearray | memoryview) -> None:
        self._unflushed = True
        try:
            self._writer.write(data)
        except OSError as exc:
            raise translate_error(exc, self.path, "write raw capture") from exc

    def flush(self) -> None:
        """End the current zstd frame and hand it to the OS: a crash now keeps everything.

        Nothing written since the last flush -> no empty frame.
        """
        if self._closed:
            raise TraceError(f"raw capture {self.path} is closed; create a new one")
        if self._unflushed:
            try:
                self._writer.flush(zstd.FLUSH_FRAME)
            except OSError as exc:
                raise translate_error(exc, self.path, "flush raw capture") from exc
            self._unflushed = False
        self._last_flush = time.monotonic()

    def maybe_flush(self, now: float | None = None) -> bool:
        """Flush when ``flush_interval_s`` has passed since the last flush; say whether it did."""
        if now is None:
            now = time.monotonic()
        if now - self._last_flush >= self.flush_interval_s:
            self.flush()
            return True
        return False

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._fh.close()

    def __enter__(self) -> RawCaptureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class RawCapture:
    """A decoded capture: header, complete records, and whether the file ended mid-way."""

    header: dict[str, Any]
    records: list[tuple[float, int, bytes]] = field(default_factory=list)
    truncated: bool = False


class RawCaptureReader:
    """Iterates the records of a capture without holding them all; see :func:`read_raw_capture`.

    ``header`` is read on construction; ``truncated`` is final once iteration has finished.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.truncated = False
        self._buf = bytearray()
        self._pos = 0
        self._chunks = self._decompressed()
        while True:
            magic_ok = self._buf.startswith(MAGIC)
            if (len(self._buf) >= len(MAGIC) and not magic_ok) or (
                magic_ok and b"\n" in self._buf[len(MAGIC) :]
            ):
                break
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if not self._buf.startswith(MAGIC):
            raise TraceError(f"{self.path} is not a tinytelem raw capture (bad magic or empty)")
        end = self._buf.find(b"\n", len(MAGIC))
        if end < 0:
            raise TraceError(f"{self.path}: the raw capture header is incomplete; file damaged")
        try:
            header = json.loads(bytes(self._buf[len(MAGIC) : end]))
        except ValueError as exc:
            raise TraceError(f"{self.path}: the raw capture header is not JSON") from exc
        self.header: dict[str, Any] = header if isinstance(header, dict) else {}
        self._pos = end + 1

    def _decompressed(self) -> Iterator[bytes]:
        """Yield decompressed bytes frame after frame; stop (truncated) at damage or EOF."""
        dctx = zstd.ZstdDecompressor()
        try:
            fh = open(self.path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise TraceError(f"cannot open raw capture {self.path}: {exc}") from exc
        with fh:
            dobj = dctx.decompressobj()
            in_frame = False
            while True:
                data = fh.read(_READ_SIZE)
                if not data:
                    break
                while data:
                    try:
                        out = dobj.decompress(data)
                    except zstd.ZstdError:
                        self.truncated = True
                        return
                    in_frame = True
                    if out:
                        yield out
                    if dobj.eof:
                        data = dobj.unused_data
                        dobj = dctx.decompressobj()
                        in_frame = False
                    else:
                        data = b""
            if in_frame:
                self.truncated = True  # the last frame never got its end (writer killed)

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        size = RECORD_HEADER.size
        while True:
            avail = len(self._buf) - self._pos
            if avail >= size:
                host_s, direction, length = RECORD_HEADER.unpack_from(self._buf, self._pos)
                if avail >= size + length:
                    start = self._pos + size
                    self._pos = start + length
                    yield host_s, direction, bytes(self._buf[start : self._pos])
                    continue
            chunk = next(self._chunks, None)
            if chunk is None:
                if len(self._buf) > self._pos:
                    self.truncated = True  # a record cut in half
                return
            del self._buf[: self._pos]
            self._pos = 0
            self._buf += chunk


def read_raw_capture(path: str | os.PathLike[str]) -> RawCapture:
    """Read a whole capture into memory (see :class:`RawCaptureReader` to stream it).

    Raises:
        TraceError: not a capture (bad magic), or the header is missing/damaged.
    """
    reader = RawCaptureReader(path)
    records = list(reader)
    return RawCapture(header=reader.header, records=records, truncated=reader.truncated)
