"""The ``.tlm`` model container the firmware reads (normative spec: docs/tlm-format.md).

Layout, little-endian throughout::

    [0, 192)                header: magic "TLM1", version, sizes, config, quant summary,
                            model name, source sha256
    [192, 192 + 80*count)   tensor table, one 80-byte entry per tensor
    zero padding            up to ``alignment``
    data section            every tensor's packed levels / scales / zeros, each region aligned
    metadata                optional UTF-8 JSON (not read by the firmware), aligned
    trailer                 u32 CRC-32 (zlib polynomial) of every byte before it

Offsets are absolute (from the start of the file), u32, so a firmware that maps the file at an
address aligned to ``alignment`` can point straight into it.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytelem.errors import ModelError
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.models.qtensor import BITS, QuantTensor, packed_size, unpack_levels
from tinytelem.models.quant import NORM_EPS, ROPE_THETA, QuantizedModel, Tensor

__all__ = ["ALIGNMENTS", "ENTRY", "HEADER", "MAGIC", "VERSION", "TlmTensorInfo", "TypeCode",
           "parse_tlm", "read_tlm", "serialize_tlm", "type_code", "write_tlm"]

MAGIC = b"TLM1"
VERSION = (1, 0)
ALIGNMENTS = (4, 8, 16, 32, 64)

# magic, major, minor, header_size, flags, alignment, file_size, tensor_count, table_offset,
# entry_size, data_offset, data_size, meta_offset, meta_size, reserved,
# dim, hidden, layers, heads, kv_heads, vocab, seq_len, head_dim, rope_theta, norm_eps,
# bits, symmetric, group_size, act_group (0 = the weight's group), quantized_params,
# param_count, weight_bytes, reserved, name[32], sha256[32], reserved[8]
HEADER = struct.Struct("<4sHHIIIIIIIIIIII" + "8I2f" + "BBHIIIII" + "32s32s8s")
ENTRY = struct.Struct("<32sBBH4I6II")
TRAILER = struct.Struct("<I")
FLAG_SHARED_CLASSIFIER = 1
FLAG_ROPE_TABLES = 2
_KNOWN_FLAGS = FLAG_SHARED_CLASSIFIER | FLAG_ROPE_TABLES
_MAX_DIM = 1 << 24


class TypeCode:
    """Tensor type codes: F32 0, F16 1, symmetric 0x10 | bits, asymmetric 0x20 | bits."""

    F32 = 0x00
    F16 = 0x01
    SYM = 0x10
    ASYM = 0x20


def type_code(t: Tensor) -> int:
    """The type code of a tensor."""
    if isinstance(t, QuantTensor):
        return (TypeCode.SYM if t.symmetric else TypeCode.ASYM) | t.bits
    return TypeCode.F32


def type_name(code: int) -> str:
    """Readable name for a type code (``q4_sym``, ``f32``...)."""
    if code == TypeCode.F32:
        return "f32"
    if code == TypeCode.F16:
        return "f16"
    kind = {TypeCode.SYM: "sym", TypeCode.ASYM: "asym"}.get(code & 0xF0, "?")
    return f"q{code & 0x0F}_{kind}"


@dataclass(frozen=True)
class TlmTensorInfo:
    """One tensor-table entry as read from a file (for ``inspect`` and the tests)."""

    name: str
    type_code: int
    shape: tuple[int, ...]
    group_size: int
    data: tuple[int, int]
    scales: tuple[int, int]
    zeros: tuple[int, int]


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _regions(t: Tensor) -> tuple[bytes, bytes, bytes]:
    if isinstance(t, QuantTensor):
        zeros = b"" if t.zeros is None else t.zeros.astype(np.uint8).tobytes()
        return t.pack(), t.scales.astype("<f2").tobytes(), zeros
    return np.ascontiguousarray(t, dtype="<f4").tobytes(), b"", b""


def _name_field(name: str, what: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 31:
        raise ModelError(f"{what} {name!r} is longer than 31 bytes; shorten it")
    return raw.ljust(32, b"\0")


def _summary(qmodel: QuantizedModel) -> tuple[int, int, int]:
    """(bits, symmetric, group size) covering the most quantized weights; zeros if none."""
    weight: dict[tuple[int, int, int], int] = {}
    for _name, t in qmodel:
        if isinstance(t, QuantTensor):
            key = (t.bits, int(t.symmetric), t.group_size)
            weight[key] = weight.get(key, 0) + t.shape[0] * t.shape[1]
    return max(weight, key=lambda k: weight[k]) if weight else (0, 0, 0)


def serialize_tlm(qmodel: QuantizedModel, alignment: int = 16) -> bytes:
    """The ``.tlm`` bytes of a quantized model.

    Raises:
        ModelError: For an alignment not in ALIGNMENTS, a name too long, or a tensor of more
            than 4 dimensions.
    """
    if alignment not in ALIGNMENTS:
        raise ModelError(f"alignment {alignment} is not supported; use one of {ALIGNMENTS} "
                         "(16 is the default, 32 suits ESP32-S3 PIE and cache lines)")
    cfg = qmodel.config
    items = list(qmodel.tensors.items())
    table_off = HEADER.size
    off = _align(table_off + ENTRY.size * len(items), alignment)
    data_off = off
    body = bytearray()
    entries: list[bytes] = []
    qparams = 0
    for name, t in items:
        shape = t.shape
        if len(shape) > 4:
            raise ModelError(f"tensor {name} has {len(shape)} dimensions; .tlm allows 4")
        spans = []
        for region in _regions(t):
            if not region:
                spans.append((0, 0))
                continue
            pad = _align(off, alignment) - off
            body += b"\0" * pad
            off += pad
            spans.append((off, len(region)))
            body += region
            off += len(region)
        group = t.group_size if isinstance(t, QuantTensor) else 0
        if isinstance(t, QuantTensor):
            qparams += shape[0] * shape[1]
        dims = [*shape, *([0] * (4 - len(shape)))]
        entries.append(ENTRY.pack(_name_field(name, "tensor name"), type_code(t), len(shape),
                                  group, *dims, *spans[0], *spans[1], *spans[2], 0))
    data_size = off - data_off
    meta = json.dumps(qmodel.metadata, sort_keys=True).encode() if qmodel.metadata else b""
    meta_off = _align(off, alignment) if meta else 0
    body += b"\0" * ((meta_off - off) if meta else 0) + meta
    end = (meta_off + len(meta)) if meta else off
    file_size = end + TRAILER.size
    flags = FLAG_ROPE_TABLES | (FLAG_SHARED_CLASSIFIER if cfg.shared_classifier else 0)
    bits, sym, group = _summary(qmodel)
    sha = bytes.fromhex(qmodel.source_sha256) if qmodel.source_sha256 else b""
    header = HEADER.pack(
        MAGIC, *VERSION, HEADER.size, flags, alignment, file_size, len(items), table_off,
        ENTRY.size, data_off, data_size, meta_off, len(meta), 0,
        cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size,
        cfg.seq_len, cfg.head_dim, ROPE_THETA, NORM_EPS,
        bits, sym, group, 0, qparams, qmodel.param_count(), qmodel.weight_bytes(), 0,
        qmodel.name.encode("utf-8")[:31].ljust(32, b"\0"),
        sha.ljust(32, b"\0"), b"\0" * 8)
    head = header + b"".join(entries)
    blob = head + b"\0" * (data_off - len(head)) + bytes(body)
    return blob + TRAILER.pack(zlib.crc32(blob))


def write_tlm(qmodel: QuantizedModel, path: str | Path, alignment: int = 16) -> int:
    """Write ``qmodel`` as ``.tlm``; returns the file size.

    Raises:
        ModelError: When the model cannot be encoded or the file cannot be written.
    """
    data = serialize_tlm(qmodel, alignment)
    p = Path(path)
    try:
        p.write_bytes(data)
    except OSError as exc:
        raise ModelError(f"cannot write {p}: {exc.strerror or exc}; check the directory") from exc
    return len(data)


def _fail(source: str, offset: int, what: str) -> ModelError:
    return ModelError(f"{source}: {what} (at file offset {offset}); the .tlm file is corrupt "
                      "or was written by an incompatible tool -- re-export it")


def _expected_sizes(code: int, shape: tuple[int, ...], group: int, source: str, at: int
                    ) -> tuple[int, int, int]:
    n = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if code == TypeCode.F32:
        return 4 * n, 0, 0
    if code == TypeCode.F16:
        return 2 * n, 0, 0
    bits, kind = code & 0x0F, code & 0xF0
    if bits not in BITS or kind not in (TypeCode.SYM, TypeCode.ASYM):
        raise _fail(source, at, f"unsupported tensor type code 0x{code:02x}")
    if len(shape) != 2 or group <= 0 or group % 8 or shape[1] % group:
        raise _fail(source, at, f"quantized tensor shape {shape} / group size {group} invalid")
    groups = shape[0] * shape[1] // group
    return packed_size(n, bits), 2 * groups, groups if kind == TypeCode.ASYM else 0


def parse_tlm(data: bytes, source: str = "<bytes>") -> tuple[QuantizedModel,
                                                              list[TlmTensorInfo], int]:
    """Parse and validate ``.tlm`` bytes: (model, table entries, alignment).

    Raises:
        ModelError: Naming the problem and file offset: bad magic, version, CRC, sizes,
            offsets outside the data section, misalignment, overlaps, unknown types.
    """
    if len(data) < HEADER.size + TRAILER.size:
        raise _fail(source, len(data), f"file of {len(data)} bytes is shorter than a header")
    f = HEADER.unpack_from(data, 0)
    (magic, major, minor, hsize, flags, align, fsize, count, table_off, esize, data_off,
     data_size, meta_off, meta_size) = f[:14]
    if magic != MAGIC:
        raise _fail(source, 0, f"magic {magic!r} is not {MAGIC!r}; not a .tlm file")
    if major != VERSION[0]:
        raise _fail(source, 4, f"format version {major}.{minor} is not supported "
                    f"(this reader knows {VERSION[0]}.x); upgrade tinytelem")
    if fsize != len(data):
        raise _fail(source, 20, f"header says {fsize} bytes, file has {len(data)} "
                    f"({'truncated' if len(data) < fsize else 'trailing garbage'})")
    (crc,) = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    actual = zlib.crc32(data[: len(data) - TRAILER.size])
    if crc != actual:
        raise _fail(source, len(data) - TRAILER.size,
                    f"CRC-32 mismatch: stored 0x{crc:08x}, computed 0x{actual:08x}")
    if hsize < HEADER.size or esize < ENTRY.size or align not in ALIGNMENTS:
        raise _fail(source, 8, f"header size {hsize}, entry size {esize} or alignment {align} "
                    "invalid")
    if flags & ~_KNOWN_FLAGS:
        raise _fail(source, 12, f"unknown flags 0x{flags:08x}")
    body_end = len(data) - TRAILER.size
    if table_off + count * esize > data_off or data_off + data_size > body_end:
        raise _fail(source, 24, "tensor table or data section outside the file")
    dims = f[15:23]
    cfg = LlamaConfig(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
                      bool(flags & FLAG_SHARED_CLASSIFIER))
    try:
        cfg.check(source)
    except ModelError as exc:
        raise _fail(source, 56, str(exc)) from exc
    if dims[7] != cfg.head_dim:
        raise _fail(source, 84, f"head_dim {dims[7]} != dim / n_heads = {cfg.head_dim}")
    tensors: dict[str, Tensor] = {}
    infos: list[TlmTensorInfo] = []
    spans: list[tuple[int, int, int]] = []
    for i in range(count):
        at = table_off + i * esize
        e = ENTRY.unpack_from(data, at)
        raw_name, code, ndim, group = e[0], e[1], e[2], e[3]
        name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        if not 0 < ndim <= 4 or any(d <= 0 or d > _MAX_DIM for d in e[4: 4 + ndim]):
            raise _fail(source, at, f"tensor {name!r} has an absurd shape {e[4:8]} (ndim {ndim})")
        shape = tuple(int(d) for d in e[4: 4 + ndim])
        regions = ((e[8], e[9]), (e[10], e[11]), (e[12], e[13]))
        sizes = _expected_sizes(code, shape, group, source, at)
        for (roff, rsize), want, what in zip(regions, sizes, ("data", "scales", "zeros"),
                                             strict=True):
            if rsize != want:
                raise _fail(source, at, f"tensor {name!r} {what} is {rsize} bytes, "
                            f"its type and shape need {want}")
            if rsize and (roff % align or roff < data_off or roff + rsize > data_off + data_size):
                raise _fail(source, at, f"tensor {name!r} {what} at offset {roff} is misaligned "
                            f"or outside the data section")
            if rsize:
                spans.append((roff, rsize, at))
        tensors[name] = _decode(data, code, shape, group, regions)
        infos.append(TlmTensorInfo(name, code, shape, group, *regions))
    _check_against_config(cfg, tensors, {i.name: table_off + k * esize
                                         for k, i in enumerate(infos)}, source)
    spans.sort()
    for (a_off, a_size, _), (b_off, _, b_at) in itertools.pairwise(spans):
        if a_off + a_size > b_off:
            raise _fail(source, b_at, f"tensor regions overlap at offset {b_off}")
    meta: dict[str, object] = {}
    if meta_size:
        if meta_off < data_off + data_size or meta_off + meta_size > body_end:
            raise _fail(source, 44, "metadata outside the file")
        try:
            meta = json.loads(data[meta_off: meta_off + meta_size])
        except ValueError as exc:
            raise _fail(source, meta_off, "metadata is not JSON") from exc
    name_raw, sha_raw = f[33], f[34]
    sha = sha_raw.hex() if any(sha_raw) else ""
    model = QuantizedModel(cfg, tensors, name=name_raw.split(b"\0", 1)[0].decode("utf-8",
                                                                                    "replace"),
                           source_sha256=sha, metadata=meta)
    return model, infos, align


def _expected_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, int] | tuple[int]]:
    """Logical (rows, cols) of every tensor the header's config implies (rope tables aside)."""
    d, h, kv, v = cfg.dim, cfg.hidden_dim, cfg.kv_dim, cfg.vocab_size
    per_layer: dict[str, tuple[int, int] | tuple[int]] = {
        "attention_norm": (d,), "wq": (d, d), "wk": (kv, d), "wv": (kv, d), "wo": (d, d),
        "ffn_norm": (d,), "w1": (h, d), "w2": (d, h), "w3": (h, d)}
    out: dict[str, tuple[int, int] | tuple[int]] = {"tok_embeddings": (v, d), "norm": (d,)}
    if not cfg.shared_classifier:
        out["output"] = (v, d)
    for i in range(cfg.n_layers):
        out.update({f"layers.{i}.{k}": s for k, s in per_layer.items()})
    return out


def _check_against_config(cfg: LlamaConfig, tensors: dict[str, Tensor], at: dict[str, int],
                          source: str) -> None:
    """Every tensor the header's config needs is present with that shape.

    A file whose header and tensors disagree (a patched header with a valid CRC, a buggy
    writer) would otherwise load and run with silently wrong widths. Quantized matrices may
    carry zero padding up to a whole group in their input columns.
    """
    for name, want in _expected_shapes(cfg).items():
        t = tensors.get(name)
        if t is None:
            raise _fail(source, 28, f"tensor {name!r} required by the header's config is "
                        "missing from the tensor table")
        got = tuple(t.shape)
        group = t.group_size if isinstance(t, QuantTensor) else 1
        ok = len(got) == len(want) and got[0] == want[0] and (
            len(want) == 1 or want[1] <= got[1] < want[1] + max(group, 1))
        if not ok:
            raise _fail(source, at[name], f"tensor {name!r} has shape {got} but the header's "
                        f"config (dim={cfg.dim}, hidden_dim={cfg.hidden_dim}, "
                        f"kv_dim={cfg.kv_dim}, vocab_size={cfg.vocab_size}) needs {want}")


def _decode(data: bytes, code: int, shape: tuple[int, ...], group: int,
            regions: tuple[tuple[int, int], ...]) -> Tensor:
    (d_off, d_size), (s_off, s_size), (z_off, z_size) = regions
    if code == TypeCode.F32:
        return np.frombuffer(data, "<f4", d_size // 4, d_off).astype(np.float32).reshape(shape)
    if code == TypeCode.F16:
        return np.frombuffer(data, "<f2", d_size // 2, d_off).astype(np.float32).reshape(shape)
    bits, sym = code & 0x0F, (code & 0xF0) == TypeCode.SYM
    rows, cols = shape
    gshape = (rows, cols // group)
    q = unpack_levels(data[d_off: d_off + d_size], bits, rows * cols, sym).reshape(shape)
    scales = np.frombuffer(data, "<f2", s_size // 2, s_off).astype(np.float16).reshape(gshape)
    zeros = None if sym else np.frombuffer(data, np.uint8, z_size, z_off).copy().reshape(gshape)
    return QuantTensor(bits, group, sym, (rows, cols), q, scales, zeros)


def read_tlm(path: str | Path) -> QuantizedModel:
    """Load and validate a ``.tlm`` file.

    Raises:
        ModelError: When the file cannot be read or fails validation (see :func:`parse_tlm`).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {p}: {exc.strerror or exc}; check the path") from exc
    return parse_tlm(data, str(p))[0]
