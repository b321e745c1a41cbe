"""``tinytelem record``: record a device's telemetry until Ctrl-C, a duration or N tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tinytelem.cli.common import (
    broker_config,
    device_option,
    publish_options,
    run_options,
    run_trio,
    sensor_setting_options,
    stop_on_signals,
)
from tinytelem.cli.serve import stream_server_options


@click.command("record")
@device_option(required=False)
@click.option("--session", "session_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A lab session file (TOML; docs/lab.md) naming many devices and the sensors "
                   "that measure them, recorded at once instead of --device/--sensor; --out "
                   "is then a directory that gets one trace per device, OUT/<device id>.h5.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Trace file to write (HDF5); the raw capture goes beside it as .ttraw.zst. "
                   "With --session: the directory for the traces.")
@click.option("--max-tokens", type=click.IntRange(1), default=None,
              help="Stop after this many TOKEN frames.")
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--run", "start_run", is_flag=True,
              help="Also start one inference (RUN) and stop after it ends.")
@click.option("--repeat", default="1", show_default=True, metavar="N|forever",
              help="With --run: this many runs one after another (each keeps its run id), or "
                   "forever (until Ctrl-C, --duration or --max-tokens).")
@click.option("--interval", type=click.FloatRange(0.0), default=0.0, show_default=True,
              metavar="SECONDS",
              help="With --repeat: start a run this long after the previous one started "
                   "(0: as soon as it ended).")
@click.option("--prompts", "prompts_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --run: a text file of prompts, one per line, that the runs take in "
                   "turn (instead of --prompt).")
@run_options(tokens_help="Tokens to generate with --run (per run; at most what the model's "
                         "context holds after the prompt).")
@click.option("--sensor", "sensors", multiple=True, metavar="SPEC",
              help="Power sensor, as profile takes it: auto, sim (the twin's waveform), none "
                   "[default], ppk2:/dev/ttyACM0, ina:/dev/ttyUSB0, joulescope[:PATH], rapl, "
                   "hwmon:NAME, jetson, rpi5-pmic (see docs/sensors.md). One per trace.")
@sensor_setting_options()
@click.option("--rotate", metavar="PERIOD|SIZE",
              help="Write segments NAME-0001.h5, NAME-0002.h5, ... (each with its raw capture), "
                   "starting the next after this long (90s, 30m, 1h) or at this size "
                   "(500MB, 2GB).")
@click.option("--overwrite", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
@stream_server_options(listen_flag="--serve")
@publish_options()
def record(
    device: str | None, session_file: Path | None, out: Path, max_tokens: int | None,
    duration: float | None, start_run: bool,
    repeat: str, interval: float, prompts_file: Path | None, run: dict[str, Any],
    sensors: tuple[str, ...], calibration: Path | None, sensor_rate: float, power_store: str,
    rotate: str | None,
    overwrite: bool, as_json: bool,
    listen: str | None, token: str | None, tls_cert: Path | None, tls_key: Path | None,
    publish: dict[str, Any] | None,
) -> None:
    """Record everything a device sends into an HDF5 trace (Ctrl-C stops cleanly).

    The trace is flushed at least twice a second: if the recorder is killed, the file still
    opens with everything up to the last flush.
    """

    import trio
    from rich.console import Console

    from tinytelem.session.options import RecordOptions
    from tinytelem.session.record import load_prompts, one_sensor, run_record

    if (device is None) == (session_file is None):
        raise click.UsageError("give --device URL (one device) or --session FILE (a lab)")
    if session_file is not None and sensors:
        raise click.UsageError("with --session the sensors come from the session file "
                               "([sensors.NAME] with spec and measures); drop --sensor")
    options = RecordOptions(
        device=device or "", out=out, max_tokens=max_tokens, duration_s=duration, run=start_run,
        overwrite=overwrite, sensor=one_sensor(sensors), sensor_rate_hz=sensor_rate,
        calibration=calibration, repeat=_parse_repeat(repeat), interval_s=interval,
        prompts=load_prompts(prompts_file) if prompts_file is not None else None,
        rotate=rotate, power_store=power_store, **run,
    )
    console = Console(stderr=True)
    publisher = None
    if publish is not None:
        from tinytelem.live.publish import Publisher

        publisher = Publisher(broker_config(publish["publish"], publish),
                              host=publish["fleet_host"], codec=publish["publish_format"])
    if session_file is not None:
        from tinytelem.session.lab import lab_devices, load_lab

        lab = load_lab(session_file)
        if options.out.suffix == ".h5":
            raise click.UsageError(f"with --session, --out is a directory (got {options.out}); "
                                   "the traces go into it as <device id>.h5")
        streamer = None
        if listen is not None:
            from tinytelem.session.serve import make_streamer

            streamer = make_streamer(
                listen, token, tls_cert, tls_key,
                session={"lab": lab.name, "devices": {d.id: d.url for d in lab.devices},
                         "out": str(options.out)},
                on_listening=lambda url: console.print(f"streaming lab {lab.name} on {url}"))
        _record_lab(lab.name, lab_devices(lab, options, options.out), options.out,
                    [o for o in (streamer, publisher) if o is not None], console, as_json)
        return
    if publisher is not None:  # one device through the lab runner, for its outlet
        if listen is not None:
            raise click.UsageError("--serve with --publish needs --session (a lab of one "
                                   "device is fine)")
        _record_lab(out.stem, [(out.stem, options)], out.parent, [publisher], console, as_json)
        return
    extra: list[Any] = []
    if listen is not None:  # --serve: stream live while recording (docs/streaming.md)
        from tinytelem.session.serve import make_streamer

        streamer = make_streamer(listen, token, tls_cert, tls_key,
                                 session={"device": device, "trace": str(out)},
                                 on_listening=lambda url: console.print(f"streaming on {url}"))
        extra.append(streamer.run)

    def run_ended(outcome: Any) -> None:
        if options.repeat == 1 and options.prompts is None:
            return
        begin, end = outcome.run_begin_host_s, outcome.run_end_host_s
        took = (f" in {end - begin:.2f} s (host clock, prompt included)"
                if begin is not None and end is not None else "")
        console.print(f"run {outcome.runs_done}: {len(outcome.token_ids)} tokens{took}, "
                      f"status {outcome.run_status}")

    async def main() -> object:
        stop = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, stop, console.print,
                               "stopping: finishing the trace ...")
            result = await run_record(
                options, stop, extra_actors=extra,
                on_ready=lambda h: console.print(f"recording {h.url} -> {out} (Ctrl-C stops)"),
                on_run_end=run_ended,
            )
            nursery.cancel_scope.cancel()
        return result

    _outcome, summary = run_trio(main)
    _show_summary(summary, as_json)


def _show_summary(summary: dict[str, Any], as_json: bool) -> None:
    import json

    from rich.console import Console

    from tinytelem.analysis.summary import render_table

    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    shown = Console()
    shown.print(render_table(summary))
    for warning in summary.get("warnings", []):
        shown.print(f"[yellow]warning:[/yellow] {warning}")
    if "segments" in summary:
        shown.print(f"{len(summary['segments'])} segments: {summary['segments'][0]} .. "
                    f"{summary['segments'][-1]} (the summary covers them all)")
    if "rolling" in summary:
        from tinytelem.analysis.rolling import render_rolling

        shown.print(render_rolling(summary["rolling"]))


def _parse_repeat(text: str) -> int | None:
    if text.strip().lower() == "forever":
        return None
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a count (1, 2, ...) or forever",
                                 param_hint="--repeat") from None




def _record_lab(name: str, devices: list[tuple[str, Any]], out_dir: Path, outlets: list[Any],
                console: Any, as_json: bool) -> None:
    """``record --session`` (and ``record --publish``): the devices at once, one trace each,
    the outlets riding along."""
    import json

    import trio

    from tinytelem.session.lab import LAB_REPORT, run_lab

    async def main() -> Any:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, stop, console.print,
                               "stopping: finishing the traces ...")
            results = await run_lab(
                devices, stop, outlets=outlets,
                report=out_dir / LAB_REPORT if len(devices) > 1 or name != devices[0][0]
                else None,
                host=next((o.host for o in outlets if hasattr(o, "host")), None),
                on_ready=lambda i, h: console.print(
                    f"recording {i}: {h.url} -> {dict(devices)[i].out} (Ctrl-C stops)"),
                on_device_end=lambda r: console.print(
                    f"{r.device_id}: " + ("done" if r.ok else f"[red]FAILED[/red]: {r.error}")))
            nursery.cancel_scope.cancel()
        return results

    results = run_trio(main)
    if len(results) == 1 and results[0].device_id == name and results[0].summary is not None:
        _show_summary(results[0].summary, as_json)  # record --device --publish: as ever
        return
    table = {r.device_id: {"url": r.url, "trace": str(r.trace), "ok": r.ok, "error": r.error,
                           "run_uid": r.run_uid, "summary": r.summary} for r in results}
    if as_json:
        click.echo(json.dumps({"lab": name, "devices": table}, indent=2))
    else:
        for r in results:
            runs = r.summary.get("runs", []) if r.summary else []
            click.echo(f"{r.device_id:<16} {'ok' if r.ok else 'FAILED':<7} {r.trace}"
                       + (f"  {len(runs)} run(s)" if r.ok else f"  {r.error}"))
    if not any(r.ok for r in results):
        raise SystemExit(1)
