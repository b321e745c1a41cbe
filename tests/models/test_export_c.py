"""C export compiles with the host gcc; a C reader written from the spec agrees bit for bit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models import qinfer
from tinytelem.models.export_c import c_source, export_c
from tinytelem.models.llama2c import builtin_model
from tinytelem.models.quant import QuantizedModel, quantize_model
from tinytelem.models.tlm import serialize_tlm, write_tlm

PROBE = Path(__file__).resolve().parent / "c" / "tlm_probe.c"
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc missing; run bash scripts/setup-system.sh")

MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "model.h"
int main(void) {
    if (tlm_model_len != TLM_MODEL_SIZE || memcmp(tlm_model, "TLM1", 4) != 0) return 1;
    if (((unsigned long)(const void *)tlm_model) % TLM_MODEL_ALIGN) return 2;
    printf("%u %02x\n", (unsigned)tlm_model_len, tlm_model[tlm_model_len - 1]);
    return 0;
}
"""


def _run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def qmodel() -> QuantizedModel:
    return quantize_model(builtin_model(5), 4, 32)


@needs_gcc
def test_c_export_compiles_links_and_holds_the_image(tmp_path: Path, qmodel: QuantizedModel
                                                     ) -> None:
    image = serialize_tlm(qmodel, 32)
    c_path, h_path = export_c(image, tmp_path / "model.c", alignment=32)
    assert h_path.name == "model.h"
    text = c_path.read_text()
    assert '__attribute__((aligned(32), section(".rodata.tlm")))' in text
    assert "const uint32_t tlm_model_len" in text
    (tmp_path / "main.c").write_text(MAIN)
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    _run([GCC or "gcc", "-c", *flags, "model.c"], tmp_path)
    _run([GCC or "gcc", *flags, "-o", "check", "main.c", "model.c"], tmp_path)
    out = _run([str(tmp_path / "check")], tmp_path).split()
    assert out == [str(len(image)), f"{image[-1]:02x}"]
    # The section attribute put the bytes where a linker script can find them.
    objdump = shutil.which("objdump")
    if objdump:
        assert ".rodata.tlm" in _run([objdump, "-h", "model.o"], tmp_path)


def test_c_source_rejects_bad_input(tmp_path: Path, qmodel: QuantizedModel) -> None:
    with pytest.raises(ModelError, match="C identifier"):
        c_source(serialize_tlm(qmodel), symbol="1bad")
    with pytest.raises(ModelError, match=r"not a \.tlm"):
        c_source(b"\0" * 300)
    c_path, _ = export_c(qmodel, tmp_path / "m.c", symbol="my_model")
    assert "my_model_len" in c_path.read_text()
    with pytest.raises(ModelError, match="cannot write"):
        export_c(qmodel, tmp_path / "missing" / "m.c")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GCC is None:
        pytest.skip("gcc missing; run bash scripts/setup-system.sh")
    out = tmp_path_factory.mktemp("probe") / "tlm_probe"
    _run([GCC, "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
          "-o", str(out), str(PROBE), "-lm"], out.parent)
    return out


def _hex_floats(text: str) -> np.ndarray:
    return np.array([int(v, 16) for v in text.split()], dtype=np.uint32)


@pytest.mark.parametrize(("bits", "sym"), [(2, True), (3, False), (3, True), (4, True),
                                           (8, False)])
def test_c_reader_matvec_is_bit_exact(probe: Path, tmp_path: Path, bits: int, sym: bool
                                      ) -> None:
    qm = quantize_model(builtin_model(bits), bits, 32, symmetric=sym,
                        per_tensor_bits={"wo": 32})
    write_tlm(qm, tmp_path / "m.tlm")
    assert _run([str(probe), "check", str(tmp_path / "m.tlm")], tmp_path).split() == \
        ["ok", str(len(qm.tensors))]
    rng = np.random.default_rng(bits)
    for name, n in (("layers.1.w2", 172), ("layers.0.wq", 64), ("tok_embeddings", 64),
                    ("layers.2.wo", 64)):
        x = (rng.standard_normal(n) * rng.uniform(0.01, 10)).astype(np.float32)
        x.tofile(tmp_path / "x.f32")
        c_out = _run([str(probe), "matvec", str(tmp_path / "m.tlm"), name,
                      str(tmp_path / "x.f32")], tmp_path)
        host = qinfer.matvec(qinfer._Matrix(qm.tensors[name]), x)
        assert np.array_equal(_hex_floats(c_out), host.view(np.uint32)), name


def test_c_expf_is_bit_exact(probe: Path, tmp_path: Path) -> None:
    x = np.concatenate([np.linspace(-100, 100, 50_001, dtype=np.float32),
                        np.float32([0.0, -0.0, 88.0, 88.5, -86.0, -86.0001, 1e-30])])
    x.tofile(tmp_path / "x.f32")
    c_out = _run([str(probe), "exp", str(tmp_path / "x.f32")], tmp_path)
    assert np.array_equal(_hex_floats(c_out), qinfer.tt_expf(x).view(np.uint32))


def test_c_reader_rejects_a_bad_crc(probe: Path, tmp_path: Path, qmodel: QuantizedModel
                                    ) -> None:
    data = bytearray(serialize_tlm(qmodel))
    data[500] ^= 0x40
    (tmp_path / "bad.tlm").write_bytes(bytes(data))
    done = subprocess.run([str(probe), "check", str(tmp_path / "bad.tlm")], check=False,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "bad crc" in done.stdout
