"""Hugging Face ``LlamaForCausalLM`` folders: round trips, shards, BF16, untied classifiers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.formats import open_model
from tinytelem.models.gguf_io import tensor_items
from tinytelem.models.hf_io import read_hf, write_hf
from tinytelem.models.llama2c import LlamaModel, LlamaWeights, builtin_model, load_checkpoint
from tinytelem.models.reference import generate
from tinytelem.models.tokenizer import load_tokenizer

st = pytest.importorskip("safetensors.numpy", reason="the hf extra is not installed")

PROMPTS = ("Once upon a time", "The little dog", "Lily and Ben went to the park")


def test_stories260k_round_trip_gives_identical_greedy_tokens(stories260k: Path, tok512: Path,
                                                               tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    write_hf(m, tmp_path / "hf", tok)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 4
    lm = open_model(tmp_path / "hf")
    assert lm.fmt == "hf" and lm.files == ["config.json", "model.safetensors", "tokenizer.json"]
    assert lm.tokenizer is not None
    for name, arr in tensor_items(m).items():
        assert np.array_equal(tensor_items(lm.model)[name], arr), name
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        assert lm.tokenizer.encode(prompt) == ids
        want = generate(m, ids, len(ids) + 99)
        assert len(want) == len(ids) + 100  # 100 generated tokens, no early stop
        assert generate(lm.model, ids, len(ids) + 99) == want
        assert lm.tokenizer.decode_all(want) == tok.decode_all(want)


def test_q_and_k_rows_are_stored_in_hf_rotate_half_order(tmp_path: Path) -> None:
    m = builtin_model(2)
    write_hf(m, tmp_path / "hf")
    stored = st.load_file(str(tmp_path / "hf" / "model.safetensors"))
    wk = m.weights.wk[0]  # (kv_dim, dim): 4 kv heads of 8 rows, adjacent pairs
    hd = m.config.head_dim
    hf_k = stored["model.layers.0.self_attn.k_proj.weight"]
    # HF's head 0 holds the even rows (first of each pair) then the odd rows.
    assert np.array_equal(hf_k[: hd // 2], wk[0:hd:2])
    assert np.array_equal(hf_k[hd // 2 : hd], wk[1:hd:2])


def _untied(m: LlamaModel) -> LlamaModel:
    rng = np.random.default_rng(5)
    wcls = rng.standard_normal(m.weights.wcls.shape).astype(np.float32)
    weights = LlamaWeights(**{**vars(m.weights), "wcls": wcls})
    return LlamaModel(replace(m.config, shared_classifier=False), weights, name="untied",
                      sha256="", source="test")


def test_untied_classifier_sharded_bf16(tmp_path: Path) -> None:
    m = _untied(builtin_model(4))
    write_hf(m, tmp_path / "one")
    tensors = st.load_file(str(tmp_path / "one" / "model.safetensors"))
    assert "lm_head.weight" in tensors
    # Re-save as two BF16 shards with an index, as large checkpoints come.
    out = tmp_path / "sharded"
    out.mkdir()
    (out / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    keys = sorted(tensors)
    wmap = {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        fname = f"model-0000{n + 1}-of-00002.safetensors"
        data = {}
        for k in part:
            bits = tensors[k].view(np.uint32)
            data[k] = (bits >> 16).astype(np.uint16)  # BF16: the high half, truncated
            wmap[k] = fname
        _save_bf16(data, out / fname)
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    h = read_hf(out)
    assert not h.model.config.shared_classifier
    assert h.files == ["config.json", "model-00001-of-00002.safetensors",
                       "model-00002-of-00002.safetensors"]
    assert {t.qtype for t in h.tensors} == {"bf16"}
    trunc = (tensors["lm_head.weight"].view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert np.array_equal(h.model.weights.wcls, trunc)


def _save_bf16(arrays: dict[str, np.ndarray], path: Path) -> None:
    header: dict[str, object] = {}
    blobs = []
    off = 0
    for k, a in arrays.items():
        b = a.astype("<u2").tobytes()
        header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_missing_tensor_and_other_architecture_are_one_line_errors(tmp_path: Path) -> None:
    write_hf(builtin_model(1), tmp_path / "hf")
    cfg_path = tmp_path / "hf" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(ModelError, match="MistralForCausalLM is not supported; tinytelem reads "
                                         "LlamaForCausalLM"):
        read_hf(tmp_path / "hf")
    cfg_path.write_text(json.dumps({**cfg, "rope_theta": 500000.0}))
    with pytest.raises(ModelError, match=r"rope_theta = 500000 is not supported"):
        read_hf(tmp_path / "hf")
    cfg_path.write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 1}))
    with pytest.raises(ModelError, match=r"model\.layers\.5\.input_layernorm\.weight is missing"):
        read_hf(tmp_path / "hf")


@pytest.mark.slow
def test_transformers_llama_generates_the_same_greedy_tokens(stories260k: Path, tok512: Path,
                                                              tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (not in the dev extra: "
                                "pip install torch transformers to run this check)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    write_hf(m, tmp_path / "hf", tok)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"),
                                                       torch_dtype=torch.float32).eval()
    fast = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        assert fast(prompt)["input_ids"] == ids
        want = generate(m, ids, len(ids) + 99)
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=100, do_sample=False,
                              min_new_tokens=100)
        assert out[0].tolist() == want, prompt
