"""serve / record --serve / monitor through the CLI: real twin, real sockets, real terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.errors import ConfigError
from tinytelem.live.monitor import MonitorState, sparkline
from tinytelem.live.schema import (
    ByeMessage,
    DeviceInfo,
    DroppedMessage,
    ErrorMessage,
    HelloMessage,
    LinkMessage,
    MemoryMessage,
    PowerGapMessage,
    RunMessage,
    StatsMessage,
    SummaryMessage,
    TokenMessage,
)
from tinytelem.live.security import check_listen_security, parse_listen

SECRET = "cli-secret-7a1e5be0c4d2"
CLI = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]


def test_non_loopback_without_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYTELEM_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--device", "emu:esp32s3",
                                      "--listen", "ws://0.0.0.0:0"])
    assert isinstance(result.exception, ConfigError)
    assert "--token" in str(result.exception) and "TINYTELEM_TOKEN" in str(result.exception)
    with pytest.raises(ConfigError, match="without a token"):
        check_listen_security(parse_listen("ws://192.168.1.5:8765"), None, None, None)
    check_listen_security(parse_listen("ws://[::1]:8765"), None, None, None)
    check_listen_security(parse_listen("ws://localhost:8765"), None, None, None)
    with pytest.raises(ConfigError, match="shorter"):
        check_listen_security(parse_listen("ws://0.0.0.0:1"), "short", None, None)
    with pytest.raises(ConfigError, match="wss://"):
        check_listen_security(parse_listen("ws://127.0.0.1:1"), None, Path("c"), Path("k"))
    with pytest.raises(ConfigError, match="both"):
        check_listen_security(parse_listen("wss://127.0.0.1:1"), None, Path("c"), None)
    with pytest.raises(ConfigError, match="needs --tls-cert"):
        check_listen_security(parse_listen("wss://127.0.0.1:1"), None, None, None)
    for bad in ("http://x:1", "ws://host", "ws://h:99999"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
    monkeypatch.setenv("TINYTELEM_TOKEN", SECRET)
    result = CliRunner().invoke(cli, ["monitor"])
    assert result.exit_code == 2 and "either a stream URL or --device" in result.output


@pytest.mark.slow
def test_serve_with_token_streams_and_never_leaks_it(tmp_path: Path) -> None:
    """A real serve process (twin + sim sensor + trace), a real client, then grep for the token."""
    trace = tmp_path / "run.h5"
    env = {**os.environ, "TINYTELEM_TOKEN": SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CLI, "serve", "--device", "emu:esp32s3", "--listen", "ws://127.0.0.1:0",
         "--out", str(trace), "--duration", "6", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 60
        err_lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            err_lines.append(line)
            found = re.search(r"(ws://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        assert url is not None, "".join(err_lines)
        # A wrong token first, while the server surely still listens (a loaded machine may
        # spend most of --duration starting up).
        refused = CliRunner().invoke(cli, ["monitor", url, "--token", "not-the-token",
                                           "--no-reconnect"])
        assert "401" in str(refused.exception)
        # monitor as a client, through CliRunner (stdout is not a terminal: plain lines)
        result = CliRunner().invoke(cli, ["monitor", url, "--token", SECRET, "--duration", "2",
                                          "--interval", "0.5", "--level", "10ms"])
        assert result.exit_code == 0, result.output
        assert "power=" in result.output and "link=up" in result.output
        assert re.search(r"power=\d", result.output), result.output
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert '"rejected": 1' in out
    everything = out + err + "".join(err_lines) + result.output
    assert SECRET not in everything
    data = trace.read_bytes()
    assert SECRET.encode() not in data
    import h5py

    with h5py.File(trace, "r", swmr=True) as f:
        assert f["power/summary/1s"].shape[0] >= 4
        assert f["power/summary/1ms"].shape[0] > 4000


@pytest.mark.slow
def test_monitor_device_plain_lines_then_live_view_in_a_pty() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["monitor", "--device", "emu:esp32s3", "--run", "--tokens", "24",
                                 "--interval", "0.3", "--level", "10ms", "--rate", "20"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert "ended (ok)" in last and "tokens=24" in last and "ttft=" in last
    assert re.search(r"tok/s=\d", last) and re.search(r"heap=\d", last)

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [*CLI, "monitor", "--device", "emu:esp32s3", "--run", "--tokens", "24",
         "--level", "10ms", "--rate", "20"],
        stdin=slave, stdout=slave, stderr=slave, env=env,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:
                break
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen  # a live, redrawn terminal view
    assert "esp32s3" in screen and "tok/s" in screen and "TTFT" in screen
    assert any(c in screen for c in "▁▂▃▄▅▆▇█")
    assert "heap" in screen and "of RAM" in screen and "link" in screen


def test_monitor_state_folds_messages() -> None:
    s = MonitorState()
    assert s.current_w is None and s.average_w is None and s.tokens_per_s is None
    assert s.itl_percentiles() is None and s.memory_fractions() == []
    dev = DeviceInfo("rp2040", "1", "m", "00", 1, 1, 1000, 0, 0, 0)
    s.update(HelloMessage("tinytelem.stream/1", "x", {}, dev, ("1ms",), (0.001,), 1e3, 8))
    s.update(RunMessage("begin", 0.0, 1.0, 7, 1, 5, 0, -1))
    s.update(TokenMessage(0.0, 1.05, 0, 1, 0))
    for i, t in enumerate((1.1, 1.2, 1.4)):
        s.update(TokenMessage(0.0, t, i + 1, 5, 1))
    s.update(MemoryMessage(1.2, 500, 600, 10, 100, 50))
    s.update(SummaryMessage("1ms", 0.001, 1000.0, 2.0, (0, 1), (1, 1), (0.5, 1.0), (0, 0),
                            (0, 0), (1, 1)))
    s.update(LinkMessage(0.0, False, "gone"))
    s.update(PowerGapMessage(5, 5))
    s.update(DroppedMessage(3, 3))
    s.update(ErrorMessage(0.0, "device: oops"))
    s.update(StatsMessage(0.0, 10, 0, 5, 4, 1, False, 1, 2, 100, 1, 0))
    s.update(RunMessage("end", 0.0, 1.5, 7, 0, 0, 3, 0))
    s.update(ByeMessage("done"))
    assert s.ttft_s == pytest.approx(0.1)
    assert s.tokens_per_s == pytest.approx(2 / 0.3)
    itl = s.itl_percentiles()
    assert itl is not None and itl["p50"] == pytest.approx(0.15)
    assert s.current_w == pytest.approx(2.0) and s.average_w == pytest.approx(1.5)
    assert s.memory_fractions()[0] == ("heap", 500, 0.5)
    assert s.dropped == 4 and s.ended and s.n_prefill == 1
    line = s.line(2.0)
    assert "run 7 ended (ok)" in line and "link=DOWN" in line and "dropped=4" in line
    from rich.console import Console

    console = Console(width=90, record=True)
    console.print(s.renderable(2.0, 90))
    text = console.export_text()
    assert "rp2040" in text and "last error: device: oops" in text and "50.0% of RAM" in text
    assert sparkline([1.0, 2.0, 3.0], 10) == "▁▄█"
    assert sparkline([], 5) == "" and sparkline([2.0, 2.0], 5) == "▄▄"


@pytest.mark.slow
async def test_record_serve_streams_while_recording(tmp_path: Path) -> None:
    import trio

    from tinytelem.client import HelloMessage as Hello
    from tinytelem.client import StatsMessage as Stats
    from tinytelem.client import connect

    trace = tmp_path / "rec.h5"
    with trio.fail_after(90):
        proc = await trio.lowlevel.open_process(
            [*CLI, "record", "--device", "emu:esp32s3", "--out", str(trace), "--duration", "4",
             "--serve", "ws://127.0.0.1:0", "--token", SECRET, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None and proc.stdout is not None
            text = b""
            while b"streaming on" not in text or not text.endswith(b"\n"):
                chunk = await proc.stderr.receive_some()
                assert chunk, text
                text += chunk
            found = re.search(rb"(ws://127\.0\.0\.1:\d+)", text)
            assert found is not None
            got = []
            async with connect(found.group(1).decode(), token=SECRET) as stream:
                got = [m async for m in stream]
            out = b""
            while chunk := await proc.stdout.receive_some():
                out += chunk
            await proc.wait()
        finally:
            proc.kill()
    assert proc.returncode == 0
    hello = got[0]
    assert isinstance(hello, Hello) and hello.session["trace"] == str(trace)
    devices = [hello.device] + [m for m in got if isinstance(m, DeviceInfo)]
    assert any(d is not None and d.platform == "esp32s3" for d in devices)
    assert any(isinstance(m, Stats) and m.link_up for m in got)
    assert isinstance(got[-1], ByeMessage)
    assert trace.exists() and SECRET.encode() not in trace.read_bytes()
    assert b"schema" in out  # the summary JSON
