"""GGUF reader and writer for llama-architecture models, through the ``gguf`` package.

Layout facts this module relies on (checked against llama.cpp's converters):

* GGUF stores a tensor's dimensions innermost-first (``ne0`` = row length), so a matrix of
  numpy shape ``(out, in)`` appears with ``shape == [in, out]``; the bytes are the same
  row-major rows llama2.c uses, so no transpose is needed.
* llama.cpp's ``llama`` architecture applies RoPE to adjacent pairs ``(2i, 2i+1)`` like Meta's
  code and llama2.c's ``run.c``. Its HF converter *permutes* ``attn_q``/``attn_k`` rows to undo
  HF's rotate-half layout, and its llama2.c converter copies weights unchanged. So GGUF q/k rows
  are already in our layout; :func:`hf_to_meta` / :func:`meta_to_hf` exist for sources that hold
  HF's layout (ONNX exports of HF models).
* A tied classifier has no ``output.weight`` tensor; ``token_embd.weight`` serves both.

Tensor names are llama.cpp's and are the canonical per-tensor names of this package (plans,
validation reports): ``token_embd``, ``blk.N.attn_q/k/v/output``, ``blk.N.ffn_gate/up/down``,
``blk.N.attn_norm``, ``blk.N.ffn_norm``, ``output_norm``, ``output`` (each with ``.weight``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.llama2c import LlamaConfig, LlamaModel, LlamaWeights
from tinytelem.models.tokenizer import Tokenizer

__all__ = [
    "FILE_TYPES",
    "GGUF_TYPES",
    "GgufFile",
    "TensorInfo",
    "canonical_names",
    "hf_to_meta",
    "meta_to_hf",
    "model_from_tensors",
    "read_gguf",
    "tensor_items",
    "write_gguf",
]

F32 = npt.NDArray[np.float32]

#: GGUF types we can write (ours for the quantized ones).
GGUF_TYPES: Final = ("f32", "f16", "q8_0", "q4_0", "q2_k", "q3_k", "q4_k")
# When a row length is not a multiple of the requested type's block, the next type tried.
_FALLBACK: Final = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q4_0", "q4_0": "f16",
                    "q8_0": "f16", "f16": "f16", "f32": "f32"}
_LAYER_FIELDS: Final = {t.field: t.gguf for t in names.LAYER}
#: ``general.file_type`` (gguf-py's ``LlamaFileType`` member) for each type we write: what
#: llama.cpp reports as the file's type instead of "guessed". K-quants write every matrix in
#: one type, which is llama.cpp's ``_S`` (small) mix.
FILE_TYPES: Final = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0",
                     "q4_0": "MOSTLY_Q4_0", "q2_k": "MOSTLY_Q2_K", "q3_k": "MOSTLY_Q3_K_S",
                     "q4_k": "MOSTLY_Q4_K_S"}


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: canonical name, numpy shape, storage type and its cost."""

    name: str
    shape: tuple[int, ...]
    qtype: str  # f32, f16, q4_0, q4_k, int4, mnb4, ... (lower case)
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of weights."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight, scales and zero points included."""
        return 8.0 * self.nbytes / max(1, self.numel)


@dataclass
class GgufFile:
    """What :func:`read_gguf` found: the float model plus what the file said about itself."""

    model: LlamaModel
    tensors: list[TensorInfo]
    metadata: dict[str, Any]
    tokenizer: Tokenizer | None
    notes: list[str] = field(default_factory=list)


def canonical_names(config: LlamaConfig) -> list[str]:
    """Canonical (GGUF) names of every tensor a model of this shape has, in file order."""
    return names.gguf_names(config)


def tensor_items(model: LlamaModel) -> dict[str, F32]:
    """Canonical name -> float32 array (views into the model, not copies)."""
    w = model.weights
    out: dict[str, F32] = {"token_embd.weight": w.token_embedding}
    for i in range(model.config.n_layers):
        for fld, g in _LAYER_FIELDS.items():
            out[f"blk.{i}.{g}.weight"] = getattr(w, fld)[i]
    out["output_norm.weight"] = w.rms_final
    if not model.config.shared_classifier:
        out["output.weight"] = w.wcls
    return out


def model_from_tensors(config: LlamaConfig, arrays: Mapping[str, F32], *, name: str,
                       source: str) -> LlamaModel:
    """Assemble a LlamaModel from canonical-name arrays, checking every shape.

    Raises:
        ModelError: A tensor is missing or has a shape that does not match the config.
    """
    c = config
    want = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,),
            "output.weight": (c.vocab_size, c.dim)}
    per = {"attn_norm": (c.dim,), "ffn_norm": (c.dim,), "attn_q": (c.dim, c.dim),
           "attn_k": (c.kv_dim, c.dim), "attn_v": (c.kv_dim, c.dim), "attn_output": (c.dim, c.dim),
           "ffn_gate": (c.hidden_dim, c.dim), "ffn_up": (c.hidden_dim, c.dim),
           "ffn_down": (c.dim, c.hidden_dim)}

    def get(key: str, shape: tuple[int, ...]) -> F32:
        if key not in arrays:
            raise ModelError(f"{source}: tensor {key} is missing; the file is incomplete or not "
                             "a llama-architecture model")
        a = np.asarray(arrays[key], dtype=np.float32)
        if a.shape != shape:
            raise ModelError(f"{source}: tensor {key} has shape {a.shape}, the header implies "
                             f"{shape}; the file is corrupt or mislabelled")
        return a

    layers: dict[str, list[F32]] = {f: [] for f in _LAYER_FIELDS}
    for i in range(c.n_layers):
        for fld, g in _LAYER_FIELDS.items():
            layers[fld].append(get(f"blk.{i}.{g}.weight", per[g]))
    emb = get("token_embd.weight", want["token_embd.weight"])
    wcls = emb if c.shared_classifier else get("output.weight", want["output.weight"])
    weights = LlamaWeights(
        token_embedding=emb, wcls=wcls, rms_final=get("output_norm.weight", (c.dim,)),
        **{f: np.stack(v) for f, v in layers.items()},
    )
    for v in vars(weights).values():
        v.setflags(write=False)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(np.ascontiguousarray(arrays[key], dtype=np.float32).tobytes())
    return LlamaModel(c, weights, name=name, sha256=digest.hexdigest(), source=source)


def hf_to_meta(w: F32, n_heads: int) -> F32:
    """Undo HF's rotate-half row order of a q/k projection (rows = n_heads * head_dim)."""
    rows = w.shape[0]
    out: F32 = (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))
    return out


def meta_to_hf(w: F32, n_heads: int) -> F32:
    """Meta / llama2.c / GGUF adjacent-pair row order -> HF's rotate-half order."""
    rows = w.shape[0]
    out: F32 = (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))
    return out


# ---------------------------------------------------------------- reading

def _scalar(reader: Any, key: str) -> Any:
    fld = reader.get_field(key)
    if fld is None:
        return None
    try:
        return fld.contents()
    except (ValueError, UnicodeDecodeError, IndexError):
        return None


def _tokenizer_from(reader: Any, source: str) -> Tokenizer | None:
    tokens = _scalar(reader, "tokenizer.ggml.tokens")
    scores = _scalar(reader, "tokenizer.ggml.scores")
    if not tokens or _scalar(reader, "tokenizer.ggml.model") != "llama":
        return None
    if scores is None or len(scores) != len(tokens):
        scores = [0.0] * len(tokens)
    special = {1: b"\n<s>\n", 2: b"\n</s>\n"}  # llama2.c's spelling of BOS/EOS
    pieces = tuple(special.get(i, t.replace("\u2581", " ").encode("utf-8"))
                   for i, t in enumerate(tokens))
    return Tokenizer(pieces=pieces, scores=tuple(float(s) for s in scores),
                     max_token_length=max(len(p) for p in pieces), source=source)


def read_gguf(path: str | Path) -> GgufFile:
    """Read a llama-architecture GGUF file into a float32 model plus per-tensor types.

    Every tensor type gguf-py can dequantize is accepted (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
    Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16, F32, ...).

    Raises:
        ModelError: Unreadable file, wrong magic, not llama, missing/mis-shaped tensors, or a
            tensor type gguf-py cannot dequantize.
    """
    import gguf

    p = Path(path)
    src = str(p)
    try:
        reader = gguf.GGUFReader(p)
    except OSError as exc:
        raise ModelError(f"cannot read {src}: {exc.strerror or exc}; check the path") from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        head = p.read_bytes()[:4] if p.is_file() else b""
        where = "at offset 0 (magic " + repr(head) + ")" if head != b"GGUF" else "in the header"
        raise ModelError(f"{src}: not a readable GGUF file ({exc}) {where}; it is truncated, "
                         "corrupt or another format") from exc
    arch = _scalar(reader, "general.architecture")
    if arch != "llama":
        raise ModelError(f"{src}: architecture {arch!r} is not supported; only 'llama' "
                         "(llama2.c-style decoders) can be read")

    def need(key: str, default: int | None = None) -> int:
        v = _scalar(reader, f"llama.{key}")
        if v is None:
            if default is None:
                raise ModelError(f"{src}: metadata key llama.{key} is missing; the file is "
                                 "incomplete")
            return default
        return int(v)

    by_name = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in by_name:
        raise ModelError(f"{src}: tensor token_embd.weight is missing")
    vocab = int(by_name["token_embd.weight"].shape[1])
    heads = need("attention.head_count")
    cfg = LlamaConfig(dim=need("embedding_length"), hidden_dim=need("feed_forward_length"),
                      n_layers=need("block_count"), n_heads=heads,
                      n_kv_heads=need("attention.head_count_kv", heads), vocab_size=vocab,
                      seq_len=need("context_length"),
                      shared_classifier="output.weight" not in by_name)
    cfg.check(src)
    notes: list[str] = []
    rope_dims = need("rope.dimension_count", cfg.head_dim)
    if rope_dims != cfg.head_dim:
        raise ModelError(f"{src}: partial rotary embedding ({rope_dims} of {cfg.head_dim} "
                         "dims) is not supported by the reference Transformer")
    base = _scalar(reader, "llama.rope.freq_base")
    if base is not None and abs(float(base) - 10000.0) > 1e-3:
        raise ModelError(f"{src}: RoPE base {base} is not supported (the reference uses 10000)")
    eps = _scalar(reader, "llama.attention.layer_norm_rms_epsilon")
    if eps is not None and abs(float(eps) - 1e-5) > 1e-9:
        notes.append(f"RMSNorm epsilon {float(eps):g} differs from the reference's 1e-5")
    arrays: dict[str, F32] = {}
    infos: list[TensorInfo] = []
    for t in reader.tensors:
        qname = t.tensor_type.name.lower()
        try:
            with np.errstate(all="ignore"):
                deq = np.asarray(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type),
                                 dtype=np.float32)
        except NotImplementedError as exc:
            raise ModelError(f"{src}: tensor {t.name} (offset {t.data_offset}) has type "
                             f"{t.tensor_type.name}, which cannot be dequantized; requantize it "
                             "to Q4_0, Q8_0 or a K-quant") from exc
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if deq.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelError(f"{src}: tensor {t.name} at offset {t.data_offset} holds {deq.size} "
                             f"values for shape {shape}; the file is truncated or corrupt")
        if not np.isfinite(deq).all():
            raise ModelError(f"{src}: tensor {t.name} at offset {t.data_offset} holds NaN or "
                             "infinite values; the file is corrupt")
        arrays[t.name] = deq.reshape(shape)
        infos.append(TensorInfo(t.name, shape, qname, int(t.n_bytes)))
    name = _scalar(reader, "general.name") or p.stem
    model = model_from_tensors(cfg, arrays, name=str(name), source=src)
    model.sha256 = hashlib.sha256(p.read_bytes()).hexdigest()
    meta: dict[str, Any] = {}
    for key in reader.fields:
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model",):
            continue
        v = _scalar(reader, key)
        if isinstance(v, (int, float, str, bool)):
            meta[key] = v
    return GgufFile(model, infos, meta, _tokenizer_from(reader, src), notes)


# ---------------------------------------------------------------- writing

def _pick_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    from tinytelem.models.kquants import BLOCK

    if len(shape) == 1:
        return "f32"  # norm gains stay float, as llama.cpp keeps them
    t = qtype
    while t in BLOCK and shape[-1] % BLOCK[t][0]:
        t = _FALLBACK[t]
    return t


def write_gguf(model: Any, path: str | Path, qtype: str = "f32", *,
               tokenizer: Tokenizer | None = None,
               tensor_types: Mapping[str, str] | None = None) -> list[TensorInfo]:
    """Write a model as a llama-architecture GGUF file that gguf-py and llama.cpp can read.

    Args:
        model: A LlamaModel or a QuantizedModel (written from its dequantized weights,
            requantized to ``qtype``; ``f32`` keeps them exactly).
        path: Output file.
        qtype: One of :data:`GGUF_TYPES` for every matrix. Rows whose length is not a multiple
            of the type's block fall back (K-quants to q4_0, q4_0/q8_0 to f16); norms stay f32.
        tokenizer: Optional llama2.c vocabulary, stored in llama.cpp's ``tokenizer.ggml.*`` keys.
        tensor_types: Optional per-tensor override (canonical name -> type), e.g. from a plan.

    Returns:
        What was written, per tensor.

    Raises:
        ModelError: For an unknown type or an unwritable path.
    """
    import gguf

    from tinytelem.models import kquants
    from tinytelem.models.quant import QuantizedModel, dequantize_model

    if isinstance(model, QuantizedModel):
        model = dequantize_model(model)
    if not isinstance(model, LlamaModel):
        raise ModelError(f"cannot write {type(model).__name__} as GGUF; pass a LlamaModel")
    for t in [qtype, *(tensor_types or {}).values()]:
        if t not in GGUF_TYPES:
            raise ModelError(f"GGUF type {t!r} cannot be written; use one of "
                             f"{', '.join(GGUF_TYPES)}")
    cfg = model.config
    gt = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(model.name or "model")
    w.add_file_type(int(gguf.LlamaFileType[FILE_TYPES[qtype]]))
    w.add_context_length(cfg.seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_block_count(cfg.n_layers)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(cfg.vocab_size)
    if tokenizer is not None:
        w.add_tokenizer_model("llama")
        names = {0: "<unk>", 1: "<s>", 2: "</s>"}
        toks = [names.get(i, p.decode("utf-8", "replace").replace(" ", "\u2581"))
                for i, p in enumerate(tokenizer.pieces)]
        types = [3 if i in (1, 2) else 2 if i == 0 else
                 6 if p.startswith(b"<0x") and p.endswith(b">") else 1
                 for i, p in enumerate(tokenizer.pieces)]
        w.add_token_list(toks)
        w.add_token_scores(list(tokenizer.scores))
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    written: list[TensorInfo] = []
    for name, arr in tensor_items(model).items():
        a = np.ascontiguousarray(arr, dtype=np.float32)
        want = (tensor_types or {}).get(name, qtype)
        t = _pick_type(name, a.shape, want)
        if t == "f32":
            w.add_tensor(name, a)
            nbytes = a.nbytes
        elif t == "f16":
            h = a.astype(np.float16)
            w.add_tensor(name, h)
            nbytes = h.nbytes
        else:
            packed = kquants.quantize(a, t)
            w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=getattr(gt, t.upper()))
            nbytes = packed.nbytes
        written.append(TensorInfo(name, a.shape, t, nbytes))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        w.close()
    return written
