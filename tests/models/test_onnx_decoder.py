"""The ONNX decoder step runs in onnxruntime token by token and matches our references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinytelem.models.evaluate import compare_logits, eval_texts, sequence_logits, tokenize_texts
from tinytelem.models.formats import open_model
from tinytelem.models.llama2c import LlamaModel, builtin_model, load_checkpoint
from tinytelem.models.onnx_decoder import write_onnx_decoder
from tinytelem.models.qinfer import QTransformer
from tinytelem.models.quant import dequantize_model, quantize_model
from tinytelem.models.reference import generate
from tinytelem.models.tokenizer import load_tokenizer

ort = pytest.importorskip("onnxruntime")

PROMPTS = ("Once upon a time", "The little dog", "Lily and Ben went to the park")


class OrtStep:
    """onnxruntime behind the StepModel protocol (reset / forward(token, pos) -> logits)."""

    def __init__(self, path: Path, model: LlamaModel) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.config = model.config
        self.past: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        c = self.config
        empty = np.zeros((1, c.n_kv_heads, 0, c.head_dim), np.float32)
        self.past = {f"past_{kind}.{i}": empty for i in range(c.n_layers)
                     for kind in ("key", "value")}

    def forward(self, token: int, pos: int) -> Any:
        feed = {"token": np.array([token], np.int64), "pos": np.array([pos], np.int64),
                **self.past}
        out = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        self.past = {k.replace("present_", "past_"): v for k, v in out.items()
                     if k.startswith("present_")}
        return out["logits"][0]


def greedy(step: OrtStep, ids: list[int], new: int) -> list[int]:
    step.reset()
    out = list(ids)
    for pos in range(len(ids) + new - 1):
        logits = step.forward(out[pos], pos)
        if pos >= len(ids) - 1:
            out.append(int(np.argmax(logits)))
    return out


def test_fp32_step_gives_identical_greedy_tokens(stories260k: Path, tok512: Path,
                                                 tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    path = tmp_path / "step.onnx"
    write_onnx_decoder(m, path)
    step = OrtStep(path, m)
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        assert greedy(step, ids, 100) == generate(m, ids, len(ids) + 99), prompt
    # The graph's weights read back as the model's (q/k rows in llama2.c order).
    back = open_model(path)
    assert back.unsupported_ops == []
    assert np.array_equal(back.model.weights.wq, m.weights.wq)


@pytest.mark.parametrize(("bits", "symmetric"), [(4, True), (4, False), (3, True), (2, True),
                                                 (8, True)])
def test_quantized_step_matches_the_reference_of_its_weights(bits: int, symmetric: bool,
                                                             tmp_path: Path) -> None:
    m = builtin_model(7)
    qm = quantize_model(m, bits, 32, symmetric)
    path = tmp_path / "step.onnx"
    infos = write_onnx_decoder(qm, path)
    assert {i.qtype for i in infos} >= {f"mnb{4 if bits == 3 else bits}"}
    step = OrtStep(path, m)
    deq = dequantize_model(qm)
    ids = [1, 72, 101, 108, 108, 111]
    seq = generate(deq, ids, len(ids) + 39)
    got, want = sequence_logits(step, seq), sequence_logits(deq, seq)
    assert np.abs(got - want).max() < 1e-3
    assert greedy(step, ids, 40) == seq


@pytest.mark.slow
def test_4bit_step_agrees_with_the_integer_engine_as_documented(stories260k: Path,
                                                                tok512: Path,
                                                                tmp_path: Path) -> None:
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512)
    qm = quantize_model(m, 4, 32, True)
    path = tmp_path / "step.onnx"
    write_onnx_decoder(qm, path)
    seqs = tokenize_texts(tok, eval_texts(), m.config.seq_len, 1000)
    targets = [np.asarray(s[1:], dtype=np.int64) for s in seqs]
    step, engine = OrtStep(path, m), QTransformer(qm)
    r = compare_logits("onnx", [sequence_logits(engine, s) for s in seqs],
                       [sequence_logits(step, s) for s in seqs], targets)
    # Measured 98.9% top-1, mean KLD 6.9e-4 (docs/model-formats.md); onnxruntime's float
    # kernels may sum in another order on another CPU, hence bounds rather than the digits.
    assert r.tokens == 1000 and r.top1 >= 0.98 and r.kld_mean < 1e-3
