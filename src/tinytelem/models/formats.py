"""Model formats: one registry of readers and writers, and one :func:`open_model` for everyone.

Every command that takes a MODEL (``model generate | inspect | quantize | validate | eval |
optimize``, ``profile``, ``record``, ``emulate``, ``recommend``) and the device twin open it
here, so they accept the same files and give the same errors.

Reading: a format is chosen by the file's magic bytes when it has one (``GGUF``, ``TLM1``), else
by its extension (:data:`READERS`); a folder with ``config.json`` is a Hugging Face
``LlamaForCausalLM`` checkpoint (:mod:`tinytelem.models.hf_io`); ``builtin[:SHAPE][:SEED]``
names a generated model. The result is a :class:`LoadedModel`: a float32 view of the weights
(what the float reference and the quantizers use), the integer model for ``.tlm`` files (what
the firmware and the twin run), the stored tensors, and the model's tokenizer.

Tokenizers (:func:`resolve_tokenizer`): ``--tokenizer`` when given, else the one stored in the
model (GGUF ``tokenizer.ggml.*``, a Hugging Face folder's ``tokenizer.model`` or
``tokenizer.json``), else llama2.c's convention of ``tok<vocab>.bin`` or
``tokenizer.bin`` beside the file. Generated (``builtin``) models and files made from them
(their name starts with ``builtin-``) have a byte vocabulary by construction, so bytes *are*
their tokenizer. Any other model without a tokenizer is an error naming the remedy: byte tokens
for a real vocabulary would print the prompt and nothing else, which looks like success.

Writing: :data:`WRITERS` maps an output extension to a writer in
:mod:`tinytelem.models.writers`; :data:`QUANT_TYPES` lists the named ``--type`` values.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tinytelem.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from tinytelem.models.gguf_io import TensorInfo
    from tinytelem.models.llama2c import LlamaModel
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tokenizer import TextCodec, Tokenizer
    from tinytelem.models.writers import QuantizeRequest

__all__ = [
    "COST_MODEL_BITS",
    "GENERATED_MODEL_BITS",
    "QUANT_TYPES",
    "READERS",
    "WRITERS",
    "LoadedModel",
    "find_tokenizer",
    "open_model",
    "register_quant_type",
    "register_reader",
    "register_writer",
    "resolve_tokenizer",
    "storage_bits",
]

Reader = Callable[[Path], "LoadedModel"]
Writer = Callable[["QuantizeRequest", Path], dict[str, Any]]

COST_MODEL_BITS: Final = (2, 3, 4, 8, 16, 32)
"""Weight widths the twin's cost model has kernels for."""

GENERATED_MODEL_BITS: Final = 4
"""The width the twin costs a generated (``builtin``) model at: it has no stored precision and
stands for a model of that shape quantized for the board (4-bit, the firmware's usual width);
model files are costed at their own width (:func:`storage_bits`)."""


@dataclass
class LoadedModel:
    """A model opened from a file or a builtin spec, whatever its format."""

    path: str
    fmt: str  # llama2c, gguf, onnx, tlm, hf (a checkpoint folder), builtin
    model: LlamaModel  # float32 view of the weights
    tensors: list[TensorInfo]
    tokenizer: TextCodec | None = None
    qmodel: QuantizedModel | None = None  # the integer model of a .tlm file
    ops: dict[str, int] = field(default_factory=dict)  # ONNX node histogram
    unsupported_ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # a folder's files that were read

    @property
    def weight_bytes(self) -> int:
        """Stored bytes of all tensors."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def runnable(self) -> LlamaModel | QuantizedModel:
        """What an engine runs: the integer model of a ``.tlm``, else the float weights."""
        return self.qmodel if self.qmodel is not None else self.model

    @property
    def weight_bits(self) -> int:
        """The model's own weight width, for the cost model (see :func:`storage_bits`;
        :data:`GENERATED_MODEL_BITS` for a generated model)."""
        return GENERATED_MODEL_BITS if self.fmt == "builtin" else storage_bits(self.tensors)

    @cached_property
    def sha256(self) -> str:
        """sha256 hex of the file's bytes (what firmware HELLO carries); the model's own hash
        for a generated model."""
        if self.fmt == "builtin":
            return self.model.sha256
        digest = hashlib.sha256()
        base = Path(self.path)
        for part in [base / f for f in self.files] if self.files else [base]:
            with part.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


_EMBEDDINGS: Final = frozenset({"tok_embeddings", "token_embd.weight"})
_BITS_IN_TYPE = re.compile(r"(\d+)")


def storage_bits(tensors: Sequence[TensorInfo]) -> int:
    """The width most matrix weights are stored at (the token embedding left out: every
    quantized format keeps it at 8 bits), as one of the cost model's widths.

    The number in the type name is the width (``q4_0``, ``q4_k``, ``int4``, ``mnb4`` -> 4,
    ``f16`` -> 16, ``f32`` -> 32). A mixed-precision model counts at the width holding most
    weights: the cost model takes one width, and that is where most of the time goes.
    """
    counts: Counter[int] = Counter()
    for t in tensors:
        if len(t.shape) != 2 or t.name in _EMBEDDINGS:
            continue
        m = _BITS_IN_TYPE.search(t.qtype)
        bits = int(m.group(1)) if m else 32
        bits = min(COST_MODEL_BITS, key=lambda b: (abs(b - bits), b))
        counts[bits] += t.numel
    return counts.most_common(1)[0][0] if counts else 32


# ---------------------------------------------------------------- tokenizers

def find_tokenizer(path: str | Path, vocab: int) -> Tokenizer | None:
    """llama2.c's convention: ``tok<vocab>.bin`` or ``tokenizer.bin`` beside the model.

    Raises:
        ModelError: A file is there but does not fit the model (vocabulary size, corrupt).
    """
    from tinytelem.models.tokenizer import load_tokenizer

    p = Path(path)
    for cand in (p.with_name(f"tok{vocab}.bin"), p.with_name("tokenizer.bin")):
        if cand.is_file() and cand != p:
            return load_tokenizer(cand, vocab)
    return None


def _is_generated(model: LlamaModel | QuantizedModel) -> bool:
    return model.name.startswith("builtin-")


def resolve_tokenizer(lm: LoadedModel, explicit: Path | None = None,
                      others: Sequence[LoadedModel] = ()) -> TextCodec:
    """The tokenizer to use with ``lm``: ``explicit``, the model's own, or one of ``others``'.

    Raises:
        ConfigError: There is none; the message names the remedy.
        ModelError: ``explicit`` is unreadable or its vocabulary does not fit the model.
    """
    vocab = lm.model.config.vocab_size
    if explicit is not None:
        from tinytelem.models.hf_tokenizer import load_any_tokenizer

        return load_any_tokenizer(explicit, vocab)
    for cand in (lm, *others):
        if cand.tokenizer is not None:
            return cand.tokenizer
    why = next((f" ({n})" for n in lm.notes if "tokenizer" in n), "")
    raise ConfigError(f"{lm.path} has no tokenizer{why}: pass --tokenizer tok{vocab}.bin (the "
                      "llama2.c tokenizer the model was trained with), or put tokenizer.bin / "
                      f"tok{vocab}.bin beside the model")


def _own_tokenizer(path: Path, model: LlamaModel | QuantizedModel,
                   embedded: TextCodec | None = None) -> TextCodec | None:
    if embedded is not None:
        return embedded
    found = find_tokenizer(path, model.config.vocab_size)
    if found is not None:
        return found
    if _is_generated(model):
        from tinytelem.models.tokenizer import ByteTokenizer

        return ByteTokenizer(model.config.vocab_size)
    return None


# ---------------------------------------------------------------- readers

def _float_infos(model: LlamaModel, qtype: str = "f32", group: int = 0) -> list[TensorInfo]:
    from tinytelem.models.gguf_io import TensorInfo, tensor_items

    out = []
    for name, arr in tensor_items(model).items():
        n = arr.size
        if arr.ndim == 2 and qtype == "int8":
            out.append(TensorInfo(name, arr.shape, "int8", n + 4 * (n // group)))
        else:
            out.append(TensorInfo(name, arr.shape, "f32", 4 * n))
    return out


def _tlm_infos(qmodel: QuantizedModel) -> list[TensorInfo]:
    from tinytelem.models.gguf_io import TensorInfo
    from tinytelem.models.qtensor import QuantTensor

    out = []
    for name, t in qmodel.tensors.items():
        if name.startswith("rope."):
            continue
        if isinstance(t, QuantTensor):
            kind = f"{'int' if t.symmetric else 'uint'}{t.bits}"
            out.append(TensorInfo(name, t.shape, kind, t.nbytes()))
        else:
            out.append(TensorInfo(name, tuple(t.shape), "f32", int(t.nbytes)))
    return out


def _read_llama2c(path: Path) -> LoadedModel:
    from tinytelem.models.llama2c import MAGIC, load_checkpoint

    m = load_checkpoint(path)
    with path.open("rb") as fh:
        head = fh.read(64)
    infos = _float_infos(m)
    if len(head) >= 42 and struct.unpack_from("<Ii", head)[:2] == (MAGIC, 2):
        infos = _float_infos(m, "int8", struct.unpack_from("<i", head, 37)[0])
    return LoadedModel(str(path), "llama2c", m, infos, _own_tokenizer(path, m))


def _read_tlm(path: Path) -> LoadedModel:
    from tinytelem.models.quant import dequantize_model
    from tinytelem.models.tlm import read_tlm

    q = read_tlm(path)
    return LoadedModel(str(path), "tlm", dequantize_model(q), _tlm_infos(q),
                       _own_tokenizer(path, q), qmodel=q)


def _read_gguf(path: Path) -> LoadedModel:
    from tinytelem.models.gguf_io import read_gguf

    g = read_gguf(path)
    notes = list(g.notes)
    kind = g.metadata.get("tokenizer.ggml.model")
    if g.tokenizer is None and kind is not None:
        notes.append(f"its stored tokenizer (tokenizer.ggml.model = {kind!r}) is not a llama "
                     "SentencePiece vocabulary, which is what tinytelem runs")
    return LoadedModel(str(path), "gguf", g.model, g.tensors,
                       _own_tokenizer(path, g.model, g.tokenizer), notes=notes)


def _read_hf(path: Path) -> LoadedModel:
    from tinytelem.models.hf_io import read_hf

    h = read_hf(path)
    notes = list(h.notes)
    # tok<vocab>.bin / tokenizer.bin inside the folder count as "beside the model".
    tok = _own_tokenizer(path / "config.json", h.model, h.tokenizer)
    if tok is None:
        notes.append("no tokenizer.json or tokenizer.model in the folder")
    return LoadedModel(str(path), "hf", h.model, h.tensors, tok, notes=notes, files=h.files)


def _read_onnx(path: Path) -> LoadedModel:
    from tinytelem.models.onnx_io import read_onnx

    o = read_onnx(path)
    return LoadedModel(str(path), "onnx", o.model, o.tensors, _own_tokenizer(path, o.model),
                       ops=o.ops, unsupported_ops=o.unsupported_ops, notes=o.notes)


READERS: dict[str, Reader] = {".bin": _read_llama2c, ".tlm": _read_tlm, ".gguf": _read_gguf,
                              ".onnx": _read_onnx}
"""Extension -> reader (``reader(path) -> LoadedModel``)."""

_MAGICS: Final = {b"GGUF": ".gguf", b"TLM1": ".tlm"}


def register_reader(ext: str, reader: Reader) -> None:
    """Open files ending in ``ext`` with ``reader`` (everywhere a MODEL is accepted)."""
    READERS[ext.lower()] = reader


def _sniff(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    return _MAGICS.get(head)


def open_model(spec: str | Path) -> LoadedModel:
    """Open a model: a file of any registered format, or ``builtin[:SHAPE][:SEED]``.

    Generated models are ``builtin[:SEED]`` (stories260K's shape) and ``builtin:1m[:SEED]`` /
    ``builtin:8m[:SEED]`` (see :data:`tinytelem.models.llama2c.BUILTIN_SHAPES`).

    Raises:
        ConfigError: An unknown extension.
        ModelError: A malformed builtin spec; the file is missing, unreadable or inconsistent.
    """
    s = str(spec)
    if s == "builtin" or s.startswith("builtin:"):
        from tinytelem.models.llama2c import builtin_from_spec
        from tinytelem.models.tokenizer import ByteTokenizer

        m = builtin_from_spec(s)
        return LoadedModel(s, "builtin", m, _float_infos(m), ByteTokenizer(m.config.vocab_size))
    path = Path(s)
    if path.is_dir():
        from tinytelem.models.hf_io import is_hf_folder

        if not is_hf_folder(path):
            raise ConfigError(f"{path} is a folder without config.json; a folder opens as a "
                              "Hugging Face checkpoint (config.json + *.safetensors)")
        return _read_hf(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        known = ", ".join(sorted(READERS))
        raise ConfigError(f"{path}: unknown model format {path.suffix!r}; supported: {known} "
                          "(or builtin[:SHAPE][:SEED])")
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path")
    return READERS[_sniff(path) or suffix](path)


# ---------------------------------------------------------------- writers

def _writer(name: str) -> Writer:
    def write(req: QuantizeRequest, out: Path) -> dict[str, Any]:
        from tinytelem.models import writers

        fn: Writer = getattr(writers, name)
        return fn(req, out)

    return write


WRITERS: dict[str, Writer] = {".tlm": _writer("write_tlm_file"), ".c": _writer("write_c_file"),
                              ".gguf": _writer("write_gguf_file"),
                              ".onnx": _writer("write_onnx_file"), "": _writer("write_hf_folder")}
"""Output extension -> writer (``writer(request, out_path) -> dict`` of facts to print); ``""``
(no extension) is a Hugging Face checkpoint folder."""

QUANT_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "q8_0": ("GGUF Q8_0: 8-bit, 32-weight blocks, f16 scale (8.5 bits/w)", (".gguf",)),
    "q4_0": ("GGUF Q4_0: 4-bit, 32-weight blocks, f16 scale (4.5 bits/w)", (".gguf",)),
    "q4_k": ("GGUF Q4_K: 4-bit super-blocks of 256 (4.5 bits/w)", (".gguf",)),
    "q3_k": ("GGUF Q3_K: 3-bit super-blocks of 256 (3.44 bits/w)", (".gguf",)),
    "q2_k": ("GGUF Q2_K: 2-bit super-blocks of 256 (2.63 bits/w)", (".gguf",)),
    "f16": ("GGUF F16 matrices", (".gguf",)),
    "f32": ("GGUF F32 (lossless)", (".gguf",)),
}
"""``quantize --type`` name -> (help line, output extensions it may be written to)."""


def register_writer(ext: str, writer: Writer) -> None:
    """Teach ``quantize -o`` to write files ending in ``ext``."""
    WRITERS[ext.lower()] = writer


def register_quant_type(name: str, help_line: str, extensions: tuple[str, ...] = ()) -> None:
    """Accept ``quantize --type name`` (only for outputs ending in one of ``extensions``)."""
    QUANT_TYPES[name.lower()] = (help_line, tuple(e.lower() for e in extensions))
