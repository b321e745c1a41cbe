"""``tinytelem serve``: run a device's actor graph and stream it live over websocket."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tinytelem.cli.common import device_option, run_options, run_trio, stop_on_signals

F = TypeVar("F", bound=Callable[..., Any])


def stream_server_options(listen_flag: str = "--listen", default: str | None = None
                          ) -> Callable[[F], F]:
    """``--listen/--serve URL --token --tls-cert --tls-key``, shared by serve and record."""

    def decorate(fn: F) -> F:
        for option in reversed([
            click.option(listen_flag, "listen", default=default, show_default=True,
                         metavar="ws://HOST:PORT",
                         help="Websocket address to stream on (wss:// with --tls-cert). A "
                              "non-loopback address needs a token."),
            click.option("--token", default=None, metavar="TOKEN",
                         help="Bearer token clients must send (default: $TINYTELEM_TOKEN). "
                              "Required unless listening on loopback."),
            click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
                         help="PEM certificate (chain) for wss://."),
            click.option("--tls-key", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
                         help="PEM private key for --tls-cert."),
        ]):
            fn = option(fn)
        return fn

    return decorate


@click.command("serve")
@device_option()
@stream_server_options(default="ws://127.0.0.1:8765")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also record an HDF5 trace (with power summaries) to this file.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--run", "start_run", is_flag=True,
              help="Start one inference (RUN); the stream ends after it.")
@run_options(tokens_help="Tokens to generate with --run.")
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Stop after this many seconds (default: Ctrl-C, or the end of --run).")
@click.option("--sensor", type=click.Choice(["auto", "sim", "none"]), default="auto",
              show_default=True,
              help="'sim' samples the twin's power waveform (emu: devices); 'auto' is sim for "
                   "emu: devices and none otherwise.")
@click.option("--sensor-rate", type=click.FloatRange(1.0, 2e6), default=100_000.0,
              show_default=True, help="Simulated sensor rate in samples/s.")
@click.option("--client-queue", type=click.IntRange(1), default=65536, show_default=True,
              help="Droppable messages (spans, raw power; at most 8 MiB) queued per client "
                   "before its oldest are dropped. Tokens, runs, memory, errors and summaries "
                   "are kept apart.")
@click.option("--wait-clients", type=click.IntRange(0), default=0, show_default=True,
              metavar="N",
              help="Start recording (and --run) only once N authenticated clients have "
                   "subscribed, so nobody misses the start.")
@click.option("--wait-timeout", type=click.FloatRange(0.0, min_open=True), default=None,
              metavar="SECONDS",
              help="With --wait-clients: give up (exit 1) if they have not subscribed by then "
                   "(default: wait until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print streamer statistics as JSON.")
def serve(
    device: str, listen: str, token: str | None, tls_cert: Path | None, tls_key: Path | None,
    out: Path | None, overwrite: bool, start_run: bool, run: dict[str, Any],
    duration: float | None, sensor: str, sensor_rate: float, client_queue: int,
    wait_clients: int, wait_timeout: float | None, as_json: bool,
) -> None:
    """Stream a device live: power summaries, tokens, spans, memory, link health.

    Clients: `tinytelem monitor URL`, the Python API `tinytelem.client.connect`, or any
    websocket client speaking docs/streaming.md (msgpack or JSON subprotocol).

    \b
    Examples:
      tinytelem serve --device emu:esp32s3 --run --listen ws://127.0.0.1:8765
      tinytelem serve --device emu:esp32s3 --run --tokens 400 --wait-clients 2
    """
    import trio
    from rich.console import Console

    from tinytelem.live.security import check_listen_security, parse_listen, resolve_token
    from tinytelem.session.options import ServeOptions
    from tinytelem.session.serve import serve_device

    # Refuse an unsafe configuration before opening the device.
    check_listen_security(parse_listen(listen), resolve_token(token), tls_cert, tls_key)
    options = ServeOptions(
        device=device, listen=listen, token=token, tls_cert=tls_cert, tls_key=tls_key, out=out,
        overwrite=overwrite, run=start_run, duration_s=duration, sensor=sensor,
        sensor_rate_hz=sensor_rate, client_queue=client_queue,
        wait_clients=wait_clients, wait_timeout_s=wait_timeout, **run,
    )
    if wait_timeout is not None and not wait_clients:
        raise click.UsageError("--wait-timeout needs --wait-clients N")
    console = Console(stderr=True)

    async def main() -> Any:
        stop = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, stop, console.print,
                               "stopping: saying bye to clients ...")
            shown: list[tuple[int, int]] = []

            def on_waiting(connected: int, subscribed: int) -> None:
                if shown and shown[-1] == (connected, subscribed):
                    return
                shown.append((connected, subscribed))
                if subscribed >= wait_clients:
                    console.print(f"{subscribed} client(s) subscribed: starting")
                    return
                limit = f"{wait_timeout:g} s" if wait_timeout is not None else "Ctrl-C"
                console.print(f"waiting for {wait_clients} client(s) to subscribe: "
                              f"{connected} connected, {subscribed} subscribed (until {limit})")

            result = await serve_device(
                options, stop,
                on_listening=lambda url: console.print(f"streaming {device} on {url}"),
                on_waiting=on_waiting,
            )
            nursery.cancel_scope.cancel()
        return result

    result = run_trio(main)
    stats = result.streamer
    if as_json:
        click.echo(json.dumps({"url": result.url, "trace": str(result.trace or ""),
                               "streamer": dataclasses.asdict(stats)}, indent=2))
    else:
        by_class: dict[str, int] = {}
        for c in stats.clients:
            for cls, n in c.dropped_by_class.items():
                by_class[cls] = by_class.get(cls, 0) + n
        lost = ", ".join(f"{cls} {n}" for cls, n in sorted(by_class.items())) or "none"
        console.print(f"served {stats.records_in} records to {stats.clients_total} client(s); "
                      f"dropped for slow clients: {lost}; dropped by the server: "
                      f"{stats.server_dropped}; refused: {stats.rejected}")
