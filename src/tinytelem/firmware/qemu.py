"""Run firmware under QEMU with deterministic instruction counting, linked over TCP.

The host listens on 127.0.0.1:0 first and QEMU connects to it as a client
(``-serial tcp:127.0.0.1:PORT``): the port is known before QEMU starts, and QEMU connects before
the guest runs, so the boot HELLO is never lost. ``-icount shift=0,sleep=off`` makes one guest
instruction take 1 ns of virtual time and gives identical timestamps run to run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.firmware.targets import Target, get_target, require_tools

__all__ = ["QEMU_CONNECT_TIMEOUT_S", "qemu_command", "run_qemu"]

QEMU_CONNECT_TIMEOUT_S = 10.0
RCVBUF_BYTES = 8 << 20


def qemu_command(target: str | Target, elf: Path, port: int, *, icount_shift: int = 0) -> list[str]:
    """The QEMU command line that runs ``elf`` with its UART connected to 127.0.0.1:``port``.

    Raises:
        ConfigError: the target has no QEMU machine.
    """
    t = get_target(target) if isinstance(target, str) else target
    if t.qemu is None or t.machine is None:
        raise ConfigError(f"target {t.name} does not run under QEMU; QEMU targets: cortex-m4, "
                          "cortex-m7, stm32f405, riscv32, riscv32f")
    argv = [t.qemu, "-M", t.machine]
    if t.qemu == "qemu-system-riscv32":
        argv += ["-bios", "none"]
    argv += [
        "-kernel", str(elf),
        "-icount", f"shift={icount_shift},sleep=off",
        "-display", "none", "-monitor", "none",
        "-serial", f"tcp:127.0.0.1:{port}",
        "-semihosting-config", "enable=on,target=native",
        "-no-reboot",
    ]
    return argv


@asynccontextmanager
async def run_qemu(target: str | Target, elf: Path) -> AsyncIterator[trio.SocketStream]:
    """Start QEMU on ``elf`` and yield the TCP stream of its first UART; QEMU ends on exit.

    Raises:
        ConfigError: QEMU is missing (with the install command) or exits before connecting.
        LinkBroken: QEMU did not connect within QEMU_CONNECT_TIMEOUT_S.
    """
    t = get_target(target) if isinstance(target, str) else target
    require_tools(t, run=True)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    # QEMU writes one byte per send(); a large receive buffer keeps it from ever seeing EAGAIN
    # even when the host stalls (an EAGAIN would hold the guest's UART busy for host time).
    # Measured: with continuous reading the UART never reported busy (0 TX-ready polls per
    # run), so the host's reading pace does not reach virtual time.
    listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    port = listener.socket.getsockname()[1]
    argv = qemu_command(t, elf, port)
    with tempfile.TemporaryFile() as errlog:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=errlog.fileno(), stderr=errlog.fileno(),
            env=dict(os.environ),
        )
        try:
            stream: trio.SocketStream | None = None
            with trio.move_on_after(QEMU_CONNECT_TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    async def _watch() -> None:
                        await proc.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(_watch)
                    stream = await listener.accept()
                    nursery.cancel_scope.cancel()
            if stream is None:
                errlog.seek(0)
                detail = errlog.read().decode("utf-8", "replace").strip()
                if proc.poll() is not None:
                    raise ConfigError(f"QEMU exited with status {proc.returncode} before "
                                      f"connecting: {detail or ' '.join(argv)}")
                raise LinkBroken(f"QEMU did not connect to 127.0.0.1:{port} within "
                                 f"{QEMU_CONNECT_TIMEOUT_S:.0f} s ({' '.join(argv)})")
            await listener.aclose()
            try:
                yield stream
            finally:
                await stream.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                if proc.poll() is None:
                    proc.kill()
                    await proc.wait()
