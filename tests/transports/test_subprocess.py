"""exec: links: a child process's stdin/stdout as a stream."""

from __future__ import annotations

import shlex
import sys

import pytest
import trio

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.transports import ExecURL, ProcessStream, open_process_stream, open_stream
from tinytelem.transports import subprocess as process_transport

PY = sys.executable
ECHO = [PY, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1)"]


def _python(code: str) -> str:
    return "exec:" + shlex.join([PY, "-c", code])


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some():
        got += chunk
    return bytes(got)


async def test_echo_child_round_trip_then_eof() -> None:
    with trio.fail_after(10):
        stream = await open_stream("exec:cat")
        assert isinstance(stream, ProcessStream)
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        try:
            payload = bytes(range(256)) * 1024
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    await stream.send_all(payload)
                    await stream.send_eof()  # cat sees EOF on stdin and exits

                nursery.start_soon(send)
                echoed = await _read_all(stream)
            assert echoed == payload
            assert await stream.process.wait() == 0
            assert stream.returncode == 0
        finally:
            await stream.aclose()


async def test_child_exit_reads_as_eof_and_writes_break() -> None:
    with trio.fail_after(10):
        stream = await open_stream(_python("import sys; sys.stdout.write('bye'); sys.exit(3)"))
        try:
            assert await _read_all(stream) == b"bye"
            assert await stream.receive_some() == b""
            assert isinstance(stream, ProcessStream)
            await stream.process.wait()
            with pytest.raises(LinkBroken) as info:
                await stream.send_all(b"hello?")
            assert "exited with status 3" in str(info.value)
            assert isinstance(info.value.__cause__, OSError)
        finally:
            await stream.aclose()


async def test_close_terminates_a_running_child() -> None:
    with trio.fail_after(10):
        stream = await open_process_stream([PY, "-c", "import time; time.sleep(60)"])
        await stream.aclose()
        await stream.aclose()  # idempotent
        assert stream.returncode is not None
        assert stream.returncode != 0


async def test_close_kills_a_child_that_ignores_terminate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_transport, "TERMINATE_GRACE_S", 0.3)
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "sys.stdout.write('ready'); sys.stdout.flush(); time.sleep(60)"
    )
    with trio.fail_after(10):
        stream = await open_process_stream(ExecURL((PY, "-c", code)))
        assert await stream.receive_some() == b"ready"  # SIGTERM is ignored from here on
        await stream.aclose()
        if sys.platform != "win32":
            assert stream.returncode == -9


async def test_cancelled_close_still_reaps_the_child() -> None:
    with trio.fail_after(10):
        stream = await open_process_stream(ECHO)
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.aclose()
        assert stream.returncode is not None


async def test_missing_program_is_a_config_error() -> None:
    with trio.fail_after(10), pytest.raises(ConfigError, match="not found"):
        await open_stream("exec:tinytelem-no-such-program --flag")


async def test_non_executable_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    script = Path(str(tmp_path)) / "not-executable.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with trio.fail_after(10), pytest.raises(ConfigError, match="not executable"):
        await open_process_stream([str(script)])


async def test_empty_argv_is_a_config_error() -> None:
    with trio.fail_after(10), pytest.raises(ConfigError, match="needs a command"):
        await open_process_stream([])
