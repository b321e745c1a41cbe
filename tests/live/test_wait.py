"""``serve --wait-clients N``: a client that connects late still sees the whole run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import trio

from tinytelem.client import ByeMessage, RunMessage, TokenMessage, connect

CLI = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]


async def _url(proc: trio.Process) -> tuple[str, bytes]:
    assert proc.stderr is not None
    text = b""
    while not re.search(rb"ws://\S+\n", text):
        chunk = await proc.stderr.receive_some()
        assert chunk, text
        text += chunk
    found = re.search(rb"(ws://127\.0\.0\.1:\d+)", text)
    assert found is not None
    return found.group(1).decode(), text


@pytest.mark.slow
async def test_late_client_gets_the_whole_run() -> None:
    with trio.fail_after(120):
        proc = await trio.lowlevel.open_process(
            [*CLI, "serve", "--device", "emu:esp32s3", "--listen", "ws://127.0.0.1:0", "--run",
             "--tokens", "16", "--wait-clients", "1", "--wait-timeout", "60"],
            stderr=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            url, text = await _url(proc)
            await trio.sleep(1.5)  # connect late: without --wait-clients the run is over
            async with connect(url) as stream:
                await stream.subscribe(level="100ms")
                got = [m async for m in stream]
            assert proc.stderr is not None
            while chunk := await proc.stderr.receive_some():
                text += chunk
            await proc.wait()
        finally:
            proc.kill()
    assert proc.returncode == 0, text.decode()
    err = text.decode()
    assert "waiting for 1 client(s) to subscribe: 0 connected, 0 subscribed" in err
    assert "1 client(s) subscribed: starting" in err
    runs = [m.event for m in got if isinstance(m, RunMessage)]
    assert runs == ["begin", "end"]
    decode = [m.index for m in got if isinstance(m, TokenMessage) and m.phase == 1]
    assert len(decode) == 16
    assert isinstance(got[-1], ByeMessage)


@pytest.mark.slow
async def test_wait_timeout_fails_clearly() -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [*CLI, "serve", "--device", "emu:esp32s3", "--listen", "ws://127.0.0.1:0", "--run",
             "--wait-clients", "2", "--wait-timeout", "0.5"],
            capture_stdout=True, capture_stderr=True, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "0 of 2 client(s) subscribed" in err and "--wait-timeout" in err
    assert "Traceback" not in err
