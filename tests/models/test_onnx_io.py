"""ONNX reading: foreign layouts, bad files, names and bit unpacking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.gguf_io import meta_to_hf, tensor_items
from tinytelem.models.llama2c import builtin_model
from tinytelem.models.onnx_io import canonical_onnx_name, read_onnx, unpack_bits
from tinytelem.models.onnx_write import write_onnx

onnx = pytest.importorskip("onnx")

def _foreign_graph(path: Path, permute: bool) -> dict[str, np.ndarray]:
    """A torch-export-like fp32 graph: HF names, MatMul B stored (in, out), HF q/k order."""
    from onnx import TensorProto, helper, numpy_helper

    m = builtin_model(6)
    c = m.config
    hf = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight":
          "model.norm.weight"}
    kinds = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    inits, nodes = [], []
    items = tensor_items(m)
    for name, arr in items.items():
        if name.startswith("blk."):
            i, kind = name.split(".")[1:3]
            hname = f"model.layers.{i}.{kinds[kind]}.weight"
        else:
            hname = hf[name]
        a = arr
        if permute and ".attn_q." in name:
            a = meta_to_hf(a, c.n_heads)
        if permute and ".attn_k." in name:
            a = meta_to_hf(a, c.n_kv_heads)
        if a.ndim == 2 and name != "token_embd.weight":
            inits.append(numpy_helper.from_array(np.ascontiguousarray(a.T), hname))
            nodes.append(helper.make_node("MatMul", ["x", hname], [f"{hname}.y"],
                                          name=f"/{hname}/MatMul"))
        else:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(a), hname))
    nodes.append(helper.make_node("Gather", ["model.embed_tokens.weight", "t"], ["e"]))
    nodes.append(helper.make_node("Sin", ["e"], ["s"]))
    nodes.append(helper.make_node("Einsum", ["s", "s"], ["z"], equation="ij,ij->ij"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "t", TensorProto.INT64, [1])], [helper.make_tensor_value_info(
            "z", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph)
    helper.set_model_props(proto, {"num_attention_heads": "8", "num_key_value_heads": "4",
                                   "max_position_embeddings": "512"})
    onnx.save(proto, str(path))
    return items


def test_foreign_hf_graph_is_unpermuted(tmp_path: Path) -> None:
    want = _foreign_graph(tmp_path / "hf.onnx", permute=True)
    got = read_onnx(tmp_path / "hf.onnx")
    for name, arr in tensor_items(got.model).items():
        assert np.array_equal(arr, want[name]), name
    assert got.unsupported_ops == ["Einsum"]
    assert got.model.config.n_kv_heads == 4


def test_missing_heads_and_bad_files(tmp_path: Path) -> None:
    from onnx import helper

    path = tmp_path / "nohead.onnx"
    _foreign_graph(path, permute=False)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="num_attention_heads"):
        read_onnx(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX"):
        read_onnx(tmp_path / "junk.onnx")
    empty = helper.make_model(helper.make_graph([], "g", [], []))
    onnx.save(empty, str(tmp_path / "empty.onnx"))
    with pytest.raises(ModelError, match="token embedding"):
        read_onnx(tmp_path / "empty.onnx")
    with pytest.raises(ModelError, match="style"):
        write_onnx(builtin_model(0), tmp_path / "x.onnx", style="nope")


def test_names_and_bit_unpacking() -> None:
    assert canonical_onnx_name("model.layers.3.self_attn.k_proj.weight") == "blk.3.attn_k.weight"
    assert canonical_onnx_name("/model/layers.0/attn/o_proj/MatMul_Q4") == \
        "blk.0.attn_output.weight"
    assert canonical_onnx_name("layers.2.feed_forward.w2.weight") == "blk.2.ffn_down.weight"
    assert canonical_onnx_name("blk.1.ffn_up.weight") == "blk.1.ffn_up.weight"
    assert canonical_onnx_name("lm_head.weight") == "output.weight"
    assert canonical_onnx_name("model.norm.weight") == "output_norm.weight"
    assert canonical_onnx_name("tok_embeddings.weight") == "token_embd.weight"
    assert canonical_onnx_name("something_else") is None
    # 3-bit codes 0..7 packed low-bits-first: 8 codes in 3 bytes.
    codes = np.arange(8, dtype=np.uint8)
    word = sum(int(c) << (3 * i) for i, c in enumerate(codes))
    packed = np.frombuffer(word.to_bytes(3, "little"), dtype=np.uint8)
    assert np.array_equal(unpack_bits(packed, 3, 8), codes)
    assert np.array_equal(unpack_bits(np.array([0x65], np.uint8), 4, 2), [5, 6])
