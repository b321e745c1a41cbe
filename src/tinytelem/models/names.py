"""One table of tensor names: native (``.tlm``, plans) <-> GGUF (llama.cpp) <-> Hugging Face.

Every reader and writer translates names through this table, so a tensor is called the same
thing wherever it goes:

============== ================ ====================== ===================================
native (.tlm)  LlamaWeights     GGUF                   Hugging Face (LlamaForCausalLM)
============== ================ ====================== ===================================
tok_embeddings token_embedding  token_embd.weight      model.embed_tokens.weight
layers.i.wq    wq[i]            blk.i.attn_q.weight    model.layers.i.self_attn.q_proj.weight
...            (see LAYER)
norm           rms_final        output_norm.weight     model.norm.weight
output         wcls             output.weight          lm_head.weight
============== ================ ====================== ===================================

Native names are the ``.tlm`` container's and the keys of optimize plans; GGUF names are the
per-tensor names of GGUF files and of :class:`tinytelem.models.gguf_io.TensorInfo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tinytelem.models.llama2c import LlamaConfig

__all__ = ["GLOBAL", "LAYER", "MATRIX_KINDS", "NORM_KINDS", "TensorName", "gguf_names",
           "gguf_to_native", "hf_name", "native_names", "native_to_gguf"]


@dataclass(frozen=True)
class TensorName:
    """One tensor kind under each naming convention (per-layer kinds without the layer)."""

    native: str
    field: str  # attribute of LlamaWeights (stacked over layers for per-layer kinds)
    gguf: str
    hf: str


LAYER: Final = (
    TensorName("attention_norm", "rms_att", "attn_norm", "input_layernorm"),
    TensorName("wq", "wq", "attn_q", "self_attn.q_proj"),
    TensorName("wk", "wk", "attn_k", "self_attn.k_proj"),
    TensorName("wv", "wv", "attn_v", "self_attn.v_proj"),
    TensorName("wo", "wo", "attn_output", "self_attn.o_proj"),
    TensorName("ffn_norm", "rms_ffn", "ffn_norm", "post_attention_layernorm"),
    TensorName("w1", "w1", "ffn_gate", "mlp.gate_proj"),
    TensorName("w2", "w2", "ffn_down", "mlp.down_proj"),
    TensorName("w3", "w3", "ffn_up", "mlp.up_proj"),
)
"""Per-layer tensors in file order (the same order in ``.tlm`` and in our GGUF files)."""

EMBEDDING: Final = TensorName("tok_embeddings", "token_embedding", "token_embd.weight",
                              "model.embed_tokens.weight")
FINAL_NORM: Final = TensorName("norm", "rms_final", "output_norm.weight", "model.norm.weight")
CLASSIFIER: Final = TensorName("output", "wcls", "output.weight", "lm_head.weight")
GLOBAL: Final = (EMBEDDING, FINAL_NORM, CLASSIFIER)

NORM_KINDS: Final = ("attention_norm", "ffn_norm")
MATRIX_KINDS: Final = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
"""Native kinds of the per-layer matrices (what quantizers and plans act on)."""

_BY_NATIVE: Final = {t.native: t for t in LAYER}
_BY_GGUF: Final = {t.gguf: t for t in LAYER}
_NATIVE_LAYER = re.compile(r"layers\.(\d+)\.(\w+)")
_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def native_names(config: LlamaConfig) -> list[str]:
    """Native names of every weight tensor of a model of this shape, in file order."""
    names = [EMBEDDING.native]
    for i in range(config.n_layers):
        names += [f"layers.{i}.{t.native}" for t in LAYER]
    names.append(FINAL_NORM.native)
    if not config.shared_classifier:
        names.append(CLASSIFIER.native)
    return names


def gguf_names(config: LlamaConfig) -> list[str]:
    """GGUF names of every weight tensor of a model of this shape, in file order."""
    return [native_to_gguf(n) for n in native_names(config)]


def _rename(name: str, layer: re.Pattern[str], by_kind: dict[str, TensorName], template: str,
            src: str, dst: str) -> str:
    """``name`` from the ``src`` convention to ``dst``: per-layer names through ``layer`` (layer
    index, kind) and ``template``, the global tensors through :data:`GLOBAL`."""
    m = layer.fullmatch(name)
    if m:
        return template.format(m.group(1), getattr(by_kind[m.group(2)], dst))
    for t in GLOBAL:
        if getattr(t, src) == name:
            return str(getattr(t, dst))
    raise KeyError(name)


def native_to_gguf(name: str) -> str:
    """``layers.3.wq`` -> ``blk.3.attn_q.weight``; ``norm`` -> ``output_norm.weight``.

    Raises:
        KeyError: Not a weight tensor's native name.
    """
    return _rename(name, _NATIVE_LAYER, _BY_NATIVE, "blk.{}.{}.weight", "native", "gguf")


def gguf_to_native(name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``layers.3.wq`` (inverse of :func:`native_to_gguf`).

    Raises:
        KeyError: Not a llama tensor's GGUF name.
    """
    return _rename(name, _GGUF_LAYER, _BY_GGUF, "layers.{}.{}", "gguf", "native")


def hf_name(gguf: str) -> str:
    """The Hugging Face name of a GGUF-named tensor (``blk.0.attn_q.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``).

    Raises:
        KeyError: Not a llama tensor's GGUF name.
    """
    return _rename(gguf, _GGUF_LAYER, _BY_GGUF, "model.layers.{}.{}.weight", "gguf", "hf")
