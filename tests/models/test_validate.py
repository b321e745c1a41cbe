"""Validation: formats opened, memory model, verdicts and remedies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.cost import kv_cache_bytes
from tinytelem.models.formats import open_model
from tinytelem.models.gguf_io import write_gguf
from tinytelem.models.llama2c import builtin_model, serialize_checkpoint
from tinytelem.models.validate import (
    family_of,
    memory_need,
    render_report,
    validate_model,
)
from tinytelem.platforms import get_platform


def test_fp32_model_on_rp2040_needs_shorter_context(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(serialize_checkpoint(builtin_model(0)))
    lm = open_model(p)
    rep = validate_model(lm, "rp2040", 512)
    assert rep.flash_ok and not rep.ram_ok and not rep.fits
    assert rep.need is not None
    assert rep.need.kv_cache == kv_cache_bytes(lm.model.config, 512, 4) == 655360
    assert rep.type_histogram == {"f32": 47}
    assert rep.bits_per_weight == pytest.approx(32.0)
    remedy = " ".join(rep.remedies)
    assert "--context 512 with int8 KV" in remedy
    short = int(remedy.split("--context ")[1].split()[0])
    assert validate_model(lm, "rp2040", short).ram_ok
    assert not validate_model(lm, "rp2040", short + 1).ram_ok
    text = render_report(rep)
    assert "DOES NOT FIT" in text and "verdict: does NOT fit" in text
    json.dumps(rep.to_dict())


def test_quantized_gguf_fits_esp32s3_and_flags_types(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    write_gguf(builtin_model(0), p, "q4_0")
    rep = validate_model(open_model(p), "esp32s3", 256, kv_bits=8)
    assert rep.fits
    assert rep.unsupported_types == ["q4_0"]
    assert any("not run natively" in n for n in rep.notes)
    assert rep.placement["kv_cache"] == "sram"
    assert rep.bits_per_weight < 10


def test_flash_remedy_and_linux(tmp_path: Path) -> None:
    lm = open_model("builtin:1")
    rep = validate_model(lm, "stm32f4", 64)
    assert not rep.flash_ok
    assert any("--bits 8" in r for r in rep.remedies)
    assert family_of(get_platform("stm32f4")) == "cortex-m"
    pi = validate_model(lm, "rpi4")
    assert pi.fits and pi.placement["weights"] == "dram"
    assert family_of(get_platform("rpi4")) == "linux"
    assert family_of(get_platform("bl602")) == "riscv"
    assert family_of(get_platform("esp32")) == "esp32"
    need = memory_need(lm.model.config, 1000, get_platform("esp32"), 10, 1)
    assert need.flash == 1000 + need.code and need.ram > need.kv_cache
    no_platform = validate_model(lm)
    assert no_platform.need is None and "verdict" not in render_report(no_platform)


def test_llama2c_v2_and_tlm_types(tmp_path: Path) -> None:
    from tinytelem.models.quant import quantize_model
    from tinytelem.models.tlm import write_tlm

    p = tmp_path / "m2.bin"
    p.write_bytes(serialize_checkpoint(builtin_model(0), version=2, group_size=64))
    lm = open_model(p)
    assert "int8" in {t.qtype for t in lm.tensors}
    t = tmp_path / "m.tlm"
    write_tlm(quantize_model(builtin_model(0), 4, 32), t)
    lt = open_model(t)
    assert lt.fmt == "tlm" and lt.qmodel is not None
    assert {"int4", "int8", "f32"} <= {x.qtype for x in lt.tensors}
    assert validate_model(lt).unsupported_types == []


def test_errors() -> None:
    lm = open_model("builtin:0")
    with pytest.raises(ConfigError, match="kv-bits"):
        validate_model(lm, "esp32", kv_bits=4)
    with pytest.raises(ConfigError, match="outside"):
        validate_model(lm, "esp32", context=0)
    with pytest.raises(ConfigError):
        validate_model(lm, "no-such-chip")
    with pytest.raises(ModelError, match="does not exist"):
        open_model("missing.gguf")
    with pytest.raises(ModelError, match="builtin:SEED"):
        open_model("builtin:x")
