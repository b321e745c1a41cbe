"""Builds, footprints, QEMU runs and device URLs of the real firmware (demo engine)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError
from tinytelem.firmware import build, footprint, qemu_command
from tinytelem.firmware.qemu import run_qemu
from tinytelem.firmware.targets import TARGETS, get_target, missing_tools, require_tools
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
    Token,
)
from tinytelem.transports.url import NativeURL, QemuURL, parse_device_url

QEMU_TARGETS = ["cortex-m4", "cortex-m7", "stm32f405", "riscv32", "riscv32f"]


def _need(target: str, run: bool = True) -> None:
    t = get_target(target)
    missing = [m for m in missing_tools(t) if run or m != t.qemu]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing; install with `bash scripts/setup-system.sh`")


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


def test_unknown_target_and_missing_tool_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="cortex-m4"):
        get_target("z80")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"scripts/setup-system\.sh") as info:
        require_tools(get_target("riscv32"), run=True)
    assert "gcc-riscv64-unknown-elf" in str(info.value)
    assert "qemu-system-misc" in str(info.value)


def test_every_port_lives_in_firmware_ports() -> None:
    """One home for ports: each target's port directory exists, the Makefile builds from it,
    bare-metal ones have their memory.ld, and no directory under ports/ is left unused."""
    fw = Path(__file__).resolve().parents[2] / "firmware"
    makefile = (fw / "Makefile").read_text()
    for t in TARGETS.values():
        assert (fw / "ports" / t.port).is_dir(), t.name
        assert f"ports/{t.port}/" in makefile, t.name
        assert t.native or (fw / "ports" / t.port / "memory.ld").is_file(), t.name
    shared = {"cortex-m", "esp-idf"}  # the Cortex-M core code; the ESP-IDF project (no Target)
    assert {p.name for p in (fw / "ports").iterdir()} == {t.port for t in TARGETS.values()} | shared
    assert sorted(p.name for p in fw.iterdir() if p.is_dir()) == [
        "core", "engine", "ina_bridge", "ports", "telemetry"]


@pytest.mark.parametrize("target", ["cortex-m4", "riscv32", "rp2040", "nrf52840", "stm32h7"])
def test_build_is_deterministic_and_footprint_reads_sections(target: str, tmp_path: Path) -> None:
    _need(target, run=False)
    a = build(target, build_dir=tmp_path / "a")
    b = build(target, build_dir=tmp_path / "b")
    assert a.elf.read_bytes() == b.elf.read_bytes()
    assert a.bin is not None and a.bin.stat().st_size > 1000
    fp = footprint(a.elf)
    assert fp.flash == fp.text + fp.rodata + fp.data + (fp.flash - fp.text - fp.rodata - fp.data)
    assert fp.text > 2000 and fp.bss > 80_000 and fp.static_ram == fp.data + fp.bss
    assert fp.stack >= 8192


def test_footprint_rejects_non_elf(tmp_path: Path) -> None:
    bad = tmp_path / "x.elf"
    bad.write_bytes(b"not an elf")
    with pytest.raises(ConfigError, match="not an ELF"):
        footprint(bad)
    with pytest.raises(ConfigError, match="build it first"):
        footprint(tmp_path / "missing.elf")


def test_cli_footprint_json_and_doctor() -> None:
    _need("cortex-m4", run=False)
    res = CliRunner().invoke(cli, ["firmware", "footprint", "--target", "cortex-m4", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["target"] == "cortex-m4" and rows[0]["flash"] > 2000
    res = CliRunner().invoke(cli, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert {t["target"] for t in report["targets"]} >= set(QEMU_TARGETS)
    assert all("install" in t for t in report["tools"])


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
    _need(target)
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
    seqs = [f.seq for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _shape(r: list[Any]) -> list[Any]:
    """Frames without what legitimately differs between runs of one boot image.

    COUNTER values count since boot (cycles, bytes sent) and the stack high-water includes
    interrupt frames pushed wherever the 1 kHz SysTick lands, so those two may differ.
    """
    return [f.message.counter_id if isinstance(f.message, CounterValue) else
            dataclasses.replace(f.message, stack_peak=0) if isinstance(f.message, Memory)
            else f.message for f in r]


async def _two_runs(target: str, tmp_path: Path) -> tuple[list[list[Any]], list[list[int]]]:
    _need(target)
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
    _need("cortex-m4")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["profile", "--device", "qemu:cortex-m4", "--sensor", "none",
                                   "--out", str(out), "--tokens", "4", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert "mps2-an386" in text
    assert (out / "trace.h5").stat().st_size > 0


@pytest.mark.slow
def test_profile_native_records_a_trace(tmp_path: Path) -> None:
    _need("native")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["profile", "--device", "native:", "--sensor", "none",
                                   "--out", str(out), "--tokens", "3"])
    assert res.exit_code == 0, res.output
    assert (out / "summary.json").is_file()


async def test_qemu_that_cannot_start_names_its_error(tmp_path: Path) -> None:
    _need("riscv32")
    bogus = dataclasses.replace(get_target("riscv32"), machine="no-such-machine")
    with trio.fail_after(20), pytest.raises(ConfigError, match="QEMU exited with status 1") \
            as info:
        async with run_qemu(bogus, tmp_path / "fw.elf"):
            pass  # pragma: no cover - QEMU rejects the machine before connecting
    assert "unsupported machine type" in str(info.value)  # QEMU's own complaint
