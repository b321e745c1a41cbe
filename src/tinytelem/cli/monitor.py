"""``tinytelem monitor``: a live terminal view of a stream (or of a device, streamed locally)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from tinytelem.cli.common import run_options, run_trio


@click.command("monitor")
@click.argument("url", required=False)
@click.option("--device", default=None,
              help="Watch a device directly (starts a private loopback stream): emu:<platform>, "
                   "tcp://..., serial://...")
@click.option("--token", default=None, help="Bearer token of URL (default: $TINYTELEM_TOKEN).")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust this PEM certificate for wss:// (self-signed servers).")
@click.option("--level", default="100ms", show_default=True,
              help="Power summary level: 1ms, 10ms, 100ms or 1s.")
@click.option("--rate", type=click.FloatRange(0.1, 100.0), default=5.0, show_default=True,
              help="Summary batches per second.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="Seconds between plain lines when stdout is not a terminal.")
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Stop after this many seconds (default: the end of the stream, or Ctrl-C).")
@click.option("--reconnect/--no-reconnect", default=True, show_default=True,
              help="Retry a lost connection to URL.")
@click.option("--run", "start_run", is_flag=True, help="With --device: start one inference.")
@run_options(tokens_help="With --device --run: tokens to generate.")
@click.option("--json", "as_json", is_flag=True,
              help="No live view: print one JSON summary at the end (tokens expected and "
                   "missing, latency, power, drops per stream class).")
def monitor(
    url: str | None, device: str | None, token: str | None, cafile: Path | None, level: str,
    rate: float, interval: float, duration: float | None, reconnect: bool, start_run: bool,
    run: dict[str, Any], as_json: bool,
) -> None:
    """Watch power, tokens/s, TTFT, ITL percentiles, memory and link health live.

    Give the URL of `tinytelem serve` (or `record --serve`), or --device to watch a device
    directly. When stdout is not a terminal, plain status lines are printed every --interval.
    Anything this view lost is shown as LOST (per stream class); a run whose tokens did not
    all arrive is never reported "ok".

    \b
    Examples:
      tinytelem monitor ws://127.0.0.1:8765
      tinytelem monitor --device emu:esp32s3 --run --tokens 32
      tinytelem monitor --device emu:esp32s3 --run --tokens 400 --json
    """
    import trio

    from tinytelem.live.security import client_ssl_context, resolve_token
    from tinytelem.live.watch import watch_stream

    if (url is None) == (device is None):
        raise click.UsageError("give either a stream URL or --device (not both)")
    tty = sys.stdout.isatty() and not as_json
    ssl_context = client_ssl_context(cafile) if cafile is not None else None

    async def view(state: Any, t0: float, stop: trio.Event) -> None:
        if as_json:
            await stop.wait()
        elif tty:
            await _live_view(state, t0, stop)
        else:
            await _plain_lines(state, t0, stop, interval)

    async def watch(stream_url: str, stream_token: str | None, stop: trio.Event) -> None:
        state, seconds = await watch_stream(
            stream_url, stop, view, token=stream_token, ssl_context=ssl_context,
            reconnect=reconnect and device is None, level=level, rate_hz=rate)
        if as_json:
            click.echo(json.dumps(state.summary(seconds), indent=2))
        elif not tty:
            click.echo(state.line(seconds))

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            if duration is not None:
                nursery.start_soon(_stop_after, duration, stop)
            if url is not None:
                await watch(url, resolve_token(token), stop)
            else:
                from tinytelem.session.monitor import watch_device
                from tinytelem.session.options import ServeOptions

                assert device is not None
                options = ServeOptions(device=device, run=start_run, **run)
                await watch_device(options, stop, lambda u, t: watch(u, t, stop))
            nursery.cancel_scope.cancel()

    run_trio(main)


async def _stop_after(seconds: float, stop: Any) -> None:
    import trio

    await trio.sleep(seconds)
    stop.set()


async def _plain_lines(state: Any, t0: float, stop: Any, interval: float) -> None:
    import trio

    while not stop.is_set():
        with trio.move_on_after(interval):
            await stop.wait()
        if not stop.is_set():
            click.echo(state.line(time.monotonic() - t0))


async def _live_view(state: Any, t0: float, stop: Any) -> None:
    import trio
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(state.renderable(0.0, console.width), console=console, refresh_per_second=8,
              transient=False) as live:
        while not stop.is_set():
            with trio.move_on_after(0.125):
                await stop.wait()
            live.update(state.renderable(time.monotonic() - t0, console.width))
