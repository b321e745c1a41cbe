"""The twin runs every model format: a .tlm on the integer reference (the firmware's tokens),
float files on the float reference, each costed at its own width unless told otherwise."""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.emulator.twin import TwinDevice
from tinytelem.models import qinfer
from tinytelem.models.formats import open_model
from tinytelem.models.gguf_io import write_gguf
from tinytelem.models.llama2c import load_checkpoint
from tinytelem.models.quant import QuantizedModel, quantize_model
from tinytelem.models.reference import generate
from tinytelem.models.tlm import write_tlm
from tinytelem.models.tokenizer import load_tokenizer
from tinytelem.platforms import all_platforms, get_platform
from tinytelem.protocol.commands import Run
from tinytelem.protocol.messages import InferStatus
from tinytelem.trace.reader import open_trace

from .helpers import platform

PROMPT = "Once upon a time"


@lru_cache(maxsize=8)
def _quantized(checkpoint: Path, bits: int, group: int) -> QuantizedModel:
    return quantize_model(load_checkpoint(checkpoint), bits, group)


def _tlm(tmp_path: Path, checkpoint: Path, bits: int, group: int = 32) -> Path:
    path = tmp_path / f"s{bits}g{group}.tlm"
    write_tlm(_quantized(checkpoint, bits, group), path)
    return path


@pytest.mark.parametrize(("bits", "group", "temperature"),
                         [(4, 32, 0.0), (8, 64, 0.0), (2, 32, 0.0), (3, 16, 0.9)])
def test_twin_runs_a_tlm_on_the_integer_reference(tmp_path: Path, stories260k: Path,
                                                  tok512: Path, bits: int, group: int,
                                                  temperature: float) -> None:
    lm = open_model(_tlm(tmp_path, stories260k, bits, group))
    assert lm.qmodel is not None and lm.weight_bits == bits
    twin = TwinDevice(platform("stm32f4"), lm.runnable, weight_bits=lm.weight_bits)
    prompt = tuple(load_tokenizer(tok512).encode(PROMPT, bos=True))
    got = twin.generate(Run(1, 7, temperature, 30, prompt))
    want = qinfer.generate(lm.qmodel, prompt, len(prompt) - 1 + 30, temperature=temperature,
                           seed=7)
    assert list(got) == want[len(prompt):]
    assert twin.cost.weight_bits == bits
    # HELLO carries the file's hash, as the firmware built with this .tlm does.
    same = TwinDevice(platform("stm32f4"), lm.runnable, model_sha256=lm.sha256)
    assert same.hello().model_hash == hashlib.sha256(Path(lm.path).read_bytes()).digest()


@pytest.mark.parametrize("name", [p.name for p in all_platforms()])
def test_every_platform_runs_a_tlm_at_every_width(name: str, stories260k: Path) -> None:
    prompt = (1, 403, 407)
    for bits in (2, 3, 4, 8):
        qm = _quantized(stories260k, bits, 32)
        twin = TwinDevice(get_platform(name), qm, weight_bits=bits)
        twin.receive(Run(1, 0, 0.0, 4, prompt), 0.0)
        twin.advance(math.inf)
        truth = twin.truths[1]
        assert truth.status is InferStatus.OK and twin.cost.weight_bits == bits
        want = qinfer.generate(qm, prompt, len(prompt) - 1 + 4)
        assert list(truth.token_ids) == want and truth.end_s > truth.start_s


def test_twin_runs_float_formats(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    gguf = tmp_path / "s.gguf"
    write_gguf(load_checkpoint(stories260k), gguf, "q8_0")
    prompt = tuple(load_tokenizer(tok512).encode(PROMPT, bos=True))
    for path, bits in ((stories260k, 32), (gguf, 8)):
        lm = open_model(path)
        assert lm.weight_bits == bits
        twin = TwinDevice(platform("esp32s3"), lm.runnable, weight_bits=bits)
        want = generate(lm.model, prompt, len(prompt) - 1 + 20)
        assert list(twin.generate(Run(1, 0, 0.0, 20, prompt))) == want[len(prompt):]


def _profile(args: list[str]) -> dict[str, object]:
    res = CliRunner().invoke(cli, ["profile", "--tokens", "6", "--trace-level", "tokens",
                                   "--json", *args])
    assert res.exit_code == 0, (args, res.output, res.exception)
    out = json.loads(res.output)
    assert isinstance(out, dict)
    return out


def _trace_tokens(out: Path) -> tuple[list[int], dict[str, object]]:
    with open_trace(out / "trace.h5") as tr:
        tokens = tr.tokens
        ids = [int(t) for t, p in zip(tokens["token_id"], tokens["phase"], strict=True)
               if int(p) == 1]
        return ids, dict(tr.attrs)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "bits"), [("stm32f4", 4), ("esp32s3", 8), ("rp2040", 2),
                                            ("k210", 3)])
def test_profile_emu_runs_a_tlm_at_its_own_bits(tmp_path: Path, stories260k: Path,
                                                tok512: Path, name: str, bits: int) -> None:
    tlm = _tlm(tmp_path, stories260k, bits)
    out = tmp_path / "run"
    _profile(["--device", f"emu:{name}", "--model", str(tlm), "--tokenizer", str(tok512),
              "--out", str(out)])
    ids, attrs = _trace_tokens(out)
    prompt = load_tokenizer(tok512).encode(PROMPT, bos=True)
    want = qinfer.generate(_quantized(stories260k, bits, 32), prompt, len(prompt) - 1 + 6)
    assert ids == want[len(prompt):]
    assert int(str(attrs["weight_bits"])) == bits


@pytest.mark.slow
def test_profile_emu_costs_an_fp32_checkpoint_at_32_bits(tmp_path: Path,
                                                         stories260k: Path) -> None:
    out = tmp_path / "run"
    _profile(["--device", "emu:esp32s3", "--model", str(stories260k), "--out", str(out)])
    _, attrs = _trace_tokens(out)
    assert int(str(attrs["weight_bits"])) == 32
    _profile(["--device", "emu:esp32s3", "--model", str(stories260k), "--weight-bits", "4",
              "--out", str(out), "--overwrite"])
    _, attrs = _trace_tokens(out)
    assert int(str(attrs["weight_bits"])) == 4


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.8])
async def test_twin_tokens_equal_the_firmware_under_qemu(tmp_path: Path, stories260k: Path,
                                                         tok512: Path,
                                                         temperature: float) -> None:
    import trio

    from tests.firmware.helpers import qemu_run
    from tinytelem.firmware import build
    from tinytelem.firmware.targets import get_target, missing_tools
    from tinytelem.protocol.messages import Phase, Token

    missing = missing_tools(get_target("cortex-m4"))
    if missing:
        pytest.skip(f"{', '.join(missing)} missing; install with `bash scripts/setup-system.sh`")
    tlm = _tlm(tmp_path, stories260k, 4)
    prompt = tuple(load_tokenizer(tok512).encode(PROMPT, bos=True))
    run = Run(4, 42, temperature, 8, prompt)
    res = build("cortex-m4", tlm, build_dir=tmp_path / "fw")
    with trio.fail_after(120):
        frames = await qemu_run("cortex-m4", res.elf, run)
    firmware = [f.message.token_id for f in frames
                if isinstance(f.message, Token) and f.message.phase == Phase.DECODE]
    lm = open_model(tlm)
    twin = TwinDevice(platform("stm32f4"), lm.runnable, weight_bits=lm.weight_bits)
    assert list(twin.generate(run)) == firmware and len(firmware) == 8


@pytest.mark.slow
async def test_twin_sends_the_span_batches_the_firmware_sends(tmp_path: Path,
                                                               stories260k: Path) -> None:
    """At trace level SPANS the twin and the firmware (Cortex-M4 under QEMU) send the same
    frame kinds in the same order (one SPAN_BATCH before each TOKEN) and the same span
    events in each batch, with the same record numbers."""
    import math

    import trio

    from tinytelem.costing.measure import firmware_run
    from tinytelem.firmware import build
    from tinytelem.firmware.qemu import run_qemu
    from tinytelem.firmware.targets import get_target, missing_tools
    from tinytelem.protocol.messages import (
        CounterValue,
        Heartbeat,
        InferBegin,
        SpanBatch,
        TraceLevel,
    )

    missing = missing_tools(get_target("cortex-m4"))
    if missing:
        pytest.skip(f"{', '.join(missing)} missing; install with `bash scripts/setup-system.sh`")
    tlm = _tlm(tmp_path, stories260k, 4)
    res = build("cortex-m4", tlm, build_dir=tmp_path / "fw")
    with trio.fail_after(120):
        async with run_qemu("cortex-m4", res.elf) as stream:
            _, fw = await firmware_run(stream, int(TraceLevel.SPANS), 4, (1, 403))
    lm = open_model(tlm)
    twin = TwinDevice(platform("stm32f4"), lm.runnable, weight_bits=lm.weight_bits,
                      trace_level=TraceLevel.SPANS)
    twin.receive(Run(1, 42, 0.0, 4, (1, 403)), 0.5)
    twin.advance(math.inf)
    # COUNTER frames differ apart from this (the firmware also reports TX_BYTES).
    tw = [f for f in twin.pop_due(60.0) if not isinstance(f.message, Heartbeat | CounterValue)]
    fw = [f for f in fw if not isinstance(f.message, CounterValue)]

    def shape(frames: list) -> list[tuple]:
        run = frames[next(i for i, f in enumerate(frames) if isinstance(f.message, InferBegin)):]
        return [(type(f.message).__name__, f.message.first,
                 [(r.end, r.layer, r.op) for r in f.message.records])
                if isinstance(f.message, SpanBatch) else (type(f.message).__name__,)
                for f in run]

    got, want = shape(tw), shape(fw)
    assert sum(k[0] == "SpanBatch" for k in want) == 2 + 4
    assert got == want
