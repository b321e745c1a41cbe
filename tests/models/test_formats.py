"""One opener for every format: magic before extension, storage bits, one tokenizer search."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.formats import open_model, resolve_tokenizer, storage_bits
from tinytelem.models.gguf_io import TensorInfo, tensor_items, write_gguf
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.quant import quantize_model
from tinytelem.models.tlm import write_tlm
from tinytelem.models.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer


def test_gguf_generate_uses_its_stored_tokenizer(tmp_path: Path, stories260k: Path,
                                                  tok512: Path) -> None:
    # The GGUF sits alone in its folder: the only tokenizer it can use is the one inside it.
    gguf = tmp_path / "alone" / "stories260K-f32.gguf"
    gguf.parent.mkdir()
    write_gguf(load_checkpoint(stories260k), gguf, "f32", tokenizer=load_tokenizer(tok512, 512))
    lm = open_model(gguf)
    assert isinstance(lm.tokenizer, Tokenizer) and lm.weight_bits == 32
    res = CliRunner().invoke(cli, ["model", "generate", str(gguf), "--prompt",
                                   "Once upon a time", "--steps", "64"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Once upon a time, there was a little girl named Lily.")


def test_model_without_tokenizer_is_an_error_naming_the_remedy(tmp_path: Path,
                                                                stories260k: Path) -> None:
    alone = tmp_path / "stories260K.bin"
    shutil.copy(stories260k, alone)
    res = CliRunner().invoke(cli, ["model", "generate", str(alone), "--prompt", "Once"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError)
    assert "--tokenizer tok512.bin" in str(res.exception)
    gguf = tmp_path / "no-tok.gguf"
    write_gguf(load_checkpoint(stories260k), gguf, "q8_0")
    with pytest.raises(ConfigError, match="has no tokenizer"):
        resolve_tokenizer(open_model(gguf))


def test_tokenizer_beside_the_model_and_explicit_one(tmp_path: Path, stories260k: Path,
                                                     tok512: Path) -> None:
    assert isinstance(open_model(stories260k).tokenizer, Tokenizer)  # tok512.bin beside it
    alone = tmp_path / "m.bin"
    shutil.copy(stories260k, alone)
    lm = open_model(alone)
    assert lm.tokenizer is None
    assert resolve_tokenizer(lm, tok512).vocab_size == 512
    with pytest.raises(ModelError, match="tokenizer has 512 tokens"):
        resolve_tokenizer(open_model("builtin:8m"), tok512)


def test_generated_models_and_their_files_use_byte_tokens(tmp_path: Path) -> None:
    qm = quantize_model(builtin_model(3), 4, 32)
    path = tmp_path / "b.tlm"
    write_tlm(qm, path)
    lm = open_model(path)
    assert isinstance(lm.tokenizer, ByteTokenizer) and lm.qmodel is not None
    assert lm.runnable is lm.qmodel and lm.weight_bits == 4


def test_magic_beats_extension_and_unknown_extensions_are_refused(tmp_path: Path) -> None:
    qm = quantize_model(builtin_model(0), 8, 32)
    misnamed = tmp_path / "really-a-tlm.bin"
    write_tlm(qm, misnamed)
    lm = open_model(misnamed)
    assert lm.fmt == "tlm" and lm.weight_bits == 8
    (tmp_path / "m.xyz").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"unknown model format '\.xyz'; supported: \.bin"):
        open_model(tmp_path / "m.xyz")
    with pytest.raises(ModelError, match="does not exist"):
        open_model(tmp_path / "absent.tlm")


def test_storage_bits_is_the_width_of_most_matrix_weights() -> None:
    def t(name: str, qtype: str, n: int) -> TensorInfo:
        return TensorInfo(name, (n, 64), qtype, n)

    assert storage_bits([t("token_embd.weight", "q8_0", 1000), t("blk.0.attn_q.weight",
                                                                  "q4_0", 64)]) == 4
    assert storage_bits([t("a", "q2_k", 10), t("b", "q3_k", 30)]) == 3
    assert storage_bits([t("a", "f16", 10)]) == 16
    assert storage_bits([t("a", "mnb4", 10), t("b", "uint8", 5)]) == 4
    assert storage_bits([]) == 32
    assert open_model("builtin").weight_bits == 4  # generated: costed as the demo's 4-bit


def test_gguf_with_a_foreign_tokenizer_says_so(tmp_path: Path) -> None:
    import gguf

    m = builtin_model(5)
    path = tmp_path / "bpe.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    c = m.config
    for add, value in ((w.add_context_length, c.seq_len), (w.add_embedding_length, c.dim),
                       (w.add_feed_forward_length, c.hidden_dim),
                       (w.add_block_count, c.n_layers), (w.add_head_count, c.n_heads),
                       (w.add_head_count_kv, c.n_kv_heads)):
        add(value)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    for name, arr in tensor_items(m).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    lm = open_model(path)
    assert lm.tokenizer is None
    with pytest.raises(ConfigError, match=r"tokenizer.ggml.model = 'gpt2'.*--tokenizer"):
        resolve_tokenizer(lm)
