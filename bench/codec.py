"""Benchmark of the wire protocol v1 codec; prints one JSON object.

Usage::

    python bench/codec.py [--frames 200000] [--repeat 5] [--no-numba]

Measures, as medians over ``--repeat`` runs:

* ``decoder``: FrameDecoder throughput (frames/s, MB/s) on a stream of typical frames (TOKEN,
  SPAN_BEGIN/END, MEMORY mixed) fed in 4 KiB chunks, events drained after every chunk;
* ``encoder``: encode_frame throughput on the same messages;
* ``cobs_decode``: COBS decoding alone, in ns per frame, three ways: the pure-Python
  ``cobs.decode``; a numba kernel called once per frame (what replacing ``cobs.decode`` would
  give); and a numba kernel that decodes every frame of a 4 KiB chunk in one call (the most
  numba could offer, at the price of restructuring the decoder);
* ``rss_mb``: resident memory before and after importing numba and compiling the kernels.

The requirement is 10k events/s per device; the project rule is to use numba only where it
beats Python by a wide margin at our frame sizes, since loading it costs ~100 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from tinytelem.protocol import cobs
from tinytelem.protocol.codec import NEED_DATA, FrameDecoder, encode_frame
from tinytelem.protocol.messages import AnyMessage, Memory, Op, Phase, SpanBegin, SpanEnd, Token

CHUNK = 4096


def typical_messages(n: int, seed: int = 1) -> list[AnyMessage]:
    """A decode-phase mix: per token a few spans, a TOKEN, and a MEMORY sample now and then."""
    rng = random.Random(seed)
    out: list[AnyMessage] = []
    index = 0
    while len(out) < n:
        layer = rng.randrange(8)
        out.append(SpanBegin(layer, Op.ATTENTION))
        out.append(SpanEnd(layer, Op.ATTENTION))
        out.append(Token(index, rng.randrange(512), Phase.DECODE))
        if index % 4 == 0:
            out.append(Memory(*(rng.randrange(1 << 20) for _ in range(5))))
        index += 1
    return out[:n]


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_decoder(stream: bytes, repeat: int) -> dict[str, float]:
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    counted = []

    def run() -> None:
        dec = FrameDecoder()
        n = 0
        for chunk in chunks:
            dec.receive_data(chunk)
            while dec.next_event() is not NEED_DATA:
                n += 1
        counted.append(n)

    dt = median_time(run, repeat)
    n = counted[-1]
    return {"frames": n, "seconds": dt, "frames_per_s": n / dt, "mb_per_s": len(stream) / dt / 1e6}


def bench_encoder(msgs: list[AnyMessage], repeat: int) -> dict[str, float]:
    def run() -> None:
        for i, m in enumerate(msgs):
            encode_frame(m, i, i)

    dt = median_time(run, repeat)
    return {"frames_per_s": len(msgs) / dt}


def bench_cobs(stream: bytes, repeat: int, use_numba: bool) -> dict[str, Any]:
    raws = [r for r in stream.split(b"\x00") if r]
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    n = len(raws)
    result: dict[str, Any] = {"frames": n, "mean_encoded_bytes": sum(map(len, raws)) / n}

    def py() -> None:
        for r in raws:
            cobs.decode(r)

    result["python_ns_per_frame"] = median_time(py, repeat) / n * 1e9
    rss0 = psutil.Process().memory_info().rss
    result["rss_mb"] = {"before_numba": rss0 / 1e6}
    if not use_numba:
        return result
    kernels = _numba_kernels()
    import numpy as np

    one, batch = kernels
    # Check both kernels against the Python decoder before timing them.
    for r in raws[:50]:
        out = np.empty(len(r), np.uint8)
        k = one(np.frombuffer(r, np.uint8), out)
        assert bytes(out[:k]) == cobs.decode(r)

    def nb_one() -> None:
        for r in raws:
            out = np.empty(len(r), np.uint8)
            k = one(np.frombuffer(r, np.uint8), out)
            out[:k].tobytes()

    def nb_batch() -> None:
        for c in chunks:
            src = np.frombuffer(c, np.uint8)
            out = np.empty(len(c), np.uint8)
            ends = np.empty(len(c) // 2 + 1, np.int64)
            m = batch(src, out, ends)
            # The decoder would then slice each frame out as bytes for CRC and struct.
            buf = out.tobytes()
            start = 0
            for e in ends[:m].tolist():
                buf[start:e]
                start = e

    result["numba_per_frame_ns_per_frame"] = median_time(nb_one, repeat) / n * 1e9
    result["numba_batch_ns_per_frame"] = median_time(nb_batch, repeat) / n * 1e9
    result["rss_mb"]["after_numba"] = psutil.Process().memory_info().rss / 1e6
    result["speedup_per_frame"] = (
        result["python_ns_per_frame"] / result["numba_per_frame_ns_per_frame"]
    )
    result["speedup_batch"] = result["python_ns_per_frame"] / result["numba_batch_ns_per_frame"]
    return result


def _numba_kernels() -> tuple[Callable[..., int], Callable[..., int]]:
    """Compile the two numba COBS decoders (imported lazily: numba costs ~100 MB RSS)."""
    import numba
    import numpy as np

    @numba.njit(cache=False, nogil=True)
    def decode_one(src: Any, dst: Any) -> int:
        n = src.size
        i = 0
        o = 0
        while i < n:
            code = src[i]
            if code == 0:
                return -1
            end = i + code
            if end > n:
                return -1
            for j in range(i + 1, end):
                b = src[j]
                if b == 0:
                    return -1
                dst[o] = b
                o += 1
            i = end
            if code != 0xFF and i < n:
                dst[o] = 0
                o += 1
        return o

    @numba.njit(cache=False, nogil=True)
    def decode_batch(src: Any, dst: Any, ends: Any) -> int:
        """Decode every delimited frame of src into dst back to back; ends[k] = end offset."""
        n = src.size
        i = 0
        o = 0
        m = 0
        while i < n:
            stop = i
            while stop < n and src[stop] != 0:
                stop += 1
            if stop == n:
                break  # partial frame: a real decoder keeps it for the next chunk
            while i < stop:
                code = src[i]
                end = i + code
                if end > stop:
                    break  # malformed: a real decoder reports and skips it
                for j in range(i + 1, end):
                    dst[o] = src[j]
                    o += 1
                i = end
                if code != 0xFF and i < stop:
                    dst[o] = 0
                    o += 1
            ends[m] = o
            m += 1
            i = stop + 1
        return m

    probe = np.frombuffer(b"\x03\x11\x22\x02\x33", np.uint8)
    decode_one(probe, np.empty(8, np.uint8))
    decode_batch(
        np.frombuffer(b"\x03\x11\x22\x02\x33\x00", np.uint8),
        np.empty(8, np.uint8),
        np.empty(4, np.int64),
    )
    return decode_one, decode_batch


def main() -> int:
    parser = argparse.ArgumentParser(description="wire protocol v1 codec benchmark")
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-numba", action="store_true", help="skip the numba comparison")
    args = parser.parse_args()
    msgs = typical_messages(args.frames)
    stream = b"".join(encode_frame(m, i, 1000 * i) for i, m in enumerate(msgs))
    report = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "stream": {
            "frames": len(msgs),
            "bytes": len(stream),
            "chunk": CHUNK,
            "mean_frame_bytes": len(stream) / len(msgs),
        },
        "decoder": bench_decoder(stream, args.repeat),
        "encoder": bench_encoder(msgs, args.repeat),
        "cobs_decode": bench_cobs(stream, args.repeat, not args.no_numba),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
