"""``tinytelem collect``: keep every run summary a fleet publishes to an MQTT broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tinytelem.cli.common import broker_config, run_trio, stop_on_signals


@click.command("collect")
@click.option("--broker", required=True, metavar="mqtt[s]://[USER@]HOST[:PORT]/PREFIX",
              help="The broker and topic prefix the recorders publish to (record --publish). "
                   "Password: TINYTELEM_MQTT_PASSWORD or --mqtt-password-file.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory: OUT/<host>/<device>/<run_uid>/summary.json (+ runs.jsonl).")
@click.option("--power", is_flag=True,
              help="Also keep the decimated power statistics (100 ms buckets) per device in "
                   "OUT/<host>/<device>/power.jsonl.")
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--mqtt-password-file", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="File whose first line is the MQTT password.")
@click.option("--mqtt-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate (PEM) to verify an mqtts:// broker with.")
@click.option("--mqtt-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Client certificate (PEM) for an mqtts:// broker.")
@click.option("--mqtt-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Key of --mqtt-cert (PEM).")
@click.option("--sessions", type=click.IntRange(1), default=None, metavar="N",
              help="Stop once N recordings' session summaries are kept (scripts, CI).")
@click.option("--client-id", metavar="ID",
              help="MQTT client id of this collector [default: derived from the host name and "
                   "--out]. The broker keeps its subscriptions, and the summaries published "
                   "while it is away, under this id (a persistent session).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON at the end.")
def collect(broker: str, out: Path, power: bool, duration: float | None, sessions: int | None,
            client_id: str | None, as_json: bool, **mqtt: Any) -> None:
    """Subscribe to a fleet and keep every run's summary exactly once (QoS 1 may deliver a
    message twice: summaries are keyed by host, device and run id).

    \b
    Then compare runs from every host:
      tinytelem compare OUT --csv summaries.csv
    """
    import dataclasses
    import math

    import trio
    from rich.console import Console

    from tinytelem.live.collect import Collector
    from tinytelem.live.mqtt import MqttConnection

    config = broker_config(broker, mqtt)
    collector = Collector(out, prefix=config.prefix, power=power)
    if client_id is None:
        import hashlib
        import socket

        where = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
        client_id = f"tinytelem-collect-{socket.gethostname()}-{where}"
    connection = MqttConnection(config, subscriptions=collector.subscriptions,
                                on_message=collector.handle, client_id=client_id,
                                clean_session=False)
    console = Console(stderr=True)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, stop, console.print, "stopping ...")
            await nursery.start(connection.run)
            console.print(f"collecting {config.display()} -> {out} (Ctrl-C stops)")
            with trio.move_on_after(duration if duration is not None else math.inf):
                while not stop.is_set():
                    if sessions is not None and collector.statistics().sessions >= sessions:
                        break
                    with trio.move_on_after(0.1):
                        await stop.wait()
            nursery.cancel_scope.cancel()

    out.mkdir(parents=True, exist_ok=True)
    run_trio(main)
    stats = dataclasses.asdict(collector.statistics())
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in stats.items()))
