"""The real firmware (demo engine) under QEMU (src/tinytelem/firmware/qemu.py): the command line,
runs, reproducible timestamps, profiling a QEMU device, and the qemu:/native: device URLs."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tests.firmware.helpers import need_tools
from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError
from tinytelem.firmware import build, qemu_command
from tinytelem.firmware.qemu import run_qemu
from tinytelem.firmware.targets import get_target
from tinytelem.protocol import codec
from tinytelem.protocol.codec import FrameDecoder, encode_frame
from tinytelem.protocol.messages import (
    Config,
    CounterValue,
    InferEnd,
    Memory,
    Ping,
    Pong,
    Run,
    SpanBegin,
    Token,
)
from tinytelem.transports.url import NativeURL, QemuURL, parse_device_url

QEMU_TARGETS = ["cortex-m4", "cortex-m7", "stm32f405", "riscv32", "riscv32f"]


def test_device_urls_parse() -> None:
    assert parse_device_url("qemu:Cortex-M4") == QemuURL("cortex-m4")
    assert parse_device_url("native:") == NativeURL()
    assert parse_device_url(QemuURL("riscv32").format()) == QemuURL("riscv32")
    with pytest.raises(ConfigError, match="qemu:cortex-m4"):
        parse_device_url("qemu:")
    with pytest.raises(ConfigError):
        parse_device_url("native:extra")


def test_qemu_command_has_the_deterministic_flags(tmp_path: Path) -> None:
    argv = qemu_command("riscv32", tmp_path / "fw.elf", 4321)
    assert argv[:3] == ["qemu-system-riscv32", "-M", "virt"]
    assert argv[3:5] == ["-bios", "none"]
    joined = " ".join(argv)
    assert "-icount shift=0,sleep=off" in joined
    assert "-serial tcp:127.0.0.1:4321" in joined
    assert "-semihosting-config enable=on,target=native" in joined
    assert "-bios" not in qemu_command("cortex-m4", tmp_path / "fw.elf", 1)
    with pytest.raises(ConfigError, match="does not run under QEMU"):
        qemu_command("rp2040", tmp_path / "fw.elf", 1)


async def _session(target: str, elf: Path, n_tokens: int = 6) -> list[Any]:
    """Boot, CONFIG spans, PING, RUN; the frames of the run (from INFER_BEGIN) in order."""
    async with run_qemu(target, elf) as stream:
        dec = FrameDecoder()

        async def until(kind: type) -> list[Any]:
            got = []
            while True:
                ev = dec.next_event()
                if ev is codec.NEED_DATA:
                    dec.receive_data(await stream.receive_some(65536))
                    continue
                got.append(ev)
                if isinstance(ev.message, kind):
                    return got

        from tinytelem.protocol.messages import Hello

        boot = await until(Hello)
        assert boot[-1].seq == 0 and boot[-1].message.tick_hz > 0
        await stream.send_all(encode_frame(Config(2), 0, 0))
        await until(Hello)
        await stream.send_all(encode_frame(Ping(0xABCD), 1, 0))
        pong = await until(Pong)
        assert pong[-1].message.nonce == 0xABCD
        await stream.send_all(encode_frame(Run(9, 42, 0.0, n_tokens, (1, 40)), 2, 0))
        frames = await until(InferEnd)
        return frames


@pytest.mark.slow
@pytest.mark.parametrize("target", QEMU_TARGETS)
async def test_firmware_runs_under_qemu(target: str, tmp_path: Path) -> None:
    need_tools(target)
    elf = build(target, build_dir=tmp_path).elf
    with trio.fail_after(30):
        frames = await _session(target, elf)
    tokens = [f.message for f in frames if isinstance(f.message, Token)]
    assert [t.index for t in tokens] == list(range(8))
    assert [t.token_id for t in tokens[:2]] == [1, 40]
    end = frames[-1].message
    assert end.run_id == 9 and end.n_generated == 6 and end.status == 0
    ticks = [f.ticks for f in frames]
    assert all(b >= a for a, b in itertools.pairwise(ticks))
    seqs = [f.seq for f in frames if f.size]  # a SPAN_BATCH's events share its seq
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert any(isinstance(f.message, SpanBegin) for f in frames)


def _shape(r: list[Any]) -> list[Any]:
    """Frames without what legitimately differs between runs of one boot image.

    COUNTER values count since boot (cycles, bytes sent) and the stack high-water includes
    interrupt frames pushed wherever the 1 kHz SysTick lands, so those two may differ.
    """
    return [f.message.counter_id if isinstance(f.message, CounterValue) else
            dataclasses.replace(f.message, stack_peak=0) if isinstance(f.message, Memory)
            else f.message for f in r]


async def _two_runs(target: str, tmp_path: Path) -> tuple[list[list[Any]], list[list[int]]]:
    need_tools(target)
    elf = build(target, build_dir=tmp_path).elf
    with trio.fail_after(40):
        runs = [await _session(target, elf) for _ in range(2)]
    assert _shape(runs[0]) == _shape(runs[1])
    assert len(runs[0]) > 100
    return runs, [[f.ticks - r[0].ticks for f in r] for r in runs]


TICK_HZ = {"cortex-m4": 25e6, "cortex-m7": 25e6, "stm32f405": 168e6, "riscv32": 1e9,
           "riscv32f": 1e9}


@pytest.mark.slow
@pytest.mark.parametrize("target", QEMU_TARGETS)
async def test_two_runs_give_the_same_frames_and_close_timestamps(target: str,
                                                                  tmp_path: Path) -> None:
    """Same frames; timestamps relative to INFER_BEGIN agree within 0.1 % of the run."""
    _, rel = await _two_runs(target, tmp_path)
    worst = max(abs(a - b) for a, b in zip(rel[0], rel[1], strict=True))
    assert rel[0][-1] > 1e-3 * TICK_HZ[target]  # more than 1 ms of virtual time
    assert worst <= 1e-3 * rel[0][-1], f"worst deviation {worst} ticks"


@pytest.mark.slow
@pytest.mark.parametrize("target", QEMU_TARGETS)
async def test_two_runs_give_identical_device_timestamps(target: str, tmp_path: Path) -> None:
    """Every frame of a run has the same device timestamp (relative to INFER_BEGIN) twice."""
    _, rel = await _two_runs(target, tmp_path)
    assert rel[0] == rel[1]


@pytest.mark.slow
def test_profile_qemu_records_a_trace(tmp_path: Path) -> None:
    need_tools("cortex-m4")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["profile", "--device", "qemu:cortex-m4", "--sensor", "none",
                                   "--out", str(out), "--tokens", "4", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert "mps2-an386" in text
    assert (out / "trace.h5").stat().st_size > 0


async def test_qemu_that_cannot_start_names_its_error(tmp_path: Path) -> None:
    need_tools("riscv32")
    bogus = dataclasses.replace(get_target("riscv32"), machine="no-such-machine")
    with trio.fail_after(20), pytest.raises(ConfigError, match="QEMU exited with status 1") \
            as info:
        async with run_qemu(bogus, tmp_path / "fw.elf"):
            pass  # pragma: no cover - QEMU rejects the machine before connecting
    assert "unsupported machine type" in str(info.value)  # QEMU's own complaint
