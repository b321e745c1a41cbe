"""Export -> load round trips of the generated 1 M model through .bin, .tlm, GGUF and ONNX.

test_tlm.py covers .tlm on the 260K shape, test_gguf_io.py and test_onnx_io.py GGUF/ONNX
weights on it and fp32 greedy tokens of stories260K; here every format carries a wider model
(hidden 344: not a whole number of 32-weight groups, so padding and short last blocks are
exercised) and the check is the same each time: identical weights and identical greedy tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.models import qinfer
from tinytelem.models.formats import open_model
from tinytelem.models.gguf_io import read_gguf, tensor_items, write_gguf
from tinytelem.models.llama2c import (
    LlamaModel,
    builtin_model,
    load_checkpoint,
    serialize_checkpoint,
)
from tinytelem.models.quant import dequantize_model, quantize_model
from tinytelem.models.reference import generate
from tinytelem.models.tlm import read_tlm, write_tlm

PROMPT = [1, 72, 101, 108, 108, 111]
STEPS = 24


@pytest.fixture(scope="module")
def m1() -> LlamaModel:
    return builtin_model(11, "1m")


def _same_weights(a: LlamaModel, b: LlamaModel) -> None:
    assert a.config == b.config
    ta, tb = tensor_items(a), tensor_items(b)
    assert ta.keys() == tb.keys()
    for name, arr in ta.items():
        assert np.array_equal(arr, tb[name]), name


@pytest.mark.parametrize("version", [0, 1])
def test_llama2c_bin(m1: LlamaModel, tmp_path: Path, version: int) -> None:
    path = tmp_path / f"m{version}.bin"
    path.write_bytes(serialize_checkpoint(m1, version))
    back = load_checkpoint(path)
    _same_weights(m1, back)
    assert generate(back, PROMPT, STEPS) == generate(m1, PROMPT, STEPS)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_tlm_integer_tokens(m1: LlamaModel, tmp_path: Path, bits: int) -> None:
    qm = quantize_model(m1, bits, 32, symmetric=bits != 3)
    path = tmp_path / f"m{bits}.tlm"
    write_tlm(qm, path)
    back = read_tlm(path)
    _same_weights(dequantize_model(qm), dequantize_model(back))
    assert qinfer.generate(back, PROMPT, STEPS) == qinfer.generate(qm, PROMPT, STEPS)
    via_cli = open_model(path)  # what `model validate/eval` see
    _same_weights(dequantize_model(qm), via_cli.model)


@pytest.mark.parametrize("qtype", ["f32", "q8_0", "q4_0"])
def test_gguf(m1: LlamaModel, tmp_path: Path, qtype: str) -> None:
    import gguf

    path = tmp_path / f"m-{qtype}.gguf"
    write_gguf(m1, path, qtype)
    back = read_gguf(path).model
    if qtype == "f32":
        _same_weights(m1, back)
        assert generate(back, PROMPT, STEPS) == generate(m1, PROMPT, STEPS)
        return
    # Quantized: what we read is exactly gguf-py's dequantization of the stored blocks, and
    # a second write/read of that model reproduces both weights and tokens.
    by_name = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for name, arr in tensor_items(back).items():
        t = by_name[name]
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(arr.shape)
        assert np.array_equal(arr, want), name
    again = tmp_path / f"again-{qtype}.gguf"
    write_gguf(back, again, qtype)
    back2 = read_gguf(again).model
    _same_weights(back, back2)
    assert generate(back2, PROMPT, STEPS) == generate(back, PROMPT, STEPS)


@pytest.mark.parametrize(("bits", "style"), [(8, "qdq"), (4, "qdq"), (2, "qdq"),
                                              (4, "matmulnbits"), (3, "matmulnbits")])
def test_onnx_greedy_tokens(m1: LlamaModel, tmp_path: Path, bits: int, style: str) -> None:
    pytest.importorskip("onnx")
    from tinytelem.models.onnx_io import read_onnx
    from tinytelem.models.onnx_write import write_onnx

    qm = quantize_model(m1, bits, 32)
    path = tmp_path / f"m-{style}-{bits}.onnx"
    write_onnx(qm, path, bits, 32, style=style)
    back = read_onnx(path).model
    want = dequantize_model(qm)
    _same_weights(want, back)
    assert generate(back, PROMPT, STEPS) == generate(want, PROMPT, STEPS)
