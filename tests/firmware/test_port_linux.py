"""The native port (firmware/ports/linux/port_linux.c) and its TX buffer as the host sees them.

The port collects encoded bytes and writes them out when full, on ``port_flush()`` (which the
core calls after the frames a host waits for: HELLO, INFER_END, LOG, ERROR, PONG) and before
every poll for input. These tests run the real native build over stdio (and TCP) and check
what a buffer could break: an idle device must still answer promptly and send its HEARTBEAT,
and a run's frames must all arrive, in order, with consecutive sequence numbers -- also with a
tiny buffer that splits frames. Last, ``tinytelem profile`` records a trace from a native device.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tests.firmware.helpers import compile_c, need_tools
from tinytelem.cli.main import cli
from tinytelem.firmware.build import build
from tinytelem.protocol import codec
from tinytelem.protocol.codec import FrameDecoder, FrameError, encode_frame
from tinytelem.protocol.messages import (
    Config,
    CounterValue,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    Memory,
    Ping,
    Pong,
    Run,
    SpanBegin,
    SpanEnd,
    Token,
)

PROMPT_LATENCY_S = 0.050
N_TOKENS = 24

# Interposes write(): logs the size of every write to stdout on stderr, one line each.
WRITE_LOGGER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "write");
    if (fd == 1) {
        char line[32];
        int k = snprintf(line, sizeof line, "%zu\n", n);
        if (k > 0) (void)real(2, line, (size_t)k);
    }
    return real(fd, buf, n);
}
"""


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo-engine native build with the default 16 KiB buffer and with a 64-byte one."""
    need_tools("native")
    root = tmp_path_factory.mktemp("native-buffer")
    return {
        "default": build("native", None, build_dir=root / "default").elf,
        "tiny": build("native", None, build_dir=root / "tiny",
                      extra_cflags="-DTT_LINUX_TX_BYTES=64u").elf,
    }


class Session:
    """One host on the link: a decoder over received bytes, every frame kept in order."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]],
                 send: Callable[[bytes], Awaitable[None]]) -> None:
        self.receive = receive
        self.send_bytes = send
        self.dec = FrameDecoder()
        self.frames: list[codec.Frame] = []
        self.errors: list[FrameError] = []
        self.seq = 0

    async def send(self, message: Any) -> None:
        await self.send_bytes(encode_frame(message, self.seq, 0))
        self.seq += 1

    async def until(self, kind: type) -> codec.Frame:
        """Read frames until one of ``kind`` arrives (and return it)."""
        while True:
            ev = self.dec.next_event()
            if ev is codec.NEED_DATA:
                data = await self.receive()
                assert data, "the firmware closed the link"
                self.dec.receive_data(data)
                continue
            if isinstance(ev, FrameError):
                self.errors.append(ev)
                continue
            assert isinstance(ev, codec.Frame)
            self.frames.append(ev)
            if isinstance(ev.message, kind):
                return ev


async def _with_native(exe: Path, body: Callable[[Session], Awaitable[None]]) -> None:
    proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE)
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None
    try:
        await body(Session(lambda: stdout.receive_some(65536), stdin.send_all))
    finally:
        proc.kill()
        await proc.wait()


async def _ping_latencies(s: Session, n: int) -> list[float]:
    """Round trips of n PINGs sent while the device idles (it sleeps in poll between them)."""
    out = []
    for nonce in range(1000, 1000 + n):
        await trio.sleep(0.03)  # let the device go back to its idle poll
        t0 = time.perf_counter()
        await s.send(Ping(nonce))
        pong = await s.until(Pong)
        out.append(time.perf_counter() - t0)
        assert pong.message.nonce == nonce
    return out


def _check_run(s: Session, run_id: int, level: int) -> None:
    """The run's frames: complete, in order, consecutive sequence numbers, nothing mangled."""
    assert s.errors == []
    stats = s.dec.statistics()
    assert stats.seq_gaps == 0 and stats.lost_frames == 0
    # A SPAN_BATCH's span events share its seq; the batch's own size rides on the first.
    seqs = [f.seq for f in s.frames if f.size]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    begin = next(i for i, f in enumerate(s.frames) if isinstance(f.message, InferBegin))
    run = s.frames[begin:]
    assert isinstance(run[-1].message, InferEnd) and run[-1].message.run_id == run_id
    ticks = [f.ticks for f in run]
    assert ticks == sorted(ticks)  # device timestamps never go back: no reordering
    tokens = [f.message for f in run if isinstance(f.message, Token)]
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert len(tokens) - 1 == run[-1].message.n_generated > 0
    assert sum(isinstance(f.message, Memory) for f in run) == run[-1].message.n_generated
    assert any(isinstance(f.message, CounterValue) for f in run)
    spans = [f.message for f in run if isinstance(f.message, SpanBegin | SpanEnd)]
    if level >= 2:
        assert len(spans) > 10 * len(tokens)
        begins = sum(isinstance(m, SpanBegin) for m in spans)
        assert begins * 2 == len(spans)
    else:
        assert spans == []


async def test_native_idle_device_answers_ping_promptly(builds: dict[str, Path]) -> None:
    async def body(s: Session) -> None:
        await s.until(Hello)
        latencies = await _ping_latencies(s, 10)
        assert max(latencies) < PROMPT_LATENCY_S, latencies

    with trio.fail_after(20):
        await _with_native(builds["default"], body)


async def test_native_idle_device_sends_heartbeat_unprompted(builds: dict[str, Path]) -> None:
    # HEARTBEAT is not a frame that forces a write: only the flush before the idle poll sends it.
    async def body(s: Session) -> None:
        await s.until(Hello)
        t0 = time.perf_counter()
        await s.until(Heartbeat)
        assert time.perf_counter() - t0 < 1.5

    with trio.fail_after(20):
        await _with_native(builds["default"], body)


@pytest.mark.parametrize("variant", ["default", "tiny"])
@pytest.mark.parametrize("level", [1, 2])
async def test_native_run_frames_arrive_in_order_without_gaps(builds: dict[str, Path],
                                                              variant: str, level: int) -> None:
    async def body(s: Session) -> None:
        await s.until(Hello)
        await s.send(Config(level))
        assert (await s.until(Hello)).message.firmware_version
        await s.send(Run(7, 42, 0.0, N_TOKENS))
        await s.until(InferEnd)
        _check_run(s, 7, level)
        # back to idle: PING still answered at once
        latencies = await _ping_latencies(s, 3)
        assert max(latencies) < PROMPT_LATENCY_S, latencies

    with trio.fail_after(30):
        await _with_native(builds[variant], body)


async def test_native_ping_during_a_run_is_answered_before_its_end(builds: dict[str, Path]
                                                                   ) -> None:
    async def body(s: Session) -> None:
        await s.until(Hello)
        await s.send(Config(2))
        await s.until(Hello)
        await s.send(Run(9, 42, 0.0, 200))
        await s.until(Token)
        await s.send(Ping(77))
        pong = await s.until(Pong)
        assert pong.message.nonce == 77
        assert not any(isinstance(f.message, InferEnd) for f in s.frames)
        await s.until(InferEnd)
        _check_run(s, 9, 2)

    with trio.fail_after(30):
        await _with_native(builds["default"], body)


async def test_native_tcp_reconnect_gets_a_clean_stream(builds: dict[str, Path]) -> None:
    """A host that leaves mid-run leaves no buffered bytes behind for the next one."""
    proc = await trio.lowlevel.open_process([str(builds["default"]), "--listen", "127.0.0.1:0"],
                                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        with trio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stderr.receive_some(1)
            port = int(line.decode().rsplit(":", 1)[1])
            first = await trio.open_tcp_stream("127.0.0.1", port)
            s1 = Session(lambda: first.receive_some(65536), first.send_all)
            await s1.until(Hello)
            await s1.send(Config(2))
            await s1.until(Hello)
            await s1.send(Run(1, 42, 0.0, 500))
            await s1.until(Token)
            first.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            await first.aclose()  # reset: the device's next write fails
            second = await trio.open_tcp_stream("127.0.0.1", port)
            s2 = Session(lambda: second.receive_some(65536), second.send_all)
            # the device may still be in run 1 (its frames now go here); then comes a HELLO
            hello = await s2.until(Hello)
            assert s2.errors == []
            await s2.send(Ping(5))
            assert (await s2.until(Pong)).message.nonce == 5
            assert s2.errors == []  # whole frames only: no tail of a frame meant for host 1
            assert hello.message.firmware_version
            await second.aclose()
    finally:
        proc.kill()
        await proc.wait()


async def test_native_spans_run_is_written_about_once_per_token(builds: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """The point of the buffer: ~90 frames a token leave in one write(), not two per frame."""
    src = tmp_path / "write_logger.c"
    src.write_text(WRITE_LOGGER)
    shim = compile_c([src], tmp_path / "write_logger.so", [], ["-shared", "-fPIC", "-ldl"])
    proc = await trio.lowlevel.open_process(
        [str(builds["default"])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={"LD_PRELOAD": str(shim), "PATH": "/usr/bin:/bin"})
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    assert stdin is not None and stdout is not None and stderr is not None
    log = bytearray()
    try:
        with trio.fail_after(30):
            s = Session(lambda: stdout.receive_some(65536), stdin.send_all)
            await s.until(Hello)
            await s.send(Config(2))
            await s.until(Hello)
            await s.send(Run(3, 42, 0.0, N_TOKENS))
            await s.until(InferEnd)
            proc.kill()
            await proc.wait()
            while chunk := await stderr.receive_some(65536):
                log += chunk
    finally:
        proc.kill()
        await proc.wait()
    sizes = [int(x) for x in log.split()]
    _check_run(s, 3, 2)
    frames = len(s.frames)
    assert frames > 20 * N_TOKENS
    # boot (resync + HELLO), CONFIG's HELLO, one write per token, INFER_END: not per frame
    assert len(sizes) <= N_TOKENS + 10, (len(sizes), frames)
    assert sum(sizes) >= s.dec.statistics().bytes


@pytest.mark.slow
def test_profile_native_records_a_trace(tmp_path: Path) -> None:
    need_tools("native")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["profile", "--device", "native:", "--sensor", "none",
                                   "--out", str(out), "--tokens", "3"])
    assert res.exit_code == 0, res.output
    assert (out / "summary.json").is_file()
