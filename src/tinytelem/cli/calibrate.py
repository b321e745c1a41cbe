"""``tinytelem calibrate``: fit gain and offset from reference measurements, write the TOML.

The reference CSV has one row per reference load: the sensor's reading (``measured``), the
reference instrument's value (``reference``) and optionally its standard uncertainty
(``reference_u``). calibration/README.md describes the procedure.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("calibrate")
@click.option("--sensor", required=True, help="Sensor kind or spec, e.g. ppk2 or ina.")
@click.option("--serial", default="unknown", show_default=True,
              help="Unit serial number (PPK2: the HW value of `tinytelem sensors read`).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="CSV: measured,reference[,reference_u] per load.")
@click.option("--quantity", type=click.Choice(["current", "voltage"]), default="current",
              show_default=True, help="What the CSV columns hold (amperes or volts).")
@click.option("--date", default=None, help="Calibration date (default: today).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Calibration TOML to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def calibrate(sensor: str, serial: str, reference: Path, quantity: str, date: str | None,
              out: Path, as_json: bool) -> None:
    """Fit reference = gain x measured + offset (least squares, with uncertainties)."""
    from dataclasses import asdict

    from tinytelem.sensors.calibration import Calibration, fit_linear, load_reference_csv, today

    measured, ref, ref_u = load_reference_csv(reference)
    fit = fit_linear(measured, ref, ref_u if ref_u.size else None)
    kind = sensor.partition(":")[0]
    fields = {quantity: fit}
    cal = Calibration(kind, serial, date or today(), reference=reference.name,
                      **fields)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(out)
    if as_json:
        click.echo(json.dumps({"id": cal.id, "file": str(out), quantity: asdict(fit)},
                              indent=2))
        return
    unit = "A" if quantity == "current" else "V"
    click.echo(f"{cal.id}: gain {fit.gain:.6f} ± {fit.gain_u:.2g}, "
               f"offset {fit.offset:.4g} ± {fit.offset_u:.2g} {unit}, "
               f"residual rms {fit.residual_rms:.3g} {unit} over {fit.n_points} loads")
    click.echo(f"wrote {out}")
