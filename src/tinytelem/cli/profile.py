"""``tinytelem profile``: a complete profiling run (device, sensor, trace, summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tinytelem.cli.common import device_option, run_options, run_trio, sensor_setting_options


@click.command("profile")
@device_option(default="emu:esp32s3")
@click.option("--session", "session_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A lab session file (TOML; docs/lab.md): profile every device it names at "
                   "once, each measured by the sensor the file gives it, instead of "
                   "--device/--sensor; OUT gets <device id>.h5, .ttraw.zst and .summary.json "
                   "per device and lab.json.")
@run_options()
@click.option("--sensor", default="auto", show_default=True, metavar="SPEC",
              help="Power sensor: auto (sim for emu:, RAPL for native: when readable, else "
                   "none), sim (samples the twin's power waveform), none, "
                   "ppk2:/dev/ttyACM0, ina:/dev/ttyUSB0, joulescope[:PATH], rapl, "
                   "hwmon:NAME, jetson, rpi5-pmic (see docs/sensors.md).")
@sensor_setting_options()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Directory for trace.h5, summary.json and raw.ttraw.zst.")
@click.option("--overwrite", is_flag=True, help="Replace files of an earlier run in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of a table.")
def profile(
    device: str, session_file: Path | None, run: dict[str, Any], sensor: str,
    calibration: Path | None, sensor_rate: float, power_store: str, out_dir: Path,
    overwrite: bool, as_json: bool,
) -> None:
    """Profile one inference: TTFT, inter-token latency, memory, power and energy per token.

    Writes OUT/trace.h5 (HDF5 trace), OUT/raw.ttraw.zst (raw link capture) and OUT/summary.json.
    With --session, every device of the lab at once (docs/lab.md); the exit status is 1 when
    any device failed (the others' files are kept).

    \b
    Example (no hardware needed):
      tinytelem profile --device emu:esp32s3 --out runs/demo
    """
    from click.core import ParameterSource
    from rich.console import Console

    from tinytelem.analysis.summary import render_table
    from tinytelem.session.options import ProfileOptions
    from tinytelem.session.profile import run_profile

    options = ProfileOptions(
        device=device, out_dir=out_dir, sensor=sensor, sensor_rate_hz=sensor_rate,
        overwrite=overwrite, calibration=calibration, power_store=power_store, **run,
    )
    if session_file is not None:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("device") is not ParameterSource.DEFAULT:
            raise click.UsageError("--device and --session are mutually exclusive: give "
                                   "--device URL (one device) or --session FILE (a lab)")
        if ctx.get_parameter_source("sensor") is not ParameterSource.DEFAULT:
            raise click.UsageError("with --session the sensors come from the session file "
                                   "([sensors.NAME] with spec and measures); drop --sensor")
        _profile_lab(session_file, options, as_json)
        return
    n_tokens = options.n_tokens
    console = Console(stderr=as_json)
    from tinytelem.session.core import link_advice, predict_link

    fit = predict_link(options)
    advice = link_advice(fit) if fit is not None else None
    if advice is not None:
        console.print(f"[yellow]warning:[/yellow] {advice}")
    show_progress = sys.stderr.isatty() and not as_json

    async def main() -> object:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if not show_progress:
            return await run_profile(options)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), console=console, transient=True) as progress:
            task = progress.add_task("starting device", total=None)

            def ready(handle: object) -> None:
                progress.update(task, description=f"running on {device}", total=n_tokens)

            def token(n: int) -> None:
                progress.update(task, completed=min(n, n_tokens))

            return await run_profile(options, on_token=token, on_ready=ready)

    from tinytelem.session.profile import ProfileResult

    result = run_trio(main)
    assert isinstance(result, ProfileResult)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
        return
    if result.text is not None:
        console.print(f"[dim]generated:[/dim] {result.text}")
    elif options.model is None:
        console.print("[dim]built-in model (seeded random weights): timing is real, text is not; "
                      "pass --model and --tokenizer for a trained model[/dim]")
    console.print(render_table(result.summary))
    for warning in result.summary.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"trace   {result.trace_path}\nsummary {result.summary_path}\n"
                  f"raw     {result.raw_path}")


def _profile_lab(session_file: Path, base: Any, as_json: bool) -> None:
    """``profile --session``: every device of the lab at once (session/lab.py), one row each."""
    import trio
    from rich.console import Console

    from tinytelem.analysis.summary import render_devices_table
    from tinytelem.session.core import link_advice, predict_link
    from tinytelem.session.lab import LAB_REPORT, lab_profiles, load_lab, run_lab

    lab = load_lab(session_file)
    devices = lab_profiles(lab, base, base.out_dir)
    console = Console(stderr=True)
    for device_id, options in devices:
        fit = predict_link(options)
        advice = link_advice(fit) if fit is not None else None
        if advice is not None:
            console.print(f"[yellow]warning:[/yellow] {device_id}: {advice}")

    async def main() -> Any:
        return await run_lab(
            devices, trio.Event(), report=base.out_dir / LAB_REPORT,
            on_ready=lambda i, h: console.print(f"profiling {i}: {h.url}"),
            on_device_end=lambda r: console.print(
                f"{r.device_id}: " + ("done" if r.ok else f"[red]FAILED[/red]: {r.error}")))

    results = run_trio(main)
    if as_json:
        click.echo(json.dumps({"lab": lab.name, "out": str(base.out_dir), "devices": [
            {"id": r.device_id, "url": r.url, "ok": r.ok, "error": r.error,
             "trace": str(r.trace), "summary_path": str(r.summary_path or "") or None,
             "run_uid": r.run_uid, "summary": r.summary} for r in results]}, indent=2))
    else:
        shown = Console()
        shown.print(render_devices_table([(r.device_id, r.summary, r.error) for r in results],
                                         title=f"{lab.name}: {len(results)} devices"))
        shown.print(f"traces and summaries in {base.out_dir}, devices in "
                    f"{base.out_dir / LAB_REPORT}")
    if not all(r.ok for r in results):
        raise SystemExit(1)
