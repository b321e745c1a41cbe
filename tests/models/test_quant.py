"""Whole-model quantization: structure, per-tensor overrides, dequantizing."""

from __future__ import annotations

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.qtensor import QuantTensor
from tinytelem.models.quant import dequantize_model, quantize_model, rope_tables, tensor_names


def test_quantize_model_structure_and_overrides() -> None:
    m = builtin_model(3)
    qm = quantize_model(m, 4, 32, per_tensor_bits={"wo": 32, "layers.1.w1": 2})
    assert list(qm.tensors) == tensor_names(m.config)
    emb = qm.tensors["tok_embeddings"]
    assert isinstance(emb, QuantTensor) and emb.bits == 8  # embedding stays 8-bit
    wo = qm.tensors["layers.0.wo"]
    assert isinstance(wo, np.ndarray) and wo.dtype == np.float32
    w1 = qm.tensors["layers.1.w1"]
    assert isinstance(w1, QuantTensor) and w1.bits == 2
    w2 = qm.tensors["layers.0.w2"]
    assert isinstance(w2, QuantTensor) and w2.shape == (64, 192)  # 172 padded to 192
    assert np.all(w2.dequantize()[:, 172:] == 0.0)
    assert "output" not in qm.tensors  # shared classifier
    assert qm.param_count() == sum(
        a.size for k, a in vars(m.weights).items() if k != "wcls")
    plain = quantize_model(m, 4, 32)
    assert 4.5 < plain.bits_per_weight() < 6.0  # 4 bits + fp16 scales + 8-bit embedding
    assert qm.bits_per_weight() > plain.bits_per_weight()  # float wo costs more
    cos, sin = rope_tables(m.config)
    assert np.array_equal(qm.tensors["rope.cos"], cos) and cos.shape == (512, 4)
    assert np.allclose(cos**2 + sin**2, 1.0, atol=1e-6)
    with pytest.raises(ModelError, match="per-tensor bits"):
        quantize_model(m, 4, 32, per_tensor_bits={"wq": 5})
    with pytest.raises(ModelError, match="7-bit"):
        quantize_model(m, 7, 32)


def test_dequantize_model_is_close_to_the_float_model(stories260k: object) -> None:
    m = load_checkpoint(str(stories260k))
    qm = quantize_model(m, 8, 64, method="search")
    back = dequantize_model(qm)
    for name in ("wq", "w2", "token_embedding", "rms_att"):
        a, b = getattr(m.weights, name), getattr(back.weights, name)
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) < 0.01 * np.max(np.abs(a)) + 1e-6
    assert back.weights.wcls is back.weights.token_embedding
