"""Open a device by URL: the twin is spawned for ``emu:``, everything else is a transport.

``emu:<platform>`` starts ``tinytelem emulate`` as a separate process listening on loopback,
reads the addresses it prints, and connects to it over TCP like any networked device; the twin
also offers its power waveform, which the simulated sensor samples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.transports.url import (
    DeviceURL,
    EmuURL,
    ExecURL,
    NativeURL,
    QemuURL,
    parse_device_url,
)

Connector = Callable[[], Awaitable[trio.abc.Stream]]

TWIN_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DeviceHandle:
    """How to reach an opened device."""

    url: str
    """What the user asked for (``emu:esp32s3``)."""
    link_url: str
    """What the link actually connects to (``tcp://127.0.0.1:40123``)."""
    connect: Connector
    reconnect: bool
    platform: str | None = None
    power_url: str | None = None
    """The twin's power waveform channel (emulated devices only)."""


@dataclass(frozen=True)
class TwinOptions:
    """Options passed to the spawned twin."""

    model: Path | None = None
    seed: int = 42
    weight_bits: int | None = None
    """None: the twin costs the model at its own width."""
    drift_ppm: float = 25.0
    faults: Sequence[str] = ()
    link_baud: int | None = None
    """None: a free link; else the twin's frames leave at this UART rate (drop policy)."""


def _connector(url: DeviceURL) -> Connector:
    from tinytelem.transports import open_stream

    async def connect() -> trio.abc.Stream:
        return await open_stream(url)

    return connect


def twin_argv(platform: str, options: TwinOptions) -> list[str]:
    """The command line of a twin for ``platform`` listening on loopback."""
    argv = [
        sys.executable, "-c", "from tinytelem.cli.main import main; main()",
        "emulate", "--platform", platform,
        "--listen", "tcp://127.0.0.1:0", "--power-listen", "tcp://127.0.0.1:0",
        "--seed", str(options.seed),
        "--drift-ppm", str(options.drift_ppm), "--json", "--exit-with-stdin",
    ]
    if options.weight_bits is not None:
        argv += ["--weight-bits", str(options.weight_bits)]
    if options.model is not None:
        argv += ["--model", str(options.model)]
    for fault in options.faults:
        argv += ["--fault", fault]
    if options.link_baud is not None:
        argv += ["--link-baud", str(options.link_baud)]
    return argv


@asynccontextmanager
async def _spawn_twin(url: EmuURL, options: TwinOptions) -> AsyncIterator[DeviceHandle]:
    with tempfile.TemporaryFile() as errlog:
        proc = await trio.lowlevel.open_process(
            twin_argv(url.platform, options),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog.fileno(),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            line = b""
            with trio.move_on_after(TWIN_START_TIMEOUT_S):
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        break
                    line += chunk
            if not line.endswith(b"\n"):
                errlog.seek(0)
                detail = errlog.read().decode("utf-8", "replace").strip().splitlines()
                raise ConfigError(
                    f"the device twin for {url.platform!r} did not start"
                    + (f": {detail[-1]}" if detail else " (no output)")
                )
            info = json.loads(line.split(b"\n", 1)[0])
            link = parse_device_url(info["link"])
            yield DeviceHandle(
                url=url.format(),
                link_url=info["link"],
                connect=_connector(link),
                reconnect=True,
                platform=info.get("platform", url.platform),
                power_url=info.get("power"),
            )
        finally:
            with trio.CancelScope(shield=True):
                if proc.poll() is None:
                    proc.terminate()
                    with trio.move_on_after(5):
                        await proc.wait()
                    if proc.poll() is None:
                        proc.kill()
                        await proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        await pipe.aclose()


def _once(stream: trio.abc.Stream, what: str) -> Connector:
    """A connector that hands out ``stream`` once: a QEMU UART cannot be re-dialled."""
    handed = False

    async def connect() -> trio.abc.Stream:
        nonlocal handed
        if handed:
            raise LinkBroken(f"the link to {what} closed and cannot be reopened (QEMU has one "
                             "UART connection); start a new session")
        handed = True
        return stream

    return connect


@asynccontextmanager
async def _start_firmware(url: QemuURL | NativeURL, model: Path | None = None,
                          link_baud: int | None = None) -> AsyncIterator[DeviceHandle]:
    """Build the firmware if needed (with ``model``, a .tlm, on the llama engine; with
    ``link_baud``, its transmit ring drained at that rate), then run it under QEMU or as a host
    process."""
    from tinytelem.firmware.build import build
    from tinytelem.firmware.targets import get_target

    target = get_target("native" if isinstance(url, NativeURL) else url.target)
    if not target.native and target.qemu is None:
        raise ConfigError(f"target {target.name} does not run under QEMU; use qemu:cortex-m4, "
                          "qemu:cortex-m7, qemu:stm32f405, qemu:riscv32 or qemu:riscv32f")
    result = await trio.to_thread.run_sync(partial(build, target, model, link_baud=link_baud))
    if target.native:
        exe = ExecURL((str(result.elf),))
        yield DeviceHandle(url=url.format(), link_url=exe.format(), connect=_connector(exe),
                           reconnect=False, platform=target.platform)
        return
    from tinytelem.firmware.qemu import run_qemu

    async with run_qemu(target, result.elf) as stream:
        yield DeviceHandle(url=url.format(), link_url=f"{url.format()} ({result.elf.name})",
                           connect=_once(stream, url.format()), reconnect=False,
                           platform=target.platform)


@asynccontextmanager
async def open_device(
    url: str, twin: TwinOptions | None = None, firmware_model: Path | None = None,
    firmware_link_baud: int | None = None,
) -> AsyncIterator[DeviceHandle]:
    """Open the device named by ``url`` for the duration of the ``async with`` block.

    ``firmware_model`` (a .tlm) is linked into the firmware that ``qemu:`` and ``native:``
    devices build, and ``firmware_link_baud`` gives that firmware's transmit path a UART's byte
    rate (drop policy); other devices run whatever model and link their firmware has.
    """
    parsed = parse_device_url(url)
    if isinstance(parsed, EmuURL):
        async with _spawn_twin(parsed, twin or TwinOptions()) as handle:
            yield handle
        return
    if twin is not None and twin.model is not None:
        raise ConfigError(
            f"--model is for the device twin (emu:...); {url} runs whatever model its firmware has"
        )
    if isinstance(parsed, (QemuURL, NativeURL)):
        async with _start_firmware(parsed, firmware_model, firmware_link_baud) as handle:
            yield handle
        return
    if firmware_model is not None:
        raise ConfigError(f"a model can only be linked into qemu: or native: firmware; {url} "
                          "runs whatever model its firmware has")
    yield DeviceHandle(
        url=parsed.format(),
        link_url=parsed.format(),
        connect=_connector(parsed),
        reconnect=not isinstance(parsed, ExecURL),
    )


__all__ = ["DeviceHandle", "LinkBroken", "TwinOptions", "open_device", "twin_argv"]
