"""GGML block quantizers in numpy: Q4_0, Q8_0 (bit-exact with ggml) and Q2_K, Q3_K, Q4_K.

Why our own: the firmware and the ``.gguf`` writer need these packings, gguf-py quantizes only
the legacy types (and not the K-quants), and the benchmark compares both in one run.

Block layouts (little-endian, ``QK_K`` = 256 weights per super-block):

* **Q8_0** (34 B / 32 w): f16 ``d``, 32 x int8. ``d = max|x| / 127``, ``q = roundf(x / d)``
  (half away from zero, like C's ``roundf``).
* **Q4_0** (18 B / 32 w): f16 ``d``, 16 bytes; byte ``j`` holds weight ``j`` in the low nibble
  and weight ``j + 16`` in the high one. ``d = x[argmax|x|] / -8`` so the largest magnitude maps
  to -8 exactly, ``q = min(15, trunc(x / d + 8.5))``.
* **Q2_K** (84 B / 256 w): 16 scale bytes (low nibble scale, high nibble min, one per 16
  weights), 64 bytes of 2-bit values, f16 ``d``, f16 ``dmin``; ``y = d*sc*q - dmin*m``. Weight
  ``e = 128h + 32s + j`` sits in bits ``2s`` of byte ``32h + j``.
* **Q3_K** (110 B / 256 w): 32-byte high-bit mask, 64 bytes of low 2 bits (as Q2_K), 12 bytes of
  sixteen 6-bit scales (biased by 32), f16 ``d``; ``y = d*(sc-32)*(q-4)`` where ``q`` is 3 bits and
  its high bit is bit ``e // 32`` of mask byte ``e % 32``.
* **Q4_K** (144 B / 256 w): f16 ``d``, f16 ``dmin``, 12 bytes of eight 6-bit scales and eight 6-bit
  mins, 128 bytes of nibbles (weight ``e = 64c + 32h + j`` in nibble ``h`` of byte ``32c + j``).

K-quant scales are fitted per sub-block with a small search over candidate scales followed by a
least-squares refit (the idea of ggml's ``make_qkx2_quants``, written from its description); the
results are not byte-identical to llama.cpp's but dequantize with ``gguf.quants`` to errors
bounded in ``tests/models/test_kquants.py``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError

__all__ = [
    "BLOCK",
    "QK_K",
    "SUPPORTED",
    "dequantize",
    "quantize",
    "row_bytes",
]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
QK_K: Final = 256

#: type -> (weights per block, bytes per block)
BLOCK: Final[dict[str, tuple[int, int]]] = {
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q2_k": (QK_K, 84),
    "q3_k": (QK_K, 110),
    "q4_k": (QK_K, 144),
}
SUPPORTED: Final = tuple(BLOCK)


def row_bytes(qtype: str, n: int) -> int:
    """Bytes of ``n`` weights stored as ``qtype`` (``n`` must be a multiple of the block)."""
    block, size = BLOCK[qtype]
    return n // block * size


def _f16_bytes(d: F32) -> U8:
    out: U8 = d.astype(np.float16).reshape(-1, 1).view(np.uint8)
    return out


def _f16(raw: U8) -> F32:
    out: F32 = np.ascontiguousarray(raw).view(np.float16).astype(np.float32)
    return out


def _roundf(x: F32) -> F32:
    """C's roundf: halves away from zero (numpy's round goes to even)."""
    a = np.abs(x)
    whole = np.floor(a)
    # floor(a + 0.5) would round 0.49999997 up in float32; comparing the fraction cannot.
    out: F32 = (np.sign(x) * (whole + np.floor(np.float32(2.0) * (a - whole)))).astype(np.float32)
    return out


def _safe_inv(d: F32) -> F32:
    with np.errstate(divide="ignore"):
        out: F32 = np.where(d == 0, np.float32(0.0), np.float32(1.0) / d).astype(np.float32)
    return out


# ---------------------------------------------------------------- legacy types (bit-exact)

def _q8_0(b: F32) -> U8:
    d = (np.abs(b).max(axis=1, keepdims=True) / np.float32(127.0)).astype(np.float32)
    q = _roundf(b * _safe_inv(d)).astype(np.int8).view(np.uint8)
    return np.concatenate([_f16_bytes(d), q], axis=1)


def _dq8_0(b: U8) -> F32:
    out: F32 = b[:, 2:].view(np.int8).astype(np.float32) * _f16(b[:, :2])
    return out


def _q4_0(b: F32) -> U8:
    idx = np.abs(b).argmax(axis=1)[:, None]
    d = (np.take_along_axis(b, idx, axis=1) / np.float32(-8.0)).astype(np.float32)
    v = np.trunc(b * _safe_inv(d) + np.float32(8.5)).astype(np.float32)
    q = np.minimum(v, np.float32(15.0)).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return np.concatenate([_f16_bytes(d), packed], axis=1)


def _dq4_0(b: U8) -> F32:
    qs = b[:, 2:]
    q = np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=1).astype(np.float32)
    out: F32 = (q - np.float32(8.0)) * _f16(b[:, :2])
    return out


# ---------------------------------------------------------------- K-quant scale fitting

def _fit_asym(x: F32, nmax: int, steps: int = 16) -> tuple[F32, F32]:
    """Per row of ``x``: (scale, min) with ``x ~ scale*q - min``, q in 0..nmax, min >= 0.

    Candidate inverse scales around ``nmax / (max - min)`` are tried; each assignment is refit
    by least squares and the lowest squared error kept.
    """
    lo = np.minimum(x.min(axis=1), np.float32(0.0))
    hi = x.max(axis=1)
    span = hi - lo
    flat = span <= 0
    span = np.where(flat, np.float32(1.0), span)
    best_s = span / np.float32(nmax)
    best_m = -lo
    q0 = np.clip(np.rint((x - lo[:, None]) / best_s[:, None]), 0, nmax)
    best_err = ((best_s[:, None] * q0 - best_m[:, None] - x) ** 2).sum(axis=1)
    n = np.float32(x.shape[1])
    for k in range(-steps // 2, steps // 2 + 1):
        iscale = (np.float32(nmax) + np.float32(0.1 * k)) / span
        q = np.clip(np.rint((x - lo[:, None]) * iscale[:, None]), 0, nmax).astype(np.float32)
        sq, sqq = q.sum(axis=1), (q * q).sum(axis=1)
        sx, sqx = x.sum(axis=1), (q * x).sum(axis=1)
        det = n * sqq - sq * sq
        ok = det > 0
        det = np.where(ok, det, np.float32(1.0))
        s = (n * sqx - sq * sx) / det
        b = (sqq * sx - sq * sqx) / det  # x ~ s*q + b
        b = np.minimum(b, np.float32(0.0))
        s = np.where(b == 0, sqx / np.where(sqq > 0, sqq, 1), s)  # refit s with b pinned to 0
        err = ((s[:, None] * q + b[:, None] - x) ** 2).sum(axis=1)
        better = ok & (s > 0) & (err < best_err)
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, -b, best_m)
    best_s = np.where(flat, np.float32(0.0), best_s)
    best_m = np.where(flat, np.maximum(-x[:, 0], np.float32(0.0)), best_m)
    return best_s.astype(np.float32), best_m.astype(np.float32)


def _quant_6bit(v: F32, levels: int) -> tuple[F32, U8]:
    """Super-block scale and per-sub-block integer codes 0..levels for non-negative v (nb, k)."""
    top = v.max(axis=1)
    d = (top / np.float32(levels)).astype(np.float16).astype(np.float32)
    codes = np.clip(np.rint(v * _safe_inv(d)[:, None]), 0, levels).astype(np.uint8)
    return d, codes


def _requant_asym(x: F32, sc: F32, mn: F32, nmax: int) -> U8:
    """Integer codes for x (nb, nsub, sub) given effective scales and mins (nb, nsub)."""
    inv = _safe_inv(sc)[..., None]
    q = np.clip(np.rint((x + mn[..., None]) * inv), 0, nmax)
    out: U8 = q.astype(np.uint8)
    return out


def _pack_2bit(q: U8) -> U8:
    """(nb, 256) 2-bit codes -> (nb, 64): weight 128h + 32s + j in bits 2s of byte 32h + j."""
    q = q.reshape(-1, 2, 4, 32)
    out = np.zeros((q.shape[0], 2, 32), dtype=np.uint8)
    for s in range(4):
        out |= q[:, :, s, :] << np.uint8(2 * s)
    return out.reshape(-1, 64)


def _unpack_2bit(b: U8) -> U8:
    b = b.reshape(-1, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    out: U8 = ((b >> shifts) & np.uint8(3)).reshape(-1, QK_K)
    return out


# ---------------------------------------------------------------- Q2_K

def _q2_k(x: F32) -> U8:
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    s, m = _fit_asym(sub, 3)
    d, ls = _quant_6bit(s.reshape(nb, 16), 15)
    dmin, lm = _quant_6bit(m.reshape(nb, 16), 15)
    sc = d[:, None] * ls.astype(np.float32)
    mn = dmin[:, None] * lm.astype(np.float32)
    q = _requant_asym(x.reshape(nb, 16, 16), sc, mn, 3).reshape(nb, QK_K)
    scales = ls | (lm << np.uint8(4))
    return np.concatenate([scales, _pack_2bit(q), _f16_bytes(d), _f16_bytes(dmin)], axis=1)


def _dq2_k(b: U8) -> F32:
    nb = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = d * (scales & np.uint8(15)).astype(np.float32)
    ml = dmin * (scales >> np.uint8(4)).astype(np.float32)
    q = _unpack_2bit(qs).reshape(nb, 16, 16).astype(np.float32)
    out: F32 = (dl[..., None] * q - ml[..., None]).reshape(nb, QK_K)
    return out


# ---------------------------------------------------------------- Q3_K

def _q3_k(x: F32) -> U8:
    nb = x.shape[0]
    sub = x.reshape(nb, 16, 16)
    idx = np.abs(sub).argmax(axis=2)[..., None]
    s = (np.take_along_axis(sub, idx, axis=2)[..., 0] / np.float32(-4.0)).astype(np.float32)
    jdx = np.abs(s).argmax(axis=1)[:, None]
    top = np.take_along_axis(s, jdx, axis=1)[:, 0]
    d = (top / np.float32(-32.0)).astype(np.float16).astype(np.float32)
    ls = np.clip(np.rint(s * _safe_inv(d)[:, None]), -32, 31)
    eff = d[:, None] * ls.astype(np.float32)
    q = np.clip(np.rint(sub * _safe_inv(eff)[..., None]), -4, 3).astype(np.int16) + 4
    u = q.astype(np.uint8).reshape(nb, QK_K)
    hmask = np.zeros((nb, 32), dtype=np.uint8)
    hi = (u >> np.uint8(2)).reshape(nb, 8, 32)
    for bit in range(8):
        hmask |= hi[:, bit, :] << np.uint8(bit)
    codes = (ls + 32).astype(np.uint8)  # 0..63
    sc = np.zeros((nb, 12), dtype=np.uint8)
    sc[:, :8] = (codes[:, :8] & np.uint8(15)) | ((codes[:, 8:] & np.uint8(15)) << np.uint8(4))
    high = codes >> np.uint8(4)  # 2 bits each
    for i in range(16):
        sc[:, 8 + i % 4] |= high[:, i] << np.uint8(2 * (i // 4))
    qs = _pack_2bit(u & np.uint8(3))
    return np.concatenate([hmask, qs, sc, _f16_bytes(d)], axis=1)


def _dq3_k(b: U8) -> F32:
    nb = b.shape[0]
    hmask, qs, sc, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    idx = np.arange(16)
    low = np.where(idx < 8, sc[:, idx % 8] & np.uint8(15), sc[:, idx % 8] >> np.uint8(4))
    high = (sc[:, 8 + idx % 4] >> (2 * (idx // 4)).astype(np.uint8)) & np.uint8(3)
    scales = (low | (high << np.uint8(4))).astype(np.float32) - np.float32(32.0)
    ql = _unpack_2bit(qs).astype(np.int16)
    bits = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    hb = ((hmask.reshape(nb, 1, 32) >> bits) & np.uint8(1)).reshape(nb, QK_K).astype(np.int16)
    q = (ql + 4 * hb - 4).astype(np.float32).reshape(nb, 16, 16)
    out: F32 = ((d * scales)[..., None] * q).reshape(nb, QK_K)
    return out


# ---------------------------------------------------------------- Q4_K

def _pack_k_scales(ls: U8, lm: U8) -> U8:
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> np.uint8(4)) << np.uint8(6))
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> np.uint8(4)) << np.uint8(6))
    out[:, 8:12] = (ls[:, 4:] & np.uint8(15)) | ((lm[:, 4:] & np.uint8(15)) << np.uint8(4))
    return out


def _unpack_k_scales(b: U8) -> tuple[U8, U8]:
    d, m, md = b[:, 0:4], b[:, 4:8], b[:, 8:12]
    six = np.uint8(63)
    sc = np.concatenate([d & six, (md & np.uint8(15)) | ((d >> np.uint8(2)) & np.uint8(48))], 1)
    mn = np.concatenate([m & six, (md >> np.uint8(4)) | ((m >> np.uint8(2)) & np.uint8(48))], 1)
    return sc, mn


def _q4_k(x: F32) -> U8:
    nb = x.shape[0]
    s, m = _fit_asym(x.reshape(nb * 8, 32), 15)
    d, ls = _quant_6bit(s.reshape(nb, 8), 63)
    dmin, lm = _quant_6bit(m.reshape(nb, 8), 63)
    sc = d[:, None] * ls.astype(np.float32)
    mn = dmin[:, None] * lm.astype(np.float32)
    q = _requant_asym(x.reshape(nb, 8, 32), sc, mn, 15).reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << np.uint8(4))).reshape(nb, 128)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(ls, lm), qs], axis=1)


def _dq4_k(b: U8) -> F32:
    nb = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _unpack_k_scales(b[:, 4:16])
    qs = b[:, 16:].reshape(nb, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & np.uint8(15)).reshape(nb, 8, 32).astype(np.float32)
    out: F32 = ((d * sc.astype(np.float32))[..., None] * q
                - (dmin * mn.astype(np.float32))[..., None]).reshape(nb, QK_K)
    return out


_CHUNK = 2048  # blocks per vectorised step
_QUANT = {"q8_0": _q8_0, "q4_0": _q4_0, "q2_k": _q2_k, "q3_k": _q3_k, "q4_k": _q4_k}
_DEQUANT = {"q8_0": _dq8_0, "q4_0": _dq4_0, "q2_k": _dq2_k, "q3_k": _dq3_k, "q4_k": _dq4_k}


def _check(qtype: str, n: int) -> tuple[int, int]:
    if qtype not in BLOCK:
        raise ModelError(f"quantization type {qtype!r} is not one of {', '.join(SUPPORTED)}")
    block, size = BLOCK[qtype]
    if n % block:
        raise ModelError(f"{qtype} packs rows of a multiple of {block} weights; this row has {n}. "
                         "Use a type with a smaller block (q8_0/q4_0 take 32) or keep it float")
    return block, size


def quantize(x: npt.ArrayLike, qtype: str) -> U8:
    """Pack a float tensor: rows along the last axis; returns uint8 (..., row_bytes).

    Raises:
        ModelError: For an unknown type or a row length that is not a multiple of the block.
    """
    a = np.ascontiguousarray(x, dtype=np.float32)
    block, size = _check(qtype, a.shape[-1])
    blocks = a.reshape(-1, block)
    fn = _QUANT[qtype]
    # Chunks keep the temporaries in cache: 4x faster for Q8_0 on a 1M-weight tensor.
    packed = np.concatenate([fn(blocks[i:i + _CHUNK]) for i in range(0, len(blocks), _CHUNK)]
                            ) if len(blocks) else np.zeros((0, size), np.uint8)
    return np.ascontiguousarray(packed).reshape(*a.shape[:-1], a.shape[-1] // block * size)


def dequantize(raw: npt.ArrayLike, qtype: str) -> F32:
    """Unpack what :func:`quantize` (or ggml) produced: uint8 (..., row_bytes) -> float32.

    Raises:
        ModelError: For an unknown type or a byte count that is not whole blocks.
    """
    b = np.ascontiguousarray(raw, dtype=np.uint8)
    if qtype not in BLOCK:
        raise ModelError(f"quantization type {qtype!r} is not one of {', '.join(SUPPORTED)}")
    block, size = BLOCK[qtype]
    if b.shape[-1] % size:
        raise ModelError(f"{qtype} rows are whole {size}-byte blocks; got {b.shape[-1]} bytes")
    out = _DEQUANT[qtype](b.reshape(-1, size))
    return out.reshape(*b.shape[:-1], b.shape[-1] // size * block)
