"""Read power samples chunk by chunk, raw, checking HDF5's fletcher32 checksums in numpy.

Reading /power/current_a through HDF5 costs about twice what the bytes cost: every chunk is
read into a buffer of HDF5's, checked there by a loop over 16-bit words, then copied into
the caller's array. Here each stored chunk is read as it is on disk
(``H5Dread_chunk``) straight into its place in the result, and its checksum is verified with
two matrix products over a batch of chunks (``bench/vs_pyjls.py``: reading 60 s of 1 MS/s
back cost about 15 % less CPU). The file is unchanged; this is only a faster way to read it.

The checksum (``H5_checksum_fletcher32``): the chunk's bytes as big-endian 16-bit words
``w_0 .. w_{m-1}``; ``sum1 = Σ w_i`` and ``sum2 = Σ (m - i) w_i``, both folded to 16 bits
modulo 65535 (in ones' complement: a multiple of 65535 may be kept as 65535), stored after
the chunk as the little-endian 32-bit ``sum2 << 16 | sum1``. Since ``65536 ≡ 1 (mod 65535)``,
a big-endian word is 256 times the little-endian word ``v_i`` modulo 65535, so the sums are
taken over the array's own ``uint16`` view. They are exact: the words go to float64, and every
partial sum of the products (rows of ``L`` words times ``[1, j]``) stays below 2**53.

Anything unexpected (another filter, a missing chunk, a checksum that does not match, an
HDF5 error) makes :func:`read_float32_checked` return None; the caller then reads through
HDF5, which checks the chunk its own way and reports a damaged one.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["fletcher32_matches", "read_float32_checked"]

_BATCH = 4
"""Chunks checked together (one conversion and one matrix product for all of them)."""
_ROW_WORDS = 1024
_GEMM_ROWS = 128
"""Rows per matrix product: 128 x 1024 x 2 is at OpenBLAS's single-thread limit (65536 x 4
multiply-adds); larger products start threads whose spinning cost more CPU than they save."""


def _plain_fletcher32_float32(dset: Any) -> bool:
    """Whether ``dset`` is 1-D little-endian float32, chunked, with fletcher32 as its only
    filter (so a stored chunk is the samples followed by the 4-byte checksum)."""
    from h5py import h5z

    if sys.byteorder != "little" or dset.ndim != 1 or not dset.chunks:
        return False
    if dset.dtype != np.dtype("<f4"):
        return False
    dcpl = dset.id.get_create_plist()
    return bool(dcpl.get_nfilters() == 1 and dcpl.get_filter(0)[0] == h5z.FILTER_FLETCHER32)


def fletcher32_matches(words: np.ndarray, stored: np.ndarray,
                       scratch: np.ndarray | None = None) -> np.ndarray:
    """Check the fletcher32 checksums of ``k`` chunks.

    Args:
        words: ``(k, m)`` little-endian ``uint16`` views of the chunks' bytes (``m`` even).
        stored: the ``k`` checksums stored after the chunks (``uint32``).
        scratch: float64 room for ``k * m`` values (allocated when None).

    Returns:
        ``k`` booleans: True where the chunk's sums equal the stored ones modulo 65535.
    """
    k, m = words.shape
    row = math.gcd(m, _ROW_WORDS)
    if scratch is None:
        scratch = np.empty(k * m, dtype=np.float64)
    values = scratch[: k * m].reshape(k * m // row, row)
    np.copyto(values, words.reshape(-1, row), casting="safe")
    weights = np.empty((row, 2), dtype=np.float64)
    weights[:, 0] = 1.0
    weights[:, 1] = np.arange(row, dtype=np.float64)
    products = np.empty((values.shape[0], 2), dtype=np.float64)
    for r in range(0, values.shape[0], _GEMM_ROWS):
        np.matmul(values[r : r + _GEMM_ROWS], weights, out=products[r : r + _GEMM_ROWS])
    sums = products.astype(np.int64).reshape(k, m // row, 2)
    per_row = sums[..., 0]  # Σ v over each row of `row` words
    s1 = per_row.sum(axis=1)
    # Σ i·v_i over the chunk: row b starts at word b·row.
    index_sum = row * (per_row @ np.arange(m // row, dtype=np.int64)) + sums[..., 1].sum(axis=1)
    s2 = (m * (s1 % 65535) - index_sum % 65535) % 65535
    s1 = (256 * (s1 % 65535)) % 65535
    s2 = (256 * s2) % 65535
    stored = stored.astype(np.int64)
    ok: np.ndarray = ((stored & 0xFFFF) % 65535 == s1) & ((stored >> 16) % 65535 == s2)
    return ok


def read_float32_checked(dset: Any, begin: int, end: int) -> np.ndarray | None:
    """Samples ``[begin:end)`` of a float32 fletcher32 dataset, read by raw chunk and checked;
    None when this way does not apply or a chunk does not verify (see module docstring)."""
    if end <= begin or not _plain_fletcher32_float32(dset):
        return None
    chunk = int(dset.chunks[0])
    first, last = begin // chunk, -(-end // chunk)
    n_chunks = last - first
    size = chunk * 4 + 4
    # One sample more than the chunks: each chunk's checksum lands on the first sample of the
    # next chunk (read over it next), the last one on this extra sample.
    out = np.empty(n_chunks * chunk + 1, dtype=np.float32)
    raw = out.view(np.uint8)
    as_u32 = out.view(np.uint32)
    words = out.view("<u2")
    stored = np.empty(n_chunks, dtype=np.uint32)
    scratch = np.empty(min(_BATCH, n_chunks) * 2 * chunk, dtype=np.float64)
    dsid = dset.id
    batch_start = 0
    for i in range(n_chunks):
        at = i * chunk * 4
        try:
            mask, got = dsid.read_direct_chunk(((first + i) * chunk,), out=raw[at : at + size])
        except (OSError, ValueError, KeyError, RuntimeError, TypeError):
            return None
        if mask != 0 or len(got) != size:
            return None
        stored[i] = as_u32[(i + 1) * chunk]
        if i + 1 - batch_start == _BATCH or i + 1 == n_chunks:
            span = words[batch_start * 2 * chunk : (i + 1) * 2 * chunk]
            if not fletcher32_matches(span.reshape(i + 1 - batch_start, 2 * chunk),
                                      stored[batch_start : i + 1], scratch).all():
                return None
            batch_start = i + 1
    lo = begin - first * chunk
    return out[lo : lo + (end - begin)]
