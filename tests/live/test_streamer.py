"""The streamer over real sockets: schema, codecs, subscriptions, auth, TLS, reconnects."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trio

from tinytelem.client import (
    ByeMessage,
    DeviceInfo,
    DroppedMessage,
    ErrorMessage,
    HelloMessage,
    LayersMessage,
    LinkMessage,
    MemoryMessage,
    PowerGapMessage,
    RawPowerMessage,
    RunMessage,
    SpanMessage,
    StreamRefused,
    SummaryMessage,
    TokenMessage,
    client_ssl_context,
    connect,
)
from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.live.security import server_ssl_context

from .helpers import power, run_records, streaming

TOKEN = "tok-9f3b2c1d-live-secret"


async def _collect(stream: object) -> list[object]:
    return [m async for m in stream]  # type: ignore[attr-defined]


async def test_events_summaries_and_raw_over_json() -> None:
    with trio.fail_after(20):
        async with streaming() as h, connect(h.url, codec="json") as stream:
            hello = await stream.receive()
            assert isinstance(hello, HelloMessage)
            assert hello.schema == "tinytelem.stream/1"
            assert hello.device is None
            assert "10ms" in hello.levels
            await stream.subscribe(level="1ms", rate_hz=50, spans="raw")
            await h.streamer.wait_subscribed(1)
            records = run_records(6)
            for record in records:
                await h.send(record)
            blocks = [power(i * 5000, 5000) for i in range(10)]
            for block in blocks:
                await h.send(block)
            await h.absorbed(len(records) + len(blocks))
            await stream.request_raw(0.01)
            got: list[object] = []
            while not any(isinstance(m, RawPowerMessage) for m in got):
                got.append(await stream.receive())
            await h.finish()
            got += await _collect(stream)
    kinds = {type(m) for m in got}
    assert {DeviceInfo, RunMessage, SpanMessage, MemoryMessage, TokenMessage, LinkMessage,
            PowerGapMessage, SummaryMessage, RawPowerMessage, ByeMessage} <= kinds
    assert [m.index for m in got if isinstance(m, TokenMessage)] == list(range(6))
    span = next(m for m in got if isinstance(m, SpanMessage))
    assert span.op_name == "qkv" and span.end_s > span.begin_s
    assert not [m for m in got if isinstance(m, LayersMessage)]  # raw spans instead
    runs = [m for m in got if isinstance(m, RunMessage)]
    assert [r.event for r in runs] == ["begin", "end"] and runs[1].n_generated == 4
    links = [m.up for m in got if isinstance(m, LinkMessage)]
    assert links == [False, True]
    data = np.concatenate([b.current_a for b in blocks])
    buckets = [m for m in got if isinstance(m, SummaryMessage)]
    first = [i for m in buckets for i in m.first_index]
    means = [x for m in buckets for x in m.mean]
    assert all(m.level == "1ms" for m in buckets)
    assert first == list(range(0, len(first) * 100, 100))
    assert len(first) >= 450  # all complete 1 ms buckets (the last may be partial)
    np.testing.assert_allclose(means, data.reshape(-1, 100)[: len(means)].mean(axis=1),
                               rtol=1e-6)
    assert buckets[0].power_w()[0] == pytest.approx(means[0] * 3.3)
    raw = next(m for m in got if isinstance(m, RawPowerMessage))
    assert not raw.live and raw.current_a.shape == (1000,)
    np.testing.assert_array_equal(raw.current_a, data[-1000:])
    assert raw.first_index == 50_000 - 1000


async def test_late_client_gets_device_facts_and_bad_requests_get_errors() -> None:
    with trio.fail_after(20):
        async with streaming() as h:
            records = run_records(2)
            for record in records:
                await h.send(record)
            await h.absorbed(len(records))
            async with connect(h.url) as stream:
                hello = await stream.receive()
                assert isinstance(hello, HelloMessage)
                assert hello.device is not None and hello.device.platform == "esp32s3"
                await stream.subscribe(level="3ms")
                err = await stream.receive()
                assert isinstance(err, ErrorMessage) and "no summary level" in err.text
                await stream.request_raw(1.0)
                err = await stream.receive()
                assert isinstance(err, ErrorMessage) and "no power samples" in err.text
                await stream._command({"type": "frobnicate"})
                err = await stream.receive()
                assert isinstance(err, ErrorMessage) and "unknown client message" in err.text
                await h.finish()
                assert [type(m) for m in await _collect(stream)] == [ByeMessage]


async def test_token_required_and_checked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(20):
        async with streaming(token=TOKEN) as h:
            with pytest.raises(StreamRefused) as missing:
                async with connect(h.url):
                    pass
            assert missing.value.status == 401
            assert "bearer token" in str(missing.value)
            with pytest.raises(StreamRefused):
                async with connect(h.url, token="wrong-token-123"):
                    pass
            async with connect(h.url, token=TOKEN) as stream:
                assert isinstance(await stream.receive(), HelloMessage)
            async with connect(f"{h.url}/?token={TOKEN}") as stream:  # browser fallback
                assert isinstance(await stream.receive(), HelloMessage)
            assert h.streamer.statistics().rejected == 2
    assert "websocket" in caplog.text.lower() or "client" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_wss_with_self_signed_certificate(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI missing: apt-get install openssl (bash scripts/setup-system.sh)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    with trio.fail_after(20):
        async with streaming("wss://127.0.0.1:0", token=TOKEN,
                             ssl_context=server_ssl_context(cert, key)) as h:
            assert h.url.startswith("wss://")
            async with connect(h.url, token=TOKEN,
                               ssl_context=client_ssl_context(cert)) as stream:
                hello = await stream.receive()
                assert isinstance(hello, HelloMessage)
            with pytest.raises(LinkBroken):  # the default trust store rejects it
                async with connect(h.url, token=TOKEN):
                    pass
    with pytest.raises(ConfigError, match="cannot load TLS"):
        server_ssl_context(cert, cert)


async def test_reconnect_after_server_restart() -> None:
    with trio.fail_after(30):
        cancel = trio.CancelScope()
        port_known = trio.Event()
        first_gone = trio.Event()
        port: list[int] = []

        async def first_server() -> None:
            with cancel:
                async with streaming() as h:
                    assert h.streamer.port is not None
                    port.append(h.streamer.port)
                    port_known.set()
                    await trio.sleep_forever()
            first_gone.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_server)
            await port_known.wait()
            url = f"ws://127.0.0.1:{port[0]}"
            async with connect(url, reconnect=True, reconnect_delay_s=0.05) as stream:
                await stream.subscribe(level="100ms")
                assert isinstance(await stream.receive(), HelloMessage)
                cancel.cancel()  # abrupt: no bye
                await first_gone.wait()  # its port is free again
                async with streaming(url) as h2:
                    assert isinstance(await stream.receive(), HelloMessage)
                    assert stream.reconnects == 1
                    await h2.send(power(0, 30_000))
                    await h2.finish()
                    rest = await _collect(stream)
    summaries = [m for m in rest if isinstance(m, SummaryMessage)]
    assert summaries and all(m.level == "100ms" for m in summaries)  # subscription re-sent
    assert isinstance(rest[-1], ByeMessage)
    assert not [m for m in rest if isinstance(m, DroppedMessage)]


async def test_client_errors() -> None:
    with pytest.raises(ConfigError, match="ws://"):
        async with connect("http://127.0.0.1:1"):
            pass
    with pytest.raises(ConfigError, match="codec"):
        async with connect("ws://127.0.0.1:1", codec="xml"):  # type: ignore[arg-type]
            pass
    with trio.fail_after(10), pytest.raises(LinkBroken, match="cannot reach"):
        async with connect("ws://127.0.0.1:1"):
            pass


async def test_spans_are_aggregated_per_token_by_default() -> None:
    with trio.fail_after(20):
        async with streaming() as h, connect(h.url) as stream:
            assert isinstance(await stream.receive(), HelloMessage)
            await stream.subscribe(level="100ms")
            await h.streamer.wait_subscribed(1)
            for record in run_records(4):
                await h.send(record)
            await h.finish()
            got = await _collect(stream)
    assert not [m for m in got if isinstance(m, SpanMessage)]
    layers = [m for m in got if isinstance(m, LayersMessage)]
    tokens = [m for m in got if isinstance(m, TokenMessage)]
    assert [m.index for m in layers] == [t.index for t in tokens] == [0, 1, 2, 3]
    for m in layers:  # one qkv span of 400 us before each token (helpers.run_records)
        assert m.spans == 1 and m.op_name == ("qkv",) and m.op_count == (1,)
        assert m.op_s[0] == pytest.approx(400e-6) and m.end_s - m.begin_s == pytest.approx(400e-6)
    # each layers message comes just before its token
    kinds = [type(m) for m in got if isinstance(m, LayersMessage | TokenMessage)]
    assert kinds == [LayersMessage, TokenMessage] * 4


async def test_server_side_span_drops_never_lose_tokens_and_are_told() -> None:
    """The streamer's hub mailbox overflowing at span rates drops spans only, and says so."""
    from tinytelem.protocol.messages import SpanBegin, SpanEnd

    from .helpers import device, hello, token

    batch: list[object] = [hello()]
    for i in range(50):
        for k in range(100):
            t = 1000 * i + k
            batch += [device(SpanBegin(k % 4, 3), ticks=t), device(SpanEnd(k % 4, 3), ticks=t)]
        batch.append(token(i))
    with trio.fail_after(20):
        async with streaming(hub_queue=16) as h, connect(h.url) as stream:
            assert isinstance(await stream.receive(), HelloMessage)
            await stream.subscribe(spans="raw")
            await h.streamer.wait_subscribed(1)
            await h.send(tuple(batch))  # type: ignore[arg-type]  # one decoder batch
            await h.finish()
            got = await _collect(stream)
    assert [m.index for m in got if isinstance(m, TokenMessage)] == list(range(50))
    told = [m for m in got if isinstance(m, DroppedMessage)]
    assert told and all(m.server for m in told)
    stats = h.streamer.statistics()
    assert stats.server_dropped > 9000 and stats.server_dropped_kept == 0
    assert sum(m.classes.get("span", 0) for m in told) == stats.server_dropped
    assert set(told[-1].totals) == {"span", "records"} and told[-1].totals["records"] == 0
