"""Per-tensor group sizes in quantize_model (what an optimize plan asks for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models import qinfer
from tinytelem.models.llama2c import builtin_model
from tinytelem.models.qtensor import QuantTensor
from tinytelem.models.quant import dequantize_model, quantize_model
from tinytelem.models.tlm import read_tlm, write_tlm


def test_group_overrides_by_name_and_kind(tmp_path: Path) -> None:
    m = builtin_model(3)
    qm = quantize_model(m, 4, 32, per_tensor_bits={"w2": 3},
                        per_tensor_group={"wq": 64, "layers.1.w2": 16, "tok_embeddings": 16})
    t = qm.tensors
    assert isinstance(t["layers.0.wq"], QuantTensor) and t["layers.0.wq"].group_size == 64
    assert isinstance(t["layers.0.wk"], QuantTensor) and t["layers.0.wk"].group_size == 32
    w2 = t["layers.1.w2"]
    assert isinstance(w2, QuantTensor) and (w2.bits, w2.group_size) == (3, 16)
    # hidden_dim 172 padded to the tensor's own group: 176 for 16, 192 for 32
    assert w2.shape[1] == 176
    other = t["layers.0.w2"]
    assert isinstance(other, QuantTensor) and other.shape[1] == 192
    emb = t["tok_embeddings"]
    assert isinstance(emb, QuantTensor) and (emb.bits, emb.group_size) == (8, 16)
    assert qm.metadata["per_tensor_group"] == {"wq": 64, "layers.1.w2": 16,
                                               "tok_embeddings": 16}
    # smaller groups cost bytes: the same bits at group 64 are smaller than at 32
    q32 = quantize_model(m, 4, 32)
    q64 = quantize_model(m, 4, 32, per_tensor_group={"wq": 64})
    assert q64.weight_bytes() < q32.weight_bytes()
    # .tlm keeps every tensor's group, and the integer engine runs it
    write_tlm(qm, tmp_path / "g.tlm")
    back = read_tlm(tmp_path / "g.tlm")
    for name, tensor in qm:
        b = back.tensors[name]
        if isinstance(tensor, QuantTensor):
            assert isinstance(b, QuantTensor) and b.group_size == tensor.group_size
            assert np.array_equal(b.q, tensor.q)
    ids = qinfer.generate(back, [1, 20, 30], 12)
    assert ids == qinfer.generate(qm, [1, 20, 30], 12) and len(ids) > 3
    # the float view crops each tensor's own padding
    assert dequantize_model(qm).weights.w2.shape == m.weights.w2.shape


@pytest.mark.parametrize("bad", [12, 20, 512, 0])
def test_invalid_group_overrides(bad: int) -> None:
    with pytest.raises(ModelError, match=f"group size wq={bad}"):
        quantize_model(builtin_model(0), 4, 32, per_tensor_group={"wq": bad})


def test_float_tensors_ignore_group_override() -> None:
    qm = quantize_model(builtin_model(0), 4, 32, per_tensor_bits={"wo": 32},
                        per_tensor_group={"wo": 64})
    wo = qm.tensors["layers.0.wo"]
    assert not isinstance(wo, QuantTensor) and wo.dtype == np.float32
