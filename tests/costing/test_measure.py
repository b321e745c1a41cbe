"""How calibration and bench/firmware.py read one firmware run, against a scripted firmware."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tinytelem.costing.measure import firmware_run
from tinytelem.errors import ConfigError
from tinytelem.protocol.codec import FrameDecoder, encode_frame
from tinytelem.protocol.commands import Config, Run
from tinytelem.protocol.messages import Hello, InferBegin, InferEnd, Token

HELLO = Hello(240_000_000, 1_000_000, 512 * 1024, 0, 0, 3, bytes(32), "esp32s3", "fw", "m")


async def _firmware(stream: trio.abc.Stream, status: int, close_mid_run: bool) -> None:
    """Says HELLO at boot and after CONFIG; answers RUN with one token and INFER_END."""
    dec = FrameDecoder()
    await stream.send_all(encode_frame(HELLO, 0, 10))
    seq = 1
    while True:
        data = await stream.receive_some(4096)
        if not data:
            return
        dec.receive_data(bytes(data))
        for frame in dec.events():
            message = getattr(frame, "message", None)
            if isinstance(message, Config):
                await stream.send_all(encode_frame(HELLO, seq, 20))
            elif isinstance(message, Run):
                await stream.send_all(encode_frame(InferBegin(message.run_id, 1, 1), seq, 30))
                if close_mid_run:
                    await stream.aclose()
                    return
                await stream.send_all(encode_frame(Token(0, 7, 1), seq + 1, 40))
                end = InferEnd(message.run_id, 1, status)
                await stream.send_all(encode_frame(end, seq + 2, 50))
            seq += 3


async def _run(status: int = 0, close_mid_run: bool = False) -> tuple[Hello, list[object]]:
    host, device = trio.testing.memory_stream_pair()
    out: list[tuple[Hello, list[object]] | ConfigError] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_firmware, device, status, close_mid_run)
            try:
                out.append(await firmware_run(host, level=1, n_tokens=1))
            except ConfigError as exc:  # raised outside the nursery, not in an ExceptionGroup
                out.append(exc)
            nursery.cancel_scope.cancel()
    if isinstance(out[0], ConfigError):
        raise out[0]
    return out[0]


async def test_firmware_run_returns_the_hello_and_the_run_frames() -> None:
    hello, frames = await _run()
    assert hello == HELLO
    kinds = [type(f.message) for f in frames]  # type: ignore[attr-defined]
    assert kinds == [InferBegin, Token, InferEnd]


async def test_firmware_run_reports_a_failed_run() -> None:
    with pytest.raises(ConfigError, match="ended the run with status 2"):
        await _run(status=2)


async def test_firmware_run_reports_a_link_closed_mid_run() -> None:
    with pytest.raises(ConfigError, match="closed the link in the middle of a run"):
        await _run(close_mid_run=True)
