"""``monitor --device``: serve a device on a private loopback stream and watch it.

The run starts once the watcher has subscribed (``wait_clients=1``), so it sees the whole run;
the device session ends when the watcher does.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from tinytelem.errors import ConfigError
from tinytelem.session.options import ServeOptions
from tinytelem.session.serve import serve_device

__all__ = ["watch_device"]

T = TypeVar("T")


async def watch_device(
    options: ServeOptions,
    stop: trio.Event,
    watch: Callable[[str, str], Awaitable[T]],
) -> T:
    """Serve ``options.device`` on ``ws://127.0.0.1:<free port>`` with a fresh token and run
    ``watch(url, token)`` against it; returns what ``watch`` returns."""
    private = secrets.token_urlsafe(24)
    options = dataclasses.replace(options, listen="ws://127.0.0.1:0", token=private,
                                  wait_clients=1)
    listening: list[str] = []
    ready = trio.Event()

    def on_listening(url: str) -> None:
        listening.append(url)
        ready.set()

    async with trio.open_nursery() as nursery:
        async def serve() -> None:
            await serve_device(options, stop, on_listening=on_listening)
            ready.set()

        nursery.start_soon(serve)
        await ready.wait()
        if not listening:
            raise ConfigError(f"could not start a stream for {options.device}")
        result = await watch(listening[0], private)
        stop.set()  # the device session ends with the view
        nursery.cancel_scope.cancel()
    return result
