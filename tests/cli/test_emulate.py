"""``tinytelem emulate``: option parsing and one real subprocess smoke test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import trio
from click.testing import CliRunner

from tinytelem.cli.emulate import emulate, parse_fault
from tinytelem.emulator.server import parse_listen_url
from tinytelem.errors import ConfigError
from tinytelem.protocol.codec import Frame, FrameDecoder, encode_frame
from tinytelem.protocol.commands import Ping, Run
from tinytelem.protocol.messages import Hello, InferEnd, Pong, Token

ARGV = [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "emulate"]


def test_parse_fault() -> None:
    assert parse_fault("drop@20") == ("drop", 20)
    for bad in ("drop", "drop@0", "flip@3", "drop@x"):
        with pytest.raises(ConfigError):
            parse_fault(bad)


def test_help_and_bad_options() -> None:
    runner = CliRunner()
    assert "--power-listen" in runner.invoke(emulate, ["--help"]).output
    result = runner.invoke(emulate, ["--platform", "esp32s3", "--fault", "nope"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(emulate, ["--platform", "esp32s3", "--listen", "udp://x:1"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(emulate, ["--platform", "no-such-board"])
    assert isinstance(result.exception, ConfigError)


@pytest.mark.slow
def test_subprocess_prints_addresses_serves_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [*ARGV, "--platform", "esp32s3", "--power-listen", "tcp://127.0.0.1:0", "--json",
         "--trace-level", "tokens"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["platform"] == "esp32s3" and info["model"] == "builtin-260k"
        assert info["power"].startswith("tcp://127.0.0.1:")

        async def talk() -> list[object]:
            host, port = parse_listen_url(info["link"])  # type: ignore[misc]
            with trio.fail_after(20):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(encode_frame(Ping(5), 0, 0))
                await stream.send_all(encode_frame(Run(1, 1, 0.0, 4, (1, 20)), 1, 0))
                dec = FrameDecoder()
                msgs: list[object] = []
                while not any(isinstance(m, InferEnd) for m in msgs):
                    dec.receive_data(bytes(await stream.receive_some(4096)))
                    msgs += [e.message for e in dec.events() if isinstance(e, Frame)]
                await stream.aclose()
                return msgs

        msgs = trio.run(talk)
        assert isinstance(msgs[0], Hello) and Pong(5) in msgs
        assert sum(isinstance(m, Token) for m in msgs) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_subprocess_plain_line_and_once(stories260k) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [*ARGV, "--platform", "stm32h7", "--model", str(stories260k), "--once"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("link tcp://127.0.0.1:") and "power" not in line

        async def one_run() -> None:
            host, port = parse_listen_url(line.split()[1])  # type: ignore[misc]
            with trio.fail_after(20):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(encode_frame(Run(1, 1, 0.0, 8, (1, 403)), 0, 0))
                dec = FrameDecoder()
                done = False
                while not done:
                    dec.receive_data(bytes(await stream.receive_some(4096)))
                    done = any(isinstance(e, Frame) and isinstance(e.message, InferEnd)
                               for e in dec.events())
                await stream.aclose()

        trio.run(one_run)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
