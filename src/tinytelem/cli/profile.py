"""``tinytelem profile``: a complete profiling run (device, sensor, trace, summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tinytelem.cli.common import device_option, run_trio, trace_level_option


@click.command("profile")
@device_option(default="emu:esp32s3")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c checkpoint for the device twin (default: built-in 260K model).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer .bin belonging to --model.")
@click.option("--prompt", default="Once upon a time", show_default=True)
@click.option("--tokens", "n_tokens", type=click.IntRange(1, 65535), default=64,
              show_default=True, help="Tokens to generate.")
@click.option("--seed", type=click.IntRange(1, 2**32 - 1), default=42, show_default=True,
              help="Sampling seed (used when --temperature > 0).")
@click.option("--temperature", type=click.FloatRange(0.0), default=0.0, show_default=True)
@trace_level_option()
@click.option("--sensor", default="auto", show_default=True, metavar="SPEC",
              help="Power sensor: auto (sim for emu:, RAPL for native: when readable, else "
                   "none), sim (samples the twin's power waveform), none, "
                   "ppk2:/dev/ttyACM0, ina:/dev/ttyUSB0, joulescope[:PATH], rapl, "
                   "hwmon:NAME, jetson, rpi5-pmic (see docs/sensors.md).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-unit calibration file for the sensor (tinytelem calibrate writes it).")
@click.option("--sensor-rate", type=click.FloatRange(1.0, 1e6), default=100_000.0,
              show_default=True, help="Sensor sample rate in samples/s.")
@click.option("--weight-bits", type=click.Choice(["2", "3", "4", "8", "16", "32"]), default=None,
              help="Weight precision the twin's cost model assumes (default: the model's own, "
                   "32 for a llama2.c or built-in float model, the stored bits of a .tlm).")
@click.option("--fault", "faults", multiple=True, metavar="drop@N",
              help="Twin fault injection (repeatable): drop the link after the N-th token.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Directory for trace.h5, summary.json and raw.zst.")
@click.option("--overwrite", is_flag=True, help="Replace files of an earlier run in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of a table.")
def profile(
    device: str, model: Path | None, tokenizer: Path | None, prompt: str, n_tokens: int,
    seed: int, temperature: float, trace_level: str, sensor: str, calibration: Path | None,
    sensor_rate: float,
    weight_bits: str | None, faults: tuple[str, ...], out_dir: Path, overwrite: bool, as_json: bool,
) -> None:
    """Profile one inference: TTFT, inter-token latency, memory, power and energy per token.

    Writes OUT/trace.h5 (HDF5 trace), OUT/raw.zst (raw link capture) and OUT/summary.json.

    \b
    Example (no hardware needed):
      tinytelem profile --device emu:esp32s3 --out runs/demo
    """
    from rich.console import Console

    from tinytelem.analysis.summary import render_table
    from tinytelem.profiling import ProfileOptions, run_profile
    from tinytelem.protocol.messages import TraceLevel

    options = ProfileOptions(
        device=device, out_dir=out_dir, prompt=prompt, n_tokens=n_tokens, model=model,
        tokenizer=tokenizer, seed=seed, temperature=temperature,
        trace_level=TraceLevel[trace_level.upper()], sensor=sensor, sensor_rate_hz=sensor_rate,
        weight_bits=int(weight_bits) if weight_bits else None, faults=list(faults),
        overwrite=overwrite,
        calibration=calibration,
    )
    console = Console(stderr=as_json)
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

    from tinytelem.profiling import ProfileResult

    result = run_trio(main)
    assert isinstance(result, ProfileResult)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
        return
    if result.text is not None:
        console.print(f"[dim]generated:[/dim] {result.text}")
    elif model is None:
        console.print("[dim]built-in model (seeded random weights): timing is real, text is not; "
                      "pass --model and --tokenizer for a trained model[/dim]")
    console.print(render_table(result.summary))
    console.print(f"trace   {result.trace_path}\nsummary {result.summary_path}\n"
                  f"raw     {result.raw_path}")
