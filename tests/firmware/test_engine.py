"""The llama engine in C (firmware/engine/) against the Python integer reference (qinfer).

Greedy and sampled token ids must be *identical* to ``qinfer.generate`` for the same ``.tlm``:
natively (the host build, spoken to over stdio) and under QEMU (the real firmware image, real
UART, ``-icount``). Kernels, the ``.tlm`` reader and the arena check are also probed directly.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from click.testing import CliRunner

from tests.firmware.helpers import FIRMWARE, compile_c, native_run, need_tools, qemu_run
from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError
from tinytelem.firmware.build import build, plan_model
from tinytelem.firmware.targets import get_target
from tinytelem.models.llama2c import load_checkpoint
from tinytelem.models.qinfer import generate, tt_expf
from tinytelem.models.quant import QuantTensor, quantize_model
from tinytelem.models.reference import generate as float_generate
from tinytelem.models.tlm import read_tlm, write_tlm
from tinytelem.models.tokenizer import load_tokenizer
from tinytelem.protocol import codec
from tinytelem.protocol.codec import FrameDecoder, encode_frame
from tinytelem.protocol.messages import (
    Hello,
    InferEnd,
    Log,
    Memory,
    Run,
    SpanBegin,
    SpanEnd,
    Token,
)

PROMPT = "Once upon a time"
QEMU_GENERATED = 8

# name -> quantize_model keyword arguments
VARIANTS: dict[str, dict[str, Any]] = {
    "q8": {"bits": 8, "group_size": 32},
    "q4": {"bits": 4, "group_size": 32},
    "q2": {"bits": 2, "group_size": 32},
    "q3": {"bits": 3, "group_size": 32},
    "q4a": {"bits": 4, "group_size": 32, "symmetric": False},
    "q8a": {"bits": 8, "group_size": 64, "symmetric": False},
    "mixed": {"bits": 4, "group_size": 16, "per_tensor_bits": {"wo": 32, "w2": 2, "w1": 3}},
    # every matrix and the embedding float32: llama2.c's fp32 model, run by the f32 path
    "f32": {"bits": 8, "group_size": 32, "per_tensor_bits": dict.fromkeys(
        ("tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w2", "w3"), 32)},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models and builds shared by the tests of this module (quantizing takes a moment)."""
    return tmp_path_factory.mktemp("engine")


def _tlm(work: Path, checkpoint: Path, variant: str) -> Path:
    path = work / f"{variant}.tlm"
    if not path.is_file():
        write_tlm(quantize_model(load_checkpoint(checkpoint), **VARIANTS[variant]), path)
    return path


def _prompt(tok512: Path) -> list[int]:
    return load_tokenizer(tok512).encode(PROMPT, bos=True)


def _reference(tlm: Path, prompt: Sequence[int], generated: int, temperature: float = 0.0,
               seed: int = 42) -> list[int]:
    return generate(read_tlm(tlm), prompt, len(prompt) - 1 + generated,
                    temperature=temperature, seed=seed)


def _tokens(frames: list[Any]) -> list[int]:
    return [f.message.token_id for f in frames if isinstance(f.message, Token)]


# ---- natively ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant", ["q8", "q4", "q2", "q3", "q4a", "q8a", "mixed"])
async def test_native_greedy_tokens_equal_qinfer(variant: str, work: Path, stories260k: Path,
                                                 tok512: Path) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, variant)
    prompt = _prompt(tok512)
    want = _reference(tlm, prompt, 24)
    exe = build("native", tlm, build_dir=work / f"native-{variant}").elf
    with trio.fail_after(60):
        frames = await native_run(exe, Run(5, 42, 0.0, 24, tuple(prompt)))
    assert _tokens(frames) == want
    end = frames[-1].message
    assert end.status == 0 and end.n_generated == len(want) - len(prompt)


@pytest.mark.slow
async def test_native_fp32_greedy_tokens_equal_the_float_reference(work: Path, stories260k: Path,
                                                                   tok512: Path) -> None:
    """A float32 ``.tlm`` runs llama2.c's arithmetic: the same greedy ids as the host float
    reference (run.c's forward pass) on the original checkpoint, not only as qinfer."""
    need_tools("native")
    tlm = _tlm(work, stories260k, "f32")
    assert not any(isinstance(t, QuantTensor) for t in read_tlm(tlm).tensors.values())
    prompt = _prompt(tok512)
    want = float_generate(load_checkpoint(stories260k), prompt, len(prompt) - 1 + 24)
    exe = build("native", tlm, build_dir=work / "native-f32").elf
    with trio.fail_after(60):
        frames = await native_run(exe, Run(5, 42, 0.0, 24, tuple(prompt)))
    assert _tokens(frames) == want
    assert frames[-1].message.status == 0


@pytest.mark.slow
async def test_native_temperature_sampling_equals_exact_sampler(work: Path, stories260k: Path,
                                                                tok512: Path) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, "q4")
    prompt = _prompt(tok512)
    exe = build("native", tlm, build_dir=work / "native-q4").elf
    for seed, temp in ((7, 0.8), (12345, 1.0)):
        want = _reference(tlm, prompt, 40, temperature=temp, seed=seed)
        with trio.fail_after(60):
            frames = await native_run(exe, Run(1, seed, temp, 40, tuple(prompt)))
        assert _tokens(frames) == want
    assert want != _reference(tlm, prompt, 40)  # sampling really differs from greedy


@pytest.mark.slow
async def test_native_spans_memory_and_hello(work: Path, stories260k: Path, tok512: Path) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, "q4")
    res = build("native", tlm, build_dir=work / "native-q4")
    prompt = _prompt(tok512)
    with trio.fail_after(60):
        frames = await native_run(res.elf, Run(2, 42, 0.0, 3, tuple(prompt)), level=2)
    hello = next(f.message for f in frames if isinstance(f.message, Hello))
    import hashlib

    assert hello.model_name == "stories260K"
    assert hello.model_hash == hashlib.sha256(tlm.read_bytes()).digest()
    msgs = [f.message for f in frames]
    begins = [(m.layer, m.op) for m in msgs if isinstance(m, SpanBegin)]
    ends = [(m.layer, m.op) for m in msgs if isinstance(m, SpanEnd)]
    assert sorted(begins) == sorted(ends)
    n_pos = len(prompt) + 3 - 1  # forward passes: prompt + generated - 1 (last is not fed)
    per_layer = [op for layer, op in begins if layer == 2]
    assert per_layer[:8] == [0, 2, 3, 4, 5, 6, 7, 8]  # LAYER then its ops in order
    assert len(per_layer) == 8 * n_pos
    assert sum(1 for b in begins if b == (0xFFFF, 10)) == n_pos  # classifier per pass
    mem = [m for m in msgs if isinstance(m, Memory)]
    assert mem and mem[-1].arena_bytes == res.arena_bytes
    assert mem[-1].kv_bytes == 2 * 4 * 5 * 32 * (len(prompt) + 2)
    assert mem[-1].heap_used < mem[-1].arena_bytes


@pytest.mark.slow
async def test_native_stop_ends_a_run_at_a_token_boundary(work: Path, stories260k: Path,
                                                          tok512: Path) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, "q4")
    exe = build("native", tlm, build_dir=work / "native-q4").elf
    from tinytelem.protocol.messages import Stop

    proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    dec = FrameDecoder()
    msgs: list[Any] = []
    try:
        with trio.fail_after(30):
            await proc.stdin.send_all(encode_frame(Run(8, 42, 0.0, 400, (1,)), 0, 0))
            while not msgs or not isinstance(msgs[-1], InferEnd):
                ev = dec.next_event()
                if ev is codec.NEED_DATA:
                    dec.receive_data(await proc.stdout.receive_some(65536))
                    continue
                msgs.append(ev.message)
                if sum(isinstance(m, Token) for m in msgs) == 3:
                    await proc.stdin.send_all(encode_frame(Stop(), 1, 0))
    finally:
        proc.kill()
        await proc.wait()
    end = msgs[-1]
    assert end.status == 1 and 2 <= end.n_generated < 400  # STOPPED early


def test_plan_sizes_the_arena_to_the_board(work: Path, stories260k: Path) -> None:
    tlm = _tlm(work, stories260k, "q4")
    big = plan_model(get_target("cortex-m4"), tlm)
    small = plan_model(get_target("stm32f405"), tlm)
    assert big.context == 512 and small.context < 512
    kv = 2 * 4 * 5 * 32  # K and V, float32, 5 layers, kv_dim 32: bytes per position
    assert big.arena_bytes - small.arena_bytes >= kv * (512 - small.context)
    assert small.arena_bytes < 128 * 1024
    assert plan_model(get_target("native"), tlm, max_context=100).context == 100
    fp32 = work / "f32.tlm"
    kinds = ("tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w2", "w3")
    write_tlm(quantize_model(load_checkpoint(stories260k), 8, 32,
                             per_tensor_bits=dict.fromkeys(kinds, 32)), fp32)
    with pytest.raises(ConfigError, match=r"does not fit the .* flash of stm32f405"):
        plan_model(get_target("stm32f405"), fp32)
    bad = work / "bad.tlm"
    data = bytearray(tlm.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="CRC"):
        build("native", bad, build_dir=work / "bad")


@pytest.mark.slow
async def test_arena_too_small_refuses_to_run(work: Path, stories260k: Path, tok512: Path
                                              ) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, "q4")
    res = build("native", tlm, build_dir=work / "native-q4")
    out = work / "tiny-arena"
    model_c = res.build_dir / "model" / "tlm_model.c"
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "TARGET=native", f"BUILD_DIR={out}",
                           "ENGINE=llama", f"MODEL_C={model_c}", "ARENA_BYTES=4096"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    with trio.fail_after(30):
        frames = await native_run(out / "tinytelem-fw", Run(3, 42, 0.0, 4, tuple(_prompt(tok512))))
    logs = [f.message for f in frames if isinstance(f.message, Log)]
    assert logs and logs[0].level == 3
    assert "arena" in logs[0].text  # the engine's own reason, not a generic message
    assert frames[-1].message.status == 2  # ERROR: the engine refused the forward pass
    nomodel = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "TARGET=native",
                              f"BUILD_DIR={work / 'nomodel'}", "ENGINE=llama"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert nomodel.returncode != 0 and "MODEL_C" in nomodel.stderr


# ---- kernels and the .tlm reader, probed directly ------------------------------------------

PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tt_kernels.h"
#include "tt_tlm.h"
int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "tlm") == 0) {
        static uint8_t buf[1 << 21];
        FILE *f = fopen(argv[2], "rb");
        size_t n = fread(buf, 1, sizeof buf, f);
        tt_tlm m; tt_tensor t; const char *why;
        int rc = tt_tlm_open(&m, buf, (uint32_t)n, &why);
        printf("%d %s\n", rc, why);
        if (rc == 0) printf("%u %u %d %d\n", (unsigned)m.dim, (unsigned)m.seq_len,
                            tt_tlm_find(&m, "layers.4.w2", &t), tt_tlm_find(&m, "nope", &t));
        fclose(f);
        return 0;
    }
    /* stdin: float32 values; stdout: expf and sqrtf bits and the rint values */
    float x;
    while (fread(&x, 4, 1, stdin) == 1) {
        float e = tt_expf(x), s = tt_sqrtf(x < 0 ? -x : x), r = tt_rintf(x);
        uint32_t a, b; memcpy(&a, &e, 4); memcpy(&b, &s, 4);
        printf("%08x %08x %.1f\n", (unsigned)a, (unsigned)b, (double)r);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(work: Path) -> Path:
    """The kernels and the reader compiled natively with the firmware's flags."""
    src = work / "engine_probe.c"
    src.write_text(PROBE)
    engine = FIRMWARE / "engine"
    return compile_c([src, engine / "tt_kernels.c", engine / "tt_tlm.c"], work / "engine_probe",
                     [engine, FIRMWARE / "telemetry"], ["-O2"])


def test_expf_sqrtf_rintf_match_numpy_bit_for_bit(probe: Path) -> None:
    if not probe.is_file():
        pytest.skip("probe not built")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-100, 100, 4000), rng.normal(0, 3, 4000),
                        np.exp(rng.uniform(-80, 80, 2000)), [0.0, 1e-5, 2.5, -2.5, 0.5, 1.5,
                                                             64.0, 1e-40, 3e-39, 88.5, -86.5],
                        ]).astype(np.float32)
    proc = subprocess.run([str(probe)], input=x.tobytes(), capture_output=True, timeout=60,
                          check=True)
    rows = [line.split() for line in proc.stdout.decode().splitlines()]
    assert len(rows) == x.size
    exp_bits = np.array([int(r[0], 16) for r in rows], dtype=np.uint32)
    sqrt_bits = np.array([int(r[1], 16) for r in rows], dtype=np.uint32)
    assert np.array_equal(exp_bits, tt_expf(x).view(np.uint32))
    assert np.array_equal(sqrt_bits, np.sqrt(np.abs(x)).view(np.uint32))
    small = np.abs(x) < 2**22
    rint = np.array([float(r[2]) for r in rows])
    assert np.array_equal(rint[small], np.rint(x[small]))


def test_c_reader_validates_like_the_python_reader(probe: Path, work: Path, stories260k: Path
                                                   ) -> None:
    tlm = _tlm(work, stories260k, "q4")

    def check(data: bytes) -> str:
        path = work / "probe.tlm"
        path.write_bytes(data)
        out = subprocess.run([str(probe), "tlm", str(path)], capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout

    good = tlm.read_bytes()
    assert check(good).splitlines() == ["0 ok", "64 512 1 0"]
    assert "bad magic" in check(b"XLM1" + good[4:])
    assert "CRC-32" in check(good[:500] + bytes([good[500] ^ 1]) + good[501:])
    assert "file_size" in check(good[:-8])
    import zlib

    body = bytearray(good[:-4])
    body[4] = 2  # major version 2, CRC recomputed
    assert "version" in check(bytes(body) + zlib.crc32(body).to_bytes(4, "little"))


def test_kernel_mask_names_what_each_model_needs(work: Path, stories260k: Path) -> None:
    """A build links only the kernels its model calls (TT_K_* in firmware/engine/tt_tlm.h)."""
    F32, B2, B3, B4, B8, ASYM, GANY = 0x1, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80  # F16 0x2: none
    want = {"q4": F32 | B4 | B8, "q2": F32 | B2 | B8, "q3": F32 | B3 | B8,
            "q4a": F32 | B4 | B8 | ASYM, "q8a": F32 | B8 | ASYM | GANY,
            "mixed": F32 | B2 | B3 | B4 | B8 | GANY, "f32": F32}
    target = get_target("native")
    for variant, mask in want.items():
        got = plan_model(target, _tlm(work, stories260k, variant)).kernels
        assert got == mask, f"{variant}: 0x{got:03x} != 0x{mask:03x}"


def test_a_reader_built_without_a_kernel_refuses_its_tensors(work: Path, stories260k: Path
                                                             ) -> None:
    """Built for 4-bit models (float, 4- and 8-bit kernels), the reader opens a 4-bit model
    and refuses a 2-bit one with a reason, instead of running a kernel that is not there."""
    src = work / "engine_probe.c"
    src.write_text(PROBE)
    engine = FIRMWARE / "engine"
    narrow = compile_c([src, engine / "tt_kernels.c", engine / "tt_tlm.c"],
                       work / "engine_probe_q4", [engine, FIRMWARE / "telemetry"],
                       ["-O2", "-DTT_KERNELS=0x031u"])
    if not narrow.is_file():
        pytest.skip("probe not built")

    def check(variant: str) -> str:
        return subprocess.run([str(narrow), "tlm", str(_tlm(work, stories260k, variant))],
                              capture_output=True, text=True, timeout=30, check=True).stdout

    assert check("q4").splitlines()[0] == "0 ok"
    assert check("q2").splitlines() == ["-13 model image: a tensor kind not built in "
                                        "(build for this model)"]


# ---- under QEMU ----------------------------------------------------------------------------

QEMU_CASES = [("cortex-m4", "q4"), ("cortex-m4", "q8"), ("riscv32", "q4"), ("riscv32", "q8"),
              ("cortex-m7", "q4"), ("cortex-m7", "q8"), ("stm32f405", "q4"), ("stm32f405", "q8"),
              ("cortex-m4", "q2"), ("riscv32", "q2"), ("riscv32f", "q4"), ("riscv32f", "q8"),
              ("cortex-m4", "q3"), ("riscv32f", "q3"), ("cortex-m4", "q4a"), ("riscv32", "q8a"),
              ("cortex-m4", "q8a"), ("cortex-m4", "mixed"), ("riscv32", "mixed"),
              ("cortex-m4", "f32"), ("riscv32f", "f32")]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "variant"), QEMU_CASES)
async def test_qemu_greedy_tokens_equal_qinfer(target: str, variant: str, work: Path,
                                               stories260k: Path, tok512: Path) -> None:
    need_tools(target)
    tlm = _tlm(work, stories260k, variant)
    prompt = _prompt(tok512)
    want = _reference(tlm, prompt, QEMU_GENERATED)
    res = build(target, tlm, build_dir=work / f"{target}-{variant}")
    with trio.fail_after(60):
        frames = await qemu_run(target, res.elf, Run(4, 42, 0.0, QEMU_GENERATED, tuple(prompt)),
                             level=2)
    assert _tokens(frames) == want
    if variant == "f32":  # whole fp32 models: the float reference's ids too
        assert want == float_generate(load_checkpoint(stories260k), prompt,
                                      len(prompt) - 1 + QEMU_GENERATED)
    assert frames[-1].message.status == 0
    spans = [f.message for f in frames if isinstance(f.message, SpanBegin)]
    assert len(spans) >= 5 * 8 * (len(prompt) + QEMU_GENERATED - 1)
    mem = [f.message for f in frames if isinstance(f.message, Memory)]
    assert mem[-1].arena_bytes == res.arena_bytes and 0 < mem[-1].stack_peak < 16384


@pytest.mark.slow
def test_cortex_m4_image_uses_the_dsp_kernel(work: Path, stories260k: Path) -> None:
    need_tools("cortex-m4")
    tlm = _tlm(work, stories260k, "q4")
    res = build("cortex-m4", tlm, build_dir=work / "cortex-m4-q4")
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(res.elf)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "smlad" in dis and "sxtb16" in dis


@pytest.mark.slow
def test_profile_qemu_with_a_model_records_token_ids(work: Path, stories260k: Path,
                                                     tok512: Path) -> None:
    need_tools("cortex-m4")
    tlm = _tlm(work, stories260k, "q4")
    out = work / "profile"
    res = CliRunner().invoke(cli, ["profile", "--device", "qemu:cortex-m4", "--model", str(tlm),
                                   "--tokenizer", str(tok512), "--sensor", "none",
                                   "--tokens", "6", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert "stories260K" in json.dumps(summary)
    from tinytelem.trace.reader import open_trace

    with open_trace(out / "trace.h5") as trace:
        ids = [int(t) for t in trace.tokens["token_id"]]
    prompt = _prompt(tok512)
    assert ids == _reference(tlm, prompt, 6)


def test_cli_footprint_with_a_model(work: Path, stories260k: Path) -> None:
    need_tools("native")
    tlm = _tlm(work, stories260k, "q4")
    res = CliRunner().invoke(cli, ["firmware", "footprint", "--target", "native", "--model",
                                   str(tlm), "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)[0]
    assert row["context"] == 512 and row["arena"] > 2 * 4 * 5 * 32 * 512
    assert row["flash"] > tlm.stat().st_size
    res = CliRunner().invoke(cli, ["firmware", "build", "--target", "native", "--model",
                                   str(tlm)])
    assert res.exit_code == 0 and "peak arena" in res.output


# ---- soft-float fast paths (cores without an FPU), checked against the host's FPU ----------

SOFTF_PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tt_softf.h"
static unsigned long long s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
static float f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static uint32_t u(float x) { uint32_t v; memcpy(&v, &x, 4); return v; }
static uint32_t pick(void) {
    uint32_t r = rnd(), k = rnd() % 6;
    if (k == 0) return r;                                              /* any bits */
    if (k == 1) return (r & 0x807FFFFFu) | ((1u + rnd() % 4) << 23);   /* tiny normals */
    if (k == 2) return (r & 0x807FFFFFu) | ((250u + rnd() % 5) << 23); /* huge */
    if (k == 3) return r & 0x80FFFFFFu;                                /* subnormal, zero */
    if (k == 4) return (r & 0x80000000u) | (0x3F800000u + rnd() % 4);  /* near 1 */
    return (r & 0x807FFFFFu) | ((100u + rnd() % 56) << 23);
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000, bad = 0, i;
    for (i = 0; i < n; i++) {
        uint32_t x = pick(), y = (rnd() & 3) ? pick() : (x ^ 0x80000000u) + rnd() % 64 - 32;
        float a = f(x), b = f(y), m = a * b, p = a + b;
        int32_t k = (int32_t)(rnd() % 33554432u) - 16777216;
        if (m == m && u(tt_fmul(a, b)) != u(m)) bad++;
        if (p == p && u(tt_fadd(a, b)) != u(p)) bad++;
        if (u(tt_i2f(k)) != u((float)k)) bad++;
    }
    printf("%ld %ld\n", n, bad);
    return 0;
}
"""


def test_soft_float_fast_paths_give_the_fpu_bits(work: Path) -> None:
    """tt_fmul / tt_fadd / tt_i2f (used on RV32IMAC and M0+) against the host's float32 ops,
    including subnormals, zeros, overflow, underflow and cancellation."""
    src = work / "softf_probe.c"
    src.write_text(SOFTF_PROBE)
    engine = FIRMWARE / "engine"
    exe = compile_c([src, engine / "tt_kernels.c"], work / "softf_probe",
                    [engine, FIRMWARE / "telemetry"], ["-O2", "-DTT_FAST_SOFTFLOAT=1"])
    out = subprocess.run([str(exe), "3000000"], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out == ["3000000", "0"]
