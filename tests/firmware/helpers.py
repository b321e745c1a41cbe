"""Helpers shared by the firmware tests: skip without the tools, compile C with the host
compiler, and speak to a firmware (native process or QEMU) for one run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tinytelem.firmware.qemu import run_qemu
from tinytelem.firmware.targets import get_target, missing_tools
from tinytelem.protocol import codec
from tinytelem.protocol.codec import FrameDecoder, encode_frame
from tinytelem.protocol.messages import Config, Hello, InferEnd, Run

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-ffp-contract=off"]


def need_tools(target: str, *, run: bool = True) -> None:
    """Skip, naming the install command, unless ``target`` can be built (and, with ``run``,
    run under QEMU)."""
    t = get_target(target)
    missing = [m for m in missing_tools(t) if run or m != t.qemu]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing; install with `bash scripts/setup-system.sh`")


def host_cc() -> str:
    """The host C compiler, or skip with the install command."""
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no host C compiler; install one with `bash scripts/setup-system.sh` "
                "(or `apt-get install gcc`)")
    raise AssertionError("unreachable")


def compile_c(sources: list[Path], out: Path, include: list[Path], extra: list[str] | None = None
              ) -> Path:
    """Compile ``sources`` into the executable ``out`` with the strict flags; fail loudly."""
    argv = [host_cc(), *CFLAGS, *(f"-I{p}" for p in include), *map(str, sources), "-o", str(out),
            *(extra or [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"compile failed: {' '.join(argv)}\n{proc.stderr}"
    return out


async def run_frames(receive: Callable[[], Awaitable[bytes]],
                     send: Callable[[bytes], Awaitable[None]], run: Run, level: int) -> list[Any]:
    """HELLO, CONFIG level, HELLO, RUN; the frames up to INFER_END."""
    dec = FrameDecoder()
    got: list[Any] = []

    async def until(kind: type) -> None:
        while True:
            ev = dec.next_event()
            if ev is codec.NEED_DATA:
                data = await receive()
                assert data, "the firmware closed the link"
                dec.receive_data(data)
                continue
            got.append(ev)
            if isinstance(ev.message, kind):
                return

    await until(Hello)
    await send(encode_frame(Config(level), 0, 0))
    await until(Hello)
    await send(encode_frame(run, 1, 0))
    await until(InferEnd)
    return got


async def native_run(exe: Path, run: Run, level: int = 1) -> list[Any]:
    """:func:`run_frames` with the native build over stdio."""
    proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE)
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None
    try:
        return await run_frames(lambda: stdout.receive_some(65536), stdin.send_all, run, level)
    finally:
        proc.kill()
        await proc.wait()


async def qemu_run(target: str, elf: Path, run: Run, level: int = 1) -> list[Any]:
    """:func:`run_frames` with an image under QEMU."""
    async with run_qemu(target, elf) as stream:
        return await run_frames(lambda: stream.receive_some(65536), stream.send_all, run, level)
