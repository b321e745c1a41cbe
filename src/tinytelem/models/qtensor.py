"""One matrix, group-wise quantized (2, 3, 4, 8 bits), and the bit packing the firmware reads.

A weight matrix of shape (rows, cols) -- (out, in), as llama2.c's row-major matmul stores it --
is split along the input dimension into groups of ``group_size`` consecutive columns. Each group
gets its own scale (and, when asymmetric, an integer zero point):

* **symmetric**: levels ``q`` in ``-2^(b-1) .. 2^(b-1)-1``, ``w ~= scale * q``. Round-to-nearest
  maps the group's largest-magnitude weight ``m`` onto ``-2^(b-1)`` (``scale = m / -2^(b-1)``,
  so the scale may be negative), which uses every level -- at 2 bits that is 4 levels, not 3.
* **asymmetric**: levels ``q`` in ``0 .. 2^b-1`` and a zero point ``z`` in the same range,
  ``w ~= scale * (q - z)``. The range is ``[min(w, 0), max(w, 0)]`` so zero stays exact.

Scales are stored as IEEE float16 (half the overhead of float32: 0.5 bit/weight at group 32;
every float16 converts exactly to float32, so the firmware's widening is bit-exact). The
quantizer rounds each scale to float16 *before* choosing levels, so the levels fit the scale
the firmware will actually use. Zero points are uint8.

``method="search"`` tries a grid of clipping ratios per group (both the ``-2^(b-1)`` and the
``2^(b-1)-1`` mapping when symmetric), keeps the one with the least squared error, then refits
the scale by least squares for the chosen levels and keeps that when it is better. Everything
is vectorised numpy over all groups at once; numba did not pay (see ``bench/quant.py``).

Bit packing (``pack_levels``), row-major over the whole matrix; because ``cols`` is a multiple
of 16 every row, and every group, starts on a byte boundary:

* fields are unsigned: asymmetric levels as they are, symmetric 2/3/4-bit levels in offset
  binary (``q + 2^(b-1)``; the C kernel subtracts 4, 2 or 8 -- like llama.cpp's Q4_0);
* 8 bits: one byte per level, int8 two's complement (symmetric) or uint8 (asymmetric);
* 4 bits: two per byte, element ``2i`` in the low nibble, ``2i+1`` in the high nibble;
* 2 bits: four per byte, element ``4i+j`` in bits ``2j .. 2j+1`` (lowest bits first);
* 3 bits: eight per three bytes: ``w = b0 | b1 << 8 | b2 << 16`` (little-endian 24-bit word),
  element ``8i+j`` is ``(w >> 3j) & 7`` -- one 32-bit load-and-mask per value, no straddling
  logic in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError

__all__ = [
    "BITS",
    "GROUP_SIZES",
    "Method",
    "QuantTensor",
    "pack_levels",
    "packed_size",
    "quantize_matrix",
    "unpack_levels",
]

F32 = npt.NDArray[np.float32]
Method = Literal["rtn", "search"]

BITS = (2, 3, 4, 8)
"""Bit widths of the group-wise quantizer."""
GROUP_SIZES = (16, 256)
"""Inclusive range of group sizes; a group size must also be a multiple of 8 (3-bit packing)."""
_F16_MAX = 65504.0
_SEARCH_RATIOS = np.linspace(1.0, 0.5, 16, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class QuantTensor:
    """One group-wise quantized matrix.

    Attributes:
        bits: 2, 3, 4 or 8.
        group_size: Consecutive input columns sharing one scale.
        symmetric: True for ``scale * q``, False for ``scale * (q - zero)``.
        shape: (rows, cols) = (out, in).
        q: Levels, shape ``shape``: int8 in ``-2^(b-1)..2^(b-1)-1`` when symmetric, else uint8 in
            ``0..2^b-1``.
        scales: float16, shape (rows, cols // group_size); may be negative when symmetric.
        zeros: uint8 zero points, same shape as scales; None when symmetric.
    """

    bits: int
    group_size: int
    symmetric: bool
    shape: tuple[int, int]
    q: npt.NDArray[np.int8] | npt.NDArray[np.uint8]
    scales: npt.NDArray[np.float16]
    zeros: npt.NDArray[np.uint8] | None = None

    @property
    def n_groups(self) -> int:
        """Groups per row."""
        return self.shape[1] // self.group_size

    def levels(self) -> npt.NDArray[np.int32]:
        """Signed integer weight per element: ``q`` (symmetric) or ``q - zero`` (asymmetric).

        This is the integer the firmware multiplies activations by.
        """
        q = self.q.astype(np.int32)
        if self.symmetric:
            return q
        assert self.zeros is not None
        z = np.repeat(self.zeros.astype(np.int32), self.group_size, axis=1)
        out: npt.NDArray[np.int32] = q - z
        return out

    def dequantize(self) -> F32:
        """float32 weights: ``float32(scale) * float32(level)`` element by element."""
        s = np.repeat(self.scales.astype(np.float32), self.group_size, axis=1)
        out: F32 = s * self.levels().astype(np.float32)
        return out

    def pack(self) -> bytes:
        """The levels bit-packed as the firmware reads them (see the module docstring)."""
        return pack_levels(self.q, self.bits, self.symmetric)

    def nbytes(self) -> int:
        """Bytes of packed levels + scales + zero points."""
        n = self.shape[0] * self.n_groups
        return packed_size(self.shape[0] * self.shape[1], self.bits) + 2 * n + (
            0 if self.symmetric else n)

    @classmethod
    def unpack(cls, data: bytes, bits: int, group_size: int, symmetric: bool,
               shape: tuple[int, int], scales: npt.NDArray[np.float16],
               zeros: npt.NDArray[np.uint8] | None = None) -> QuantTensor:
        """Rebuild a tensor from packed levels (the inverse of :meth:`pack`).

        Raises:
            ModelError: When the sizes do not agree with ``shape`` / ``group_size``.
        """
        _check_layout(bits, group_size, shape)
        rows, cols = shape
        q = unpack_levels(data, bits, rows * cols, symmetric).reshape(shape)
        gshape = (rows, cols // group_size)
        scales = np.asarray(scales, dtype=np.float16).reshape(gshape)
        if symmetric:
            zeros = None
        elif zeros is None:
            raise ModelError("an asymmetric tensor needs its zero points")
        else:
            zeros = np.asarray(zeros, dtype=np.uint8).reshape(gshape)
        return cls(bits, group_size, symmetric, shape, q, scales, zeros)


def _check_layout(bits: int, group_size: int, shape: tuple[int, ...]) -> None:
    if bits not in BITS:
        raise ModelError(f"{bits}-bit quantization is not supported; use one of {BITS}")
    lo, hi = GROUP_SIZES
    if not lo <= group_size <= hi or group_size % 8:
        raise ModelError(f"group size {group_size} is invalid; use a multiple of 8 in {lo}..{hi} "
                         "(16, 32, 64, 128 or 256 are typical)")
    if len(shape) != 2:
        raise ModelError(f"group-wise quantization needs a 2-D matrix, got shape {shape}")
    if shape[1] % group_size:
        raise ModelError(f"matrix with {shape[1]} columns cannot be split into groups of "
                         f"{group_size}; pick a group size that divides {shape[1]}")


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` levels take when packed (count a multiple of 8)."""
    return count * bits // 8


def pack_levels(q: npt.NDArray[np.integer], bits: int, symmetric: bool) -> bytes:
    """Bit-pack levels row-major (layout in the module docstring).

    Raises:
        ModelError: For an unsupported width or a count that is not a multiple of 8.
    """
    flat = np.asarray(q).reshape(-1)
    if bits not in BITS:
        raise ModelError(f"cannot pack {bits}-bit levels; use one of {BITS}")
    if flat.size % 8:
        raise ModelError(f"{flat.size} levels do not fill whole bytes; need a multiple of 8")
    if bits == 8:
        return flat.astype(np.int8 if symmetric else np.uint8).tobytes()
    u = flat.astype(np.int32) + ((1 << (bits - 1)) if symmetric else 0)
    if u.size and (u.min() < 0 or u.max() >= 1 << bits):
        raise ModelError(f"levels out of range for {bits} bits; the tensor is corrupt")
    u32 = u.astype(np.uint32)
    if bits == 4:
        pairs = u32.reshape(-1, 2)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).astype(np.uint8).tobytes()
    if bits == 2:
        quads = u32.reshape(-1, 4)
        out = quads[:, 0] | (quads[:, 1] << 2) | (quads[:, 2] << 4) | (quads[:, 3] << 6)
        return out.astype(np.uint8).tobytes()
    octs = u32.reshape(-1, 8)
    word = np.zeros(octs.shape[0], dtype=np.uint32)
    for j in range(8):
        word |= octs[:, j] << np.uint32(3 * j)
    trio = np.stack([word & 0xFF, (word >> 8) & 0xFF, word >> 16], axis=1)
    return trio.astype(np.uint8).tobytes()


def unpack_levels(data: bytes, bits: int, count: int, symmetric: bool
                  ) -> npt.NDArray[np.int8] | npt.NDArray[np.uint8]:
    """Inverse of :func:`pack_levels`: int8 levels (symmetric) or uint8 (asymmetric).

    Raises:
        ModelError: When ``data`` is not exactly ``packed_size(count, bits)`` bytes.
    """
    if bits not in BITS:
        raise ModelError(f"cannot unpack {bits}-bit levels; use one of {BITS}")
    expected = packed_size(count, bits)
    if count % 8 or len(data) != expected:
        raise ModelError(f"packed {bits}-bit data is {len(data)} bytes; {count} levels need "
                         f"{expected}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        out8: npt.NDArray[np.int8] | npt.NDArray[np.uint8] = (
            raw.view(np.int8).copy() if symmetric else raw.copy())
        return out8
    if bits == 4:
        u = np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)
    elif bits == 2:
        u = np.stack([(raw >> s) & 0x03 for s in (0, 2, 4, 6)], axis=1).reshape(-1)
    else:
        b = raw.reshape(-1, 3).astype(np.uint32)
        word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        u = np.stack([(word >> np.uint32(3 * j)) & 7 for j in range(8)], axis=1).reshape(-1)
    if symmetric:
        return (u.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)
    return u.astype(np.uint8)


def _f16(x: F32) -> F32:
    """Round to float16 and back: the scale the firmware will see."""
    if x.size and float(np.max(np.abs(x))) > _F16_MAX:
        raise ModelError("a group scale exceeds the float16 range (65504); the weights are "
                         "absurdly large -- check the checkpoint")
    out: F32 = x.astype(np.float16).astype(np.float32)
    return out


def _levels_sym(wg: F32, d: F32, qmin: int, qmax: int) -> tuple[F32, F32]:
    """Levels (as float32) and squared error per group for scales ``d`` (already float16)."""
    safe = np.where(d == 0, np.float32(1.0), d)
    q = np.clip(np.rint(wg / safe[..., None]), qmin, qmax)
    q = np.where(d[..., None] == 0, np.float32(0.0), q).astype(np.float32)
    err = np.square(wg - d[..., None] * q).sum(axis=-1, dtype=np.float32)
    return q, err


def _levels_asym(wg: F32, lo: F32, hi: F32, qmax: int) -> tuple[F32, F32, F32, F32]:
    """Scale, zero point, levels and error per group for the range [lo, hi] (lo <= 0 <= hi)."""
    s = _f16((hi - lo) / np.float32(qmax))
    safe = np.where(s == 0, np.float32(1.0), s)
    z = np.clip(np.rint(-lo / safe), 0, qmax).astype(np.float32)
    q = np.clip(np.rint(wg / safe[..., None]) + z[..., None], 0, qmax).astype(np.float32)
    err = np.square(wg - s[..., None] * (q - z[..., None])).sum(axis=-1, dtype=np.float32)
    return s, z, q, err


def _least_squares(wg: F32, lv: F32) -> F32:
    """Scale minimising ||w - s*lv||^2 for fixed levels: <w, lv> / <lv, lv>."""
    num = (wg * lv).sum(axis=-1, dtype=np.float32)
    den = (lv * lv).sum(axis=-1, dtype=np.float32)
    out: F32 = np.where(den == 0, np.float32(0.0), num / np.where(den == 0, 1, den))
    return out.astype(np.float32)


def _quantize_sym(wg: F32, bits: int, method: Method) -> tuple[F32, F32]:
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    idx = np.abs(wg).argmax(axis=-1)[..., None]
    m = np.take_along_axis(wg, idx, axis=-1)[..., 0]
    d = _f16(m / np.float32(qmin))
    q, err = _levels_sym(wg, d, qmin, qmax)
    if method == "rtn":
        return d, q
    for ratio in _SEARCH_RATIOS:
        for level in (qmin, qmax):
            cand = _f16(m * ratio / np.float32(level))
            cq, cerr = _levels_sym(wg, cand, qmin, qmax)
            better = cerr < err
            d, err = np.where(better, cand, d), np.where(better, cerr, err)
            q = np.where(better[..., None], cq, q)
    cand = _f16(_least_squares(wg, q))
    cq, cerr = _levels_sym(wg, cand, qmin, qmax)
    better = cerr < err
    return np.where(better, cand, d), np.where(better[..., None], cq, q)


def _quantize_asym(wg: F32, bits: int, method: Method) -> tuple[F32, F32, F32]:
    qmax = (1 << bits) - 1
    lo = np.minimum(wg.min(axis=-1), np.float32(0.0))
    hi = np.maximum(wg.max(axis=-1), np.float32(0.0))
    s, z, q, err = _levels_asym(wg, lo, hi, qmax)
    if method == "rtn":
        return s, z, q
    for ratio in _SEARCH_RATIOS[1:]:
        cs, cz, cq, cerr = _levels_asym(wg, lo * ratio, hi * ratio, qmax)
        better = cerr < err
        s, z, err = np.where(better, cs, s), np.where(better, cz, z), np.where(better, cerr, err)
        q = np.where(better[..., None], cq, q)
    cand = _f16(_least_squares(wg, q - z[..., None]))
    cerr = np.square(wg - cand[..., None] * (q - z[..., None])).sum(axis=-1, dtype=np.float32)
    better = cerr < err
    return np.where(better, cand, s), z, q


def quantize_matrix(w: npt.ArrayLike, bits: int, group_size: int, symmetric: bool = True,
                    method: Method = "rtn") -> QuantTensor:
    """Quantize one (rows, cols) matrix group-wise along its columns.

    Args:
        w: The float matrix (out, in).
        bits: 2, 3, 4 or 8.
        group_size: Multiple of 8 in 16..256 that divides ``cols``.
        symmetric: Signed levels with one scale, or unsigned levels with scale and zero point.
        method: ``"rtn"`` round-to-nearest, ``"search"`` error-minimising clipping search.

    Raises:
        ModelError: For an unsupported width, group size, shape, or non-finite weights.
    """
    arr = np.asarray(w, dtype=np.float32)
    shape = tuple(int(n) for n in arr.shape)
    _check_layout(bits, group_size, shape)
    if method not in ("rtn", "search"):
        raise ModelError(f"unknown quantization method {method!r}; use 'rtn' or 'search'")
    if not np.isfinite(arr).all():
        raise ModelError("the matrix holds NaN or infinite weights; the checkpoint is corrupt")
    rows, cols = shape
    wg = arr.reshape(rows, cols // group_size, group_size)
    if symmetric:
        d, q = _quantize_sym(wg, bits, method)
        return QuantTensor(bits, group_size, True, (rows, cols),
                           q.reshape(shape).astype(np.int8), d.astype(np.float16), None)
    s, z, q = _quantize_asym(wg, bits, method)
    return QuantTensor(bits, group_size, False, (rows, cols), q.reshape(shape).astype(np.uint8),
                       s.astype(np.float16), z.astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Whole models
