"""The schema is language-neutral: examples/node-consumer (Node.js + ws) reads a live stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from .helpers import power, run_records, streaming

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-consumer"
TOKEN = "node-token-55aa33cc"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TINYTELEM_TOKEN"}


def _node() -> str:
    return shutil.which("node") or "node"


@pytest.fixture(scope="module")
def node_consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm missing: apt-get install nodejs npm (bash scripts/setup-system.sh)")
    work = tmp_path_factory.mktemp("node") / "node-consumer"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("node_modules"))
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=work, check=False,
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        pytest.skip(f"npm install failed (no registry access?): {done.stderr[-300:]}")
    return work


@pytest.mark.slow
async def test_node_consumer_reads_json_stream(node_consumer: Path) -> None:
    with trio.fail_after(60):
        async with streaming(token=TOKEN) as h:
            result: list[subprocess.CompletedProcess[bytes]] = []

            async def node() -> None:
                result.append(await trio.run_process(
                    [_node(), "consumer.js", h.url, "--level", "1ms", "--rate", "20"],
                    cwd=node_consumer, env={**_env(), "TINYTELEM_TOKEN": TOKEN},
                    capture_stdout=True, capture_stderr=True, check=False,
                ))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(node)
                await h.streamer.wait_subscribed(1)
                for record in run_records(8):
                    await h.send(record)
                for i in range(10):
                    await h.send(power(i * 10_000, 10_000))
                await h.finish()
    done = result[0]
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    summary = json.loads(out.strip().splitlines()[-1].removeprefix("SUMMARY "))
    assert summary["schema"] == "tinytelem.stream/1"
    assert summary["tokens"] == list(range(8))
    assert summary["bye"] and summary["close_code"] == 1000
    assert summary["buckets"] == 1000  # 100k samples at 100 kHz in 1 ms buckets
    # energy from the buckets = mean current x 3.3 V over 1 s of samples
    expected = sum(float(b.current_a.astype("f8").sum()) for b in
                   (power(i * 10_000, 10_000) for i in range(10))) * 3.3 / 100_000
    assert summary["energy_j"] == pytest.approx(expected, rel=1e-6)
    # spans come aggregated per token by default: one layers message before each token
    assert summary["counts"]["layers"] == 8 and summary["counts"]["memory"] == 8
    assert "span" not in summary["counts"] and summary["dropped_by_class"] == {}
    assert "token #7" in out


@pytest.mark.slow
async def test_node_consumer_refused_without_token(node_consumer: Path) -> None:
    with trio.fail_after(30):
        async with streaming(token=TOKEN) as h:
            done = await trio.run_process([_node(), "consumer.js", h.url], cwd=node_consumer,
                                          env=_env(), capture_stdout=True,
                                          capture_stderr=True, check=False)
    assert done.returncode == 2
    assert b"refused: HTTP 401" in done.stderr


@pytest.mark.slow
async def test_node_consumer_sees_the_whole_run_with_wait_clients(node_consumer: Path) -> None:
    """The shipped example against a real `serve --run --wait-clients 1`: nothing missed."""
    import re
    import sys

    with trio.fail_after(120):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "serve",
             "--device", "emu:esp32s3", "--listen", "ws://127.0.0.1:0", "--run", "--tokens",
             "24", "--wait-clients", "1", "--wait-timeout", "60"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_env())
        try:
            assert proc.stderr is not None
            text = b""
            while not re.search(rb"ws://\S+\n", text):
                chunk = await proc.stderr.receive_some()
                assert chunk, text
                text += chunk
            url = re.search(rb"(ws://127\.0\.0\.1:\d+)", text).group(1).decode()  # type: ignore[union-attr]
            await trio.sleep(1.0)  # a late consumer
            done = await trio.run_process([_node(), "consumer.js", url], cwd=node_consumer,
                                          env=_env(), capture_stdout=True,
                                          capture_stderr=True, check=False)
            await proc.wait()
        finally:
            proc.kill()
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    summary = json.loads(out.strip().splitlines()[-1].removeprefix("SUMMARY "))
    assert summary["counts"]["run"] == 2  # begin and end
    n_prompt = len(summary["tokens"]) - 24
    assert summary["tokens"] == list(range(n_prompt + 24)) and n_prompt > 0
    assert summary["dropped_by_class"] == {} and summary["bye"]
