"""Damaged model files for the bad-file acceptance tests: one builder per (format, case).

Each builder writes a good file of the 260K builtin model, then breaks it in one precise way
and returns the path plus words the CLI's error line must contain. Kept apart from the tests
so the cases read as a table.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from tinytelem.models.llama2c import MAGIC, builtin_model, serialize_checkpoint

Case = tuple[Path, tuple[str, ...]]
Builder = Callable[[Path], Case]


def _bin(tmp: Path, version: int = 0) -> bytes:
    del tmp
    return serialize_checkpoint(builtin_model(0), version)


def _put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ llama2.c .bin

def bin_truncated(tmp: Path) -> Case:
    data = _bin(tmp)
    return _put(tmp / "trunc.bin", data[:-1000]), ("too short",)


def bin_wrong_magic(tmp: Path) -> Case:
    data = bytearray(_bin(tmp, 1))
    struct.pack_into("<I", data, 0, MAGIC ^ 0x01000000)  # "ak43": read as a v0 header
    return _put(tmp / "magic.bin", bytes(data)), ("header field dim",)


def bin_absurd_shape(tmp: Path) -> Case:
    data = bytearray(_bin(tmp))
    struct.pack_into("<i", data, 8, 1 << 30)  # n_layers
    return _put(tmp / "shape.bin", bytes(data)), ("n_layers",)


def bin_huge_but_capped_shape(tmp: Path) -> Case:
    data = bytearray(_bin(tmp))
    struct.pack_into("<3i", data, 0, 1 << 16, 1 << 19, 1 << 10)  # dim, hidden, layers at caps
    return _put(tmp / "huge.bin", bytes(data)), ("too short",)


def bin_unsupported_version(tmp: Path) -> Case:
    data = bytearray(_bin(tmp, 2))
    struct.pack_into("<i", data, 4, 3)
    return _put(tmp / "v3.bin", bytes(data)), ("version 3",)


def bin_bad_group(tmp: Path) -> Case:
    data = bytearray(_bin(tmp, 2))
    struct.pack_into("<i", data, 37, 0)
    return _put(tmp / "group.bin", bytes(data)), ("group size 0",)


# ------------------------------------------------------------------ .tlm

def _tlm(tmp: Path) -> bytearray:
    from tinytelem.models.quant import quantize_model
    from tinytelem.models.tlm import serialize_tlm

    del tmp
    return bytearray(serialize_tlm(quantize_model(builtin_model(0), 4, 32)))


def _recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def _entry_offset(data: bytes | bytearray, index: int) -> int:
    from tinytelem.models.tlm import ENTRY, HEADER

    table_off = HEADER.unpack_from(data, 0)[8]
    return int(table_off) + index * ENTRY.size


def tlm_truncated(tmp: Path) -> Case:
    data = _tlm(tmp)
    return _put(tmp / "trunc.tlm", bytes(data[:-100])), ("truncated", "offset 20")


def tlm_wrong_magic(tmp: Path) -> Case:
    data = _tlm(tmp)
    data[0:4] = b"TLM9"
    return _put(tmp / "magic.tlm", _recrc(data)), ("magic", "offset 0")


def tlm_bad_crc(tmp: Path) -> Case:
    data = _tlm(tmp)
    data[len(data) // 2] ^= 0x10
    return _put(tmp / "crc.tlm", bytes(data)), ("CRC-32 mismatch", f"offset {len(data) - 4}")


def tlm_absurd_shape(tmp: Path) -> Case:
    data = _tlm(tmp)
    at = _entry_offset(data, 1)
    struct.pack_into("<I", data, at + 36, 1 << 31)
    return _put(tmp / "shape.tlm", _recrc(data)), ("absurd shape", f"offset {at}")


def tlm_config_mismatch(tmp: Path) -> Case:
    data = _tlm(tmp)
    struct.pack_into("<I", data, 60, 128)  # hidden_dim 172 -> 128: tensors no longer match
    return _put(tmp / "config.tlm", _recrc(data)), ("hidden_dim=128", "needs (128, 64)",
                                                     "at file offset")


def tlm_unsupported_type(tmp: Path) -> Case:
    data = _tlm(tmp)
    at = _entry_offset(data, 1)
    data[at + 32] = 0x17  # 7-bit symmetric: no such kind
    return _put(tmp / "type.tlm", _recrc(data)), ("unsupported tensor type code 0x17",
                                                   f"offset {at}")


# ------------------------------------------------------------------ GGUF

def _gguf(tmp: Path, qtype: str = "q4_0") -> Path:
    from tinytelem.models.gguf_io import write_gguf

    path = tmp / f"good-{qtype}.gguf"
    write_gguf(builtin_model(0), path, qtype)
    return path


def _tensor_info_offset(path: Path, name: str) -> int:
    """File offset of a tensor-info record's n_dims field (just after its name)."""
    import gguf

    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == name)
    return int(t.field.offset) + 8 + len(name.encode())


def gguf_truncated(tmp: Path) -> Case:
    data = _gguf(tmp).read_bytes()
    return _put(tmp / "trunc.gguf", data[: len(data) - 5000]), ("truncated", "cannot reshape")


def gguf_wrong_magic(tmp: Path) -> Case:
    data = bytearray(_gguf(tmp).read_bytes())
    data[0:4] = b"GGUX"
    return _put(tmp / "magic.gguf", bytes(data)), ("offset 0",)


def gguf_absurd_shape(tmp: Path) -> Case:
    good = _gguf(tmp)
    at = _tensor_info_offset(good, "blk.0.attn_q.weight")
    data = bytearray(good.read_bytes())
    struct.pack_into("<Q", data, at + 4, 1 << 40)
    return _put(tmp / "shape.gguf", bytes(data)), ("618475290624",)


def gguf_unsupported_type(tmp: Path) -> Case:
    good = _gguf(tmp)
    at = _tensor_info_offset(good, "blk.0.attn_q.weight")
    data = bytearray(good.read_bytes())
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 99)
    return _put(tmp / "type.gguf", bytes(data)), ("99) is not a valid GGMLQuantizationType",)


def gguf_iq2_type(tmp: Path) -> Case:
    """A tensor type gguf-py knows but cannot dequantize (IQ2_XXS) on an attention matrix."""
    good = _gguf(tmp)
    at = _tensor_info_offset(good, "blk.0.attn_q.weight")
    data = bytearray(good.read_bytes())
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 16)
    return _put(tmp / "iq2.gguf", bytes(data)), ("IQ2_XXS",)


CASES: dict[str, Builder] = {
    "bin-truncated": bin_truncated,
    "bin-wrong-magic": bin_wrong_magic,
    "bin-absurd-shape": bin_absurd_shape,
    "bin-huge-shape": bin_huge_but_capped_shape,
    "bin-unsupported-version": bin_unsupported_version,
    "bin-bad-group": bin_bad_group,
    "tlm-truncated": tlm_truncated,
    "tlm-wrong-magic": tlm_wrong_magic,
    "tlm-bad-crc": tlm_bad_crc,
    "tlm-absurd-shape": tlm_absurd_shape,
    "tlm-config-mismatch": tlm_config_mismatch,
    "tlm-unsupported-type": tlm_unsupported_type,
    "gguf-truncated": gguf_truncated,
    "gguf-wrong-magic": gguf_wrong_magic,
    "gguf-absurd-shape": gguf_absurd_shape,
    "gguf-unsupported-type": gguf_unsupported_type,
    "gguf-iq2-type": gguf_iq2_type,
}
