"""Reader and writer for llama2.c checkpoints, plus a built-in random model.

Three on-disk layouts exist, all little-endian:

* **v0** (legacy, what the published "tinyllamas" use): seven int32 header fields
  ``dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len`` (a negative
  ``vocab_size`` means the classifier is stored separately), then fp32 tensors in the order
  embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, two RoPE tables of
  ``seq_len * head_dim / 2`` floats that nobody reads any more, then the classifier if unshared.
* **v1**: a 256-byte header (u32 magic ``"ak42"``, i32 version 1, the seven int32 fields,
  u8 shared-classifier flag, zero padding), then fp32 norms first and matrices after.
* **v2**: the v1 header plus an i32 group size; norms in fp32, every matrix Q8_0 group-quantized
  (for each tensor: its int8 values, then its fp32 per-group scales, as llama2.c's runq.c reads).
  We dequantize to float32 on load so one reference forward pass serves every format.

Sizes are checked exactly: a file one byte too long is as wrong as one too short, because a
mismatch almost always means the header and the tensors disagree.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError

__all__ = [
    "BUILTIN_SHAPES",
    "MAGIC",
    "STORIES260K_SHAPE",
    "LlamaConfig",
    "LlamaModel",
    "LlamaWeights",
    "builtin_from_spec",
    "builtin_model",
    "load_checkpoint",
    "parse_builtin_spec",
    "parse_checkpoint",
    "serialize_checkpoint",
]

F32 = npt.NDArray[np.float32]

MAGIC = 0x616B3432  # "ak42" read as a little-endian u32
_V1_HEADER_SIZE = 256
_HEADER7 = struct.Struct("<7i")
_MAGIC_VERSION = struct.Struct("<Ii")

# Sanity caps: far above any model an edge device runs, far below what a garbage header yields.
_MAX_DIM = 1 << 16
_MAX_LAYERS = 1 << 10
_MAX_VOCAB = 1 << 20
_MAX_SEQ = 1 << 20


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters from a llama2.c header (vocab_size always positive here)."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key/value projections (smaller than dim under grouped-query attention)."""
        return self.dim * self.n_kv_heads // self.n_heads

    def check(self, source: str) -> None:
        """Raise ModelError when the numbers cannot describe a real model.

        Args:
            source: Named in the message so the user knows which file is bad.
        """
        fields = {
            "dim": (self.dim, _MAX_DIM),
            "hidden_dim": (self.hidden_dim, 8 * _MAX_DIM),
            "n_layers": (self.n_layers, _MAX_LAYERS),
            "n_heads": (self.n_heads, _MAX_DIM),
            "n_kv_heads": (self.n_kv_heads, _MAX_DIM),
            "vocab_size": (self.vocab_size, _MAX_VOCAB),
            "seq_len": (self.seq_len, _MAX_SEQ),
        }
        for name, (value, cap) in fields.items():
            if not 0 < value <= cap:
                raise ModelError(
                    f"{source}: header field {name}={value} is outside 1..{cap}; "
                    "the file is not a llama2.c checkpoint or is corrupt"
                )
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ModelError(
                f"{source}: dim={self.dim}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads} "
                "do not divide evenly; the header is corrupt"
            )
        if self.head_dim % 2:
            raise ModelError(f"{source}: head_dim={self.head_dim} is odd; RoPE needs pairs")


@dataclass
class LlamaWeights:
    """All tensors as float32, shaped (out, in) like llama2.c's row-major matmul expects."""

    token_embedding: F32  # (vocab, dim)
    rms_att: F32  # (L, dim)
    wq: F32  # (L, dim, dim)
    wk: F32  # (L, kv_dim, dim)
    wv: F32  # (L, kv_dim, dim)
    wo: F32  # (L, dim, dim)
    rms_ffn: F32  # (L, dim)
    w1: F32  # (L, hidden, dim)
    w2: F32  # (L, dim, hidden)
    w3: F32  # (L, hidden, dim)
    rms_final: F32  # (dim,)
    wcls: F32  # (vocab, dim); the same object as token_embedding when shared


@dataclass
class LlamaModel:
    """A loaded model: numbers, tensors, and where they came from (for trace metadata)."""

    config: LlamaConfig
    weights: LlamaWeights
    name: str
    sha256: str
    source: str


def _shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Tensor shapes keyed by LlamaWeights field name (classifier excluded)."""
    layers, dim, hid, kv = c.n_layers, c.dim, c.hidden_dim, c.kv_dim
    return {
        "token_embedding": (c.vocab_size, dim),
        "rms_att": (layers, dim),
        "wq": (layers, dim, dim),
        "wk": (layers, kv, dim),
        "wv": (layers, kv, dim),
        "wo": (layers, dim, dim),
        "rms_ffn": (layers, dim),
        "w1": (layers, hid, dim),
        "w2": (layers, dim, hid),
        "w3": (layers, hid, dim),
        "rms_final": (dim,),
    }


_V0_ORDER = ("token_embedding", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
             "rms_final")
_NORMS = ("rms_att", "rms_ffn", "rms_final")
_MATRICES = ("token_embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3")


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _frozen(a: F32) -> F32:
    a.setflags(write=False)
    return a


def _size_error(source: str, what: str, expected: int, got: int) -> ModelError:
    verb = "short" if got < expected else "long"
    return ModelError(
        f"{source}: file is too {verb} for a {what}: header implies {expected} bytes, "
        f"file has {got}; it is truncated, corrupt, or not this format"
    )


def _read_fp32(buf: bytes, offset: int, shape: tuple[int, ...]) -> tuple[F32, int]:
    n = _numel(shape)
    arr = np.frombuffer(buf, dtype="<f4", count=n, offset=offset).reshape(shape)
    return arr.astype(np.float32, copy=False), offset + 4 * n


def _config_from(fields: tuple[int, ...], shared: bool, source: str) -> LlamaConfig:
    dim, hidden, layers, heads, kv_heads, vocab, seq = fields
    cfg = LlamaConfig(dim, hidden, layers, heads, kv_heads, vocab, seq, shared)
    cfg.check(source)
    return cfg


def _load_v0(data: bytes, source: str) -> tuple[LlamaConfig, LlamaWeights]:
    if len(data) < _HEADER7.size:
        raise ModelError(f"{source}: {len(data)} bytes is shorter than a llama2.c header (28)")
    fields = _HEADER7.unpack_from(data, 0)
    shared = fields[5] > 0
    cfg = _config_from((*fields[:5], abs(fields[5]), fields[6]), shared, source)
    shapes = _shapes(cfg)
    n_floats = sum(_numel(s) for s in shapes.values()) + cfg.seq_len * cfg.head_dim
    if not shared:
        n_floats += cfg.vocab_size * cfg.dim
    expected = _HEADER7.size + 4 * n_floats
    if len(data) != expected:
        raise _size_error(source, "llama2.c v0 checkpoint", expected, len(data))
    off = _HEADER7.size
    arrays: dict[str, F32] = {}
    for name in _V0_ORDER:
        arrays[name], off = _read_fp32(data, off, shapes[name])
    off += 4 * cfg.seq_len * cfg.head_dim  # legacy freq_cis_real and freq_cis_imag
    if shared:
        arrays["wcls"] = arrays["token_embedding"]
    else:
        arrays["wcls"], off = _read_fp32(data, off, shapes["token_embedding"])
    return cfg, LlamaWeights(**arrays)


def _load_v1_v2(data: bytes, source: str, version: int) -> tuple[LlamaConfig, LlamaWeights]:
    if len(data) < _V1_HEADER_SIZE:
        raise _size_error(source, f"llama2.c v{version} header", _V1_HEADER_SIZE, len(data))
    fields = _HEADER7.unpack_from(data, 8)
    shared = data[8 + _HEADER7.size] != 0
    cfg = _config_from(fields, shared, source)
    shapes = _shapes(cfg)
    matrices = [*_MATRICES] + ([] if shared else ["wcls"])
    shapes["wcls"] = shapes["token_embedding"]
    norm_floats = sum(_numel(shapes[n]) for n in _NORMS)
    mat_elems = sum(_numel(shapes[n]) for n in matrices)
    group = 0
    if version == 1:
        expected = _V1_HEADER_SIZE + 4 * (norm_floats + mat_elems)
    else:
        (group,) = struct.unpack_from("<i", data, 8 + _HEADER7.size + 1)
        if group <= 0 or cfg.dim % group:
            raise ModelError(
                f"{source}: Q8_0 group size {group} does not divide dim={cfg.dim}; "
                "the v2 header is corrupt"
            )
        expected = _V1_HEADER_SIZE + 4 * norm_floats + mat_elems + 4 * (mat_elems // group)
    if len(data) != expected:
        raise _size_error(source, f"llama2.c v{version} checkpoint", expected, len(data))
    off = _V1_HEADER_SIZE
    arrays: dict[str, F32] = {}
    for name in _NORMS:
        arrays[name], off = _read_fp32(data, off, shapes[name])
    for name in matrices:
        shape = shapes[name]
        if version == 1:
            arrays[name], off = _read_fp32(data, off, shape)
            continue
        # v2: one quantized tensor per layer matrix, each its int8 values then its scales.
        per = shape[1:] if len(shape) == 3 else shape
        count = shape[0] if len(shape) == 3 else 1
        n = _numel(per)  # a multiple of dim, hence of the group size checked above
        parts = []
        for _ in range(count):
            q = np.frombuffer(data, dtype=np.int8, count=n, offset=off)
            off += n
            s = np.frombuffer(data, dtype="<f4", count=n // group, offset=off)
            off += 4 * (n // group)
            deq = q.reshape(-1, group).astype(np.float32) * s.astype(np.float32)[:, None]
            parts.append(deq.reshape(per))
        arrays[name] = np.stack(parts) if len(shape) == 3 else parts[0]
    if shared:
        arrays["wcls"] = arrays["token_embedding"]
    return cfg, LlamaWeights(**arrays)


def parse_checkpoint(data: bytes, source: str = "<bytes>", name: str = "") -> LlamaModel:
    """Parse a llama2.c checkpoint held in memory (v0, v1 or v2, told apart by the magic).

    Args:
        data: The whole file.
        source: Where it came from; used in error messages and kept on the model.
        name: Model name; defaults to the file stem of ``source``.

    Raises:
        ModelError: When the bytes are not a consistent checkpoint.
    """
    if len(data) >= _MAGIC_VERSION.size:
        magic, version = _MAGIC_VERSION.unpack_from(data, 0)
    else:
        magic, version = 0, 0
    if magic == MAGIC:
        if version not in (1, 2):
            raise ModelError(
                f"{source}: llama2.c export version {version} is not supported (only v0, v1 "
                "fp32 and v2 Q8_0); re-export with llama2.c's export.py --version 1"
            )
        cfg, weights = _load_v1_v2(data, source, version)
    else:
        cfg, weights = _load_v0(data, source)
    for value in vars(weights).values():
        value.setflags(write=False)  # shared by every Transformer built on this model
    return LlamaModel(
        config=cfg,
        weights=weights,
        name=name or Path(source).stem,
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
    )


def load_checkpoint(path: str | Path) -> LlamaModel:
    """Load a llama2.c checkpoint file; the tensors are read-only float32 arrays.

    Raises:
        ModelError: When the file cannot be read or is not a consistent checkpoint.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        msg = f"cannot read model file {p}: {exc.strerror or exc}; check the path"
        raise ModelError(msg) from exc
    return parse_checkpoint(data, source=str(p), name=p.stem)


def _rope_tables(cfg: LlamaConfig) -> tuple[F32, F32]:
    """The legacy freq_cis tables v0 files carry (cos and sin, seq_len x head_dim/2).

    Computed in float32 like the PyTorch exporter; a few values differ in the last bit from
    published files (libm differences), which no reader cares about since run.c skips them.
    """
    hd = np.float32(cfg.head_dim)
    exps = np.arange(0, cfg.head_dim, 2, dtype=np.float32) / hd
    freqs = (np.float32(1.0) / (np.float32(10000.0) ** exps)).astype(np.float32)
    angles = np.outer(np.arange(cfg.seq_len, dtype=np.float32), freqs).astype(np.float32)
    return np.cos(angles), np.sin(angles)


def _v0_chunks(model: LlamaModel) -> Iterator[bytes]:
    """The v0 file piece by piece, so a hash of a large model needs no whole-file copy."""
    cfg, w = model.config, model.weights
    le = "<f4"
    vocab = cfg.vocab_size if cfg.shared_classifier else -cfg.vocab_size
    yield _HEADER7.pack(cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                        vocab, cfg.seq_len)
    for n in _V0_ORDER:
        yield np.ascontiguousarray(getattr(w, n), dtype=le).tobytes()
    cos, sin = _rope_tables(cfg)
    yield cos.astype(le).tobytes()
    yield sin.astype(le).tobytes()
    if not cfg.shared_classifier:
        yield np.ascontiguousarray(w.wcls, dtype=le).tobytes()


def serialize_checkpoint(model: LlamaModel, version: int = 0, group_size: int = 64) -> bytes:
    """Write a model in llama2.c layout, so tests and the firmware can get files from Python.

    Args:
        model: The model to write.
        version: 0 (legacy), 1 (fp32 with header) or 2 (Q8_0).
        group_size: Q8_0 group size for version 2; halved until it divides dim, like export.py.

    Raises:
        ModelError: For an unknown version.
    """
    cfg, w = model.config, model.weights
    le = "<f4"
    out: list[bytes] = []
    fields = (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads)
    if version == 0:
        return b"".join(_v0_chunks(model))
    if version not in (1, 2):
        raise ModelError(f"cannot write llama2.c version {version}; use 0, 1 or 2")
    while cfg.dim % group_size:
        group_size //= 2
    header = _MAGIC_VERSION.pack(MAGIC, version)
    header += _HEADER7.pack(*fields, cfg.vocab_size, cfg.seq_len)
    header += struct.pack("<B", int(cfg.shared_classifier))
    if version == 2:
        header += struct.pack("<i", group_size)
    out.append(header.ljust(_V1_HEADER_SIZE, b"\0"))
    out.extend(np.ascontiguousarray(getattr(w, n), dtype=le).tobytes() for n in _NORMS)
    names = [*_MATRICES] + ([] if cfg.shared_classifier else ["wcls"])
    for name in names:
        arr: F32 = getattr(w, name)
        if version == 1:
            out.append(np.ascontiguousarray(arr, dtype=le).tobytes())
            continue
        tensors = list(arr) if arr.ndim == 3 else [arr]
        for t in tensors:
            groups = np.asarray(t, dtype=np.float32).reshape(-1, group_size)
            scale = (np.abs(groups).max(axis=1) / np.float32(127.0)).astype(np.float32)
            safe = np.where(scale == 0, np.float32(1.0), scale)
            q = np.round(groups / safe[:, None]).astype(np.int8)
            out += [q.tobytes(), scale.astype(le).tobytes()]
    return b"".join(out)


STORIES260K_SHAPE = LlamaConfig(
    dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512,
    shared_classifier=True,
)


#: Shapes of the generated models, by the name used in ``builtin:SHAPE[:SEED]``. "1m" is a
#: llama2.c-style model of 1.16 M parameters (4.6 MB as fp32); "8m" has 7.35 M parameters so its
#: 8-bit files (Q8_0 GGUF 7.8 MB, int8 .tlm ~7.6 MB) exercise "models up to 8 MB". Every row
#: length of "8m" is a multiple of 256, so GGUF K-quants (256-weight blocks) apply to all of it.
BUILTIN_SHAPES: Final[dict[str, LlamaConfig]] = {
    "260k": STORIES260K_SHAPE,
    "1m": LlamaConfig(dim=128, hidden_dim=344, n_layers=6, n_heads=8, n_kv_heads=4,
                      vocab_size=512, seq_len=512, shared_classifier=True),
    "8m": LlamaConfig(dim=256, hidden_dim=768, n_layers=8, n_heads=8, n_kv_heads=4,
                      vocab_size=4096, seq_len=512, shared_classifier=True),
}


def builtin_model(seed: int = 0, shape: str = "260k") -> LlamaModel:
    """A random llama2.c-shaped model, so the device twin and tests need no model file.

    Weights are normal with std 1/sqrt(fan_in) (so each matmul keeps activations near unit
    scale), norm gains are 1, and the shared embedding has std 4/sqrt(dim) (0.5 for the 260K
    shape) so logits, whose std is then about 4 at every width, are neither flat nor one-hot.
    The same seed and shape always give the same bytes and therefore the same sha256; the 260K
    shape's bytes are those of earlier versions (its traces keep their model hash).

    Args:
        seed: Seed of numpy's default generator.
        shape: A key of :data:`BUILTIN_SHAPES`: "260k" (stories260K's shape), "1m" or "8m".

    Raises:
        ModelError: For an unknown shape.
    """
    cfg = BUILTIN_SHAPES.get(shape.lower())
    if cfg is None:
        known = ", ".join(BUILTIN_SHAPES)
        raise ModelError(f"unknown builtin model shape {shape!r}; use one of {known}")
    rng = np.random.default_rng(seed)
    arrays: dict[str, F32] = {}
    for name, dims in _shapes(cfg).items():
        if name in _NORMS:
            arrays[name] = np.ones(dims, dtype=np.float32)
            continue
        fan = cfg.dim if name == "token_embedding" else dims[-1]
        std = (4.0 if name == "token_embedding" else 1.0) / np.sqrt(fan)
        a = rng.standard_normal(dims, dtype=np.float32)
        a *= np.float32(std)  # in place: the 8m model is 29 MB of float32 already
        arrays[name] = a
    arrays["wcls"] = arrays["token_embedding"]
    weights = LlamaWeights(**{k: _frozen(v) for k, v in arrays.items()})
    key = shape.lower()
    name = f"builtin-{key}"
    source = f"builtin:seed={seed}" if key == "260k" else f"builtin:{key}:seed={seed}"
    model = LlamaModel(cfg, weights, name=name, sha256="", source=source)
    digest = hashlib.sha256()
    for chunk in _v0_chunks(model):
        digest.update(chunk)
    model.sha256 = digest.hexdigest()
    return model


def parse_builtin_spec(spec: str) -> tuple[str, int]:
    """``builtin``, ``builtin:SEED``, ``builtin:SHAPE`` or ``builtin:SHAPE:SEED`` -> (shape, seed).

    One parser for every MODEL argument, so the command line names generated models the same
    way everywhere. The shape defaults to "260k" and the seed to 0.

    Raises:
        ModelError: When the text is not of that form (the message shows the accepted forms).
    """
    head, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    shape, seed_text = "260k", "0"
    if parts and parts[0].lower() in BUILTIN_SHAPES:
        shape = parts.pop(0).lower()
    if parts:
        seed_text = parts.pop(0) or "0"
    if head != "builtin" or parts or not seed_text.isdigit():
        shapes = "|".join(BUILTIN_SHAPES)
        raise ModelError(f"{spec!r}: builtin models are named builtin:SEED or "
                         f"builtin:SHAPE[:SEED] with SHAPE {shapes} and an integer SEED")
    return shape, int(seed_text)


def builtin_from_spec(spec: str) -> LlamaModel:
    """The model a ``builtin[:SHAPE][:SEED]`` MODEL argument names (see parse_builtin_spec).

    Raises:
        ModelError: When the text is not of that form.
    """
    shape, seed = parse_builtin_spec(spec)
    return builtin_model(seed, shape)
