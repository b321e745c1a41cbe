"""The one tensor-name table: native (.tlm) <-> GGUF <-> Hugging Face, in file order."""

from __future__ import annotations

import pytest

from tinytelem.models import names
from tinytelem.models.gguf_io import canonical_names, tensor_items
from tinytelem.models.llama2c import BUILTIN_SHAPES, builtin_model
from tinytelem.models.onnx_io import canonical_onnx_name
from tinytelem.models.quant import tensor_names


@pytest.mark.parametrize("shape", ["260k", "1m"])
def test_native_and_gguf_names_pair_up_in_file_order(shape: str) -> None:
    cfg = BUILTIN_SHAPES[shape]
    native = names.native_names(cfg)
    assert tensor_names(cfg) == [*native, "rope.cos", "rope.sin"]
    assert canonical_names(cfg) == [names.native_to_gguf(n) for n in native]
    assert [names.gguf_to_native(g) for g in canonical_names(cfg)] == native
    assert list(tensor_items(builtin_model(0, shape))) == canonical_names(cfg)


def test_hugging_face_names_and_onnx_spellings() -> None:
    assert names.native_to_gguf("layers.3.wq") == "blk.3.attn_q.weight"
    assert names.native_to_gguf("layers.0.w2") == "blk.0.ffn_down.weight"
    assert names.hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert names.hf_name("blk.1.ffn_norm.weight") == \
        "model.layers.1.post_attention_layernorm.weight"
    assert names.hf_name("output.weight") == "lm_head.weight"
    for t in names.LAYER:  # every spelling of a layer tensor reads back as its GGUF name
        want = f"blk.2.{t.gguf}.weight"
        assert canonical_onnx_name(names.hf_name(want)) == want
        assert canonical_onnx_name(f"layers.2.{t.native}") == want
    for bad in ("layers.0.wx", "blk.0.nope.weight", "rope.cos"):
        with pytest.raises(KeyError):
            names.gguf_to_native(bad) if bad.startswith("blk") else names.native_to_gguf(bad)
