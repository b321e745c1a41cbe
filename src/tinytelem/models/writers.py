"""Writers of ``model quantize -o OUT``: one per output format, chosen by OUT's extension.

:data:`tinytelem.models.formats.WRITERS` maps extensions to the functions here. Each takes a
:class:`QuantizeRequest` and the output path and returns a dict of facts to print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tinytelem.errors import ConfigError

if TYPE_CHECKING:
    from tinytelem.models.llama2c import LlamaModel
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tokenizer import TextCodec

__all__ = ["BITS_TO_GGUF", "FLOAT_TYPES", "QuantizeRequest", "float_request", "write_c_file",
           "write_gguf_file", "write_hf_folder", "write_onnx_file", "write_tlm_file"]

BITS_TO_GGUF: Final = {8: "q8_0", 4: "q4_0", 3: "q3_k", 2: "q2_k"}
"""The GGUF type ``--bits B`` means for a ``.gguf`` output."""

FLOAT_TYPES: Final = ("f32", "f16")
"""``model convert --type``: f16 only where the format stores it (GGUF)."""


@dataclass
class QuantizeRequest:
    """What ``model quantize`` asks an output writer to produce.

    Attributes:
        source: The float model read from IN.
        bits: ``--bits`` (None when ``--type`` was given).
        group_size: ``--group``.
        symmetric: False with ``--asym``.
        method: ``rtn`` or ``search``.
        qtype: ``--type`` value (None when ``--bits`` was given).
        alignment: ``--align`` (for container formats that align tensors).
        progress: Call with a tensor name as each is quantized (drives the progress bar).
        source_path: The file IN came from (None for ``builtin``).
        per_tensor_bits: From ``--plan``: width per tensor (32 = float32), else None.
        per_tensor_group: From ``--plan``: group size per tensor, else None.
        tokenizer: IN's tokenizer (stored in it or beside it), so a container that can hold
            one (GGUF) is self-contained; None when IN has none.
    """

    source: LlamaModel
    bits: int | None
    group_size: int
    symmetric: bool
    method: str
    qtype: str | None
    alignment: int = 16
    progress: Callable[[str], None] = field(default=lambda name: None)
    source_path: str | None = None
    per_tensor_bits: dict[str, int] | None = None
    per_tensor_group: dict[str, int] | None = None
    tokenizer: TextCodec | None = None

    def quantize(self) -> QuantizedModel:
        """The group-wise quantized model (``--bits`` path) for writers that need one."""
        from tinytelem.models.qtensor import Method
        from tinytelem.models.quant import quantize_model

        if self.bits is None:
            raise ConfigError(f"--type {self.qtype} cannot be written to this format; use "
                              "--bits B for .tlm and .c outputs")
        method: Method = "search" if self.method == "search" else "rtn"
        return quantize_model(self.source, self.bits, self.group_size, self.symmetric, method,
                              per_tensor_bits=self.per_tensor_bits, progress=self.progress,
                              per_tensor_group=self.per_tensor_group)


def float_request(source: LlamaModel, out: Path, qtype: str = "f32", *,
                  tokenizer: TextCodec | None = None, source_path: str | None = None,
                  progress: Callable[[str], None] | None = None) -> QuantizeRequest:
    """The request ``model convert`` gives a writer: every weight kept in float.

    GGUF takes ``qtype`` (f32 or f16) directly; the other formats get a plan keeping every
    matrix at 32 bits (the embedding included), so they go through the same writers as
    ``model quantize`` and store float32.

    Raises:
        ConfigError: ``qtype`` is not f32/f16, or f16 for a format that stores float32 only.
    """
    from tinytelem.models import names

    if qtype not in FLOAT_TYPES:
        raise ConfigError(f"--type {qtype!r} is not a float type; convert writes f32 or f16 "
                          "(use `model quantize` for quantized outputs)")
    gguf = out.suffix.lower() == ".gguf"
    if qtype != "f32" and not gguf:
        what = out.suffix or "a Hugging Face folder"
        raise ConfigError(f"--type {qtype} is written to .gguf files only; {what} stores "
                          "float32")
    kinds = ("tok_embeddings", "output", *names.MATRIX_KINDS)
    return QuantizeRequest(source, None if gguf else 8, 32, True, "rtn", qtype,
                           progress=progress or (lambda name: None), source_path=source_path,
                           per_tensor_bits=None if gguf else dict.fromkeys(kinds, 32),
                           tokenizer=tokenizer)


def write_tlm_file(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    """``.tlm``: the firmware's container."""
    from tinytelem.models.tlm import write_tlm

    qm = req.quantize()
    size = write_tlm(qm, out, req.alignment)
    return {"output": str(out), "format": "tlm", "bytes": size,
            "bits_per_weight": round(qm.bits_per_weight(), 3), "params": qm.param_count()}


def write_c_file(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    """``.c`` + ``.h``: the ``.tlm`` image as a C array."""
    from tinytelem.models.export_c import export_c
    from tinytelem.models.tlm import serialize_tlm

    qm = req.quantize()
    image = serialize_tlm(qm, req.alignment)
    c_path, h_path = export_c(image, out, symbol="tlm_model", alignment=req.alignment)
    return {"output": str(c_path), "header": str(h_path), "format": "c", "bytes": len(image),
            "bits_per_weight": round(qm.bits_per_weight(), 3), "params": qm.param_count()}


def write_gguf_file(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    """``.gguf`` for llama.cpp, with IN's llama2.c tokenizer when it has one."""
    from tinytelem.models.gguf_io import write_gguf
    from tinytelem.models.hf_tokenizer import HfTokenizer
    from tinytelem.models.tokenizer import Tokenizer

    qtype = req.qtype or BITS_TO_GGUF.get(req.bits or 0)
    if qtype is None:
        raise ConfigError(f"--bits {req.bits} has no GGUF type; use --type q4_0, q8_0, q2_k, "
                          "q3_k, q4_k, f16 or f32")
    types = None
    if req.per_tensor_bits:  # a plan: nearest GGUF type per tensor (32 = f32)
        table = {**BITS_TO_GGUF, 32: "f32"}
        types = {name: table[b] for name, b in req.per_tensor_bits.items() if b in table}
    tok = req.tokenizer if isinstance(req.tokenizer, Tokenizer) else None
    if isinstance(req.tokenizer, HfTokenizer):  # a Hugging Face folder's tokenizer.json
        tok = req.tokenizer.as_llama2c()
    infos = write_gguf(req.source, out, qtype, tokenizer=tok, tensor_types=types)
    for info in infos:
        req.progress(info.name)
    nbytes = sum(i.nbytes for i in infos)
    numel = sum(i.numel for i in infos)
    return {"output": str(out), "format": "gguf", "type": qtype, "bytes": out.stat().st_size,
            "bits_per_weight": round(8 * nbytes / max(1, numel), 3),
            "types": sorted({i.qtype for i in infos}), "tokenizer": tok is not None}


def write_onnx_file(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    """``.onnx``: a decoder step onnxruntime runs (token, position and KV cache in; logits and
    the grown cache out): MatMulNBits for 2/4/8-bit matrices, INT4 DequantizeLinear for 3-bit,
    float32 MatMul for float ones."""
    from tinytelem.models.onnx_decoder import write_onnx_decoder

    if req.bits is None:
        raise ConfigError("ONNX output takes --bits 2, 3, 4 or 8 (or `model convert` for float)")
    qm = req.quantize()
    infos = write_onnx_decoder(qm, out)
    return {"output": str(out), "format": "onnx", "graph": "decoder-step",
            "bytes": out.stat().st_size, "bits_per_weight": round(qm.bits_per_weight(), 3),
            "types": sorted({i.qtype for i in infos})}


def write_hf_folder(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    """A folder (OUT without an extension): a Hugging Face ``LlamaForCausalLM`` checkpoint in
    float32, with a ``tokenizer.json`` from IN's tokenizer when it has a real vocabulary."""
    from tinytelem.models.hf_io import write_hf

    if req.per_tensor_bits is None or set(req.per_tensor_bits.values()) != {32}:
        raise ConfigError(f"{out}: a Hugging Face folder holds float weights; write it with "
                          "`tinytelem model convert IN -o FOLDER`")
    return write_hf(req.source, out, req.tokenizer)
