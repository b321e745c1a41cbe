"""The ESP-IDF port, compiled for this host against a shim of the ESP-IDF calls it makes.

What this verifies: firmware/ports/esp-idf/main/port_esp.c and app_main.c (the real files, not
copies) compile with the strict flags next to the portable core, pick the link the Kconfig
choice names (USB-Serial-JTAG or UART0 at 921600 8N1), survive partial driver writes, and
answer the host end to end (HELLO with the ESP facts, PING, RUN with 1 MHz esp_timer ticks,
MEMORY with the FreeRTOS stack high-water). What it cannot verify: the IDF build itself, the
drivers' behaviour on silicon, timing on the chip (docs/firmware.md says so).
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.firmware.helpers import FIRMWARE, compile_c
from tinytelem.protocol import codec
from tinytelem.protocol.codec import FrameDecoder, FrameError, encode_frame
from tinytelem.protocol.messages import Hello, InferEnd, Memory, Ping, Pong, Run, Token

SHIM = Path(__file__).parent / "esp_shim"
MAIN = FIRMWARE / "ports" / "esp-idf" / "main"


def _build(tmp_path: Path, link: str) -> Path:
    sources = [MAIN / "port_esp.c", MAIN / "app_main.c", SHIM / "shim.c",
               FIRMWARE / "telemetry" / "tt_proto.c", FIRMWARE / "core" / "tt_device.c",
               FIRMWARE / "core" / "tt_txring.c",
               FIRMWARE / "engine" / "demo_engine.c"]
    include = [SHIM, MAIN, FIRMWARE / "telemetry", FIRMWARE / "core", FIRMWARE / "engine"]
    return compile_c(sources, tmp_path / f"esp-{link}", include, [f"-DCONFIG_TT_LINK_{link}=1"])


async def _session(exe: Path) -> tuple[list[Any], bytes]:
    proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    dec = FrameDecoder()
    frames: list[Any] = []

    async def until(kind: type) -> Any:
        while True:
            ev = dec.next_event()
            if ev is codec.NEED_DATA:
                data = await proc.stdout.receive_some(65536)  # type: ignore[union-attr]
                assert data, "the port closed its link"
                dec.receive_data(bytes(data))
                continue
            assert not isinstance(ev, FrameError), ev
            frames.append(ev)
            if isinstance(ev.message, kind):
                return ev

    try:
        await until(Hello)
        await proc.stdin.send_all(encode_frame(Ping(77), 0, 0))
        await until(Pong)
        await proc.stdin.send_all(encode_frame(Run(5, 1, 0.0, 4, (1, 9)), 1, 0))
        await until(InferEnd)
        await proc.stdin.aclose()
        await proc.wait()
        err = bytes(await proc.stderr.receive_some(65536))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return frames, err


@pytest.mark.parametrize(("link", "driver"), [
    ("USB_SERIAL_JTAG", b"usb-serial-jtag driver rx 1024 tx 4096"),
    ("UART0", b"uart0 921600 baud data 3 parity 0 stop 1 flow 0"),
])
async def test_firmware_esp_port_runs_on_the_host_shim(tmp_path: Path, link: str,
                                                       driver: bytes) -> None:
    exe = _build(tmp_path, link)
    with trio.fail_after(20):
        frames, err = await _session(exe)
    assert driver in err
    assert _no_gaps(frames)
    hello = next(f.message for f in frames if isinstance(f.message, Hello))
    assert hello.platform == "esp32s3"
    assert (hello.cpu_hz, hello.tick_hz) == (240_000_000, 1_000_000)
    assert (hello.flash_bytes, hello.ram_bytes, hello.psram_bytes) == (8 << 20, 400 << 10,
                                                                      8 << 20)
    pong = next(f.message for f in frames if isinstance(f.message, Pong))
    assert pong.nonce == 77
    tokens = [f.message for f in frames if isinstance(f.message, Token)]
    assert [t.token_id for t in tokens[:2]] == [1, 9] and len(tokens) == 6
    mem = [f.message for f in frames if isinstance(f.message, Memory)]
    assert mem and all(m.stack_peak == 16384 - 12000 for m in mem)
    ticks = [f.ticks for f in frames]
    assert all(b >= a for a, b in itertools.pairwise(ticks))
    assert frames[-1].message.run_id == 5 and frames[-1].message.n_generated == 4


def _no_gaps(frames: list[Any]) -> bool:
    """Every frame arrived whole: sequence numbers have no gap."""
    seqs = [f.seq for f in frames]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))
