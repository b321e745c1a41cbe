"""Per-unit calibration: gain and offset fitted against reference measurements.

A sensor's reading ``m`` is corrected to ``gain * m + offset`` (amperes; a second pair for
volts when the sensor measures voltage). The coefficients come from a least-squares fit of
reference values (a calibrated DMM or precision load) against the sensor's readings, and carry
standard uncertainties from the fit's covariance, so energy figures can quote how much of their
error bar is calibration. Files are TOML (see calibration/README.md for the procedure)::

    [calibration]
    id = "ppk2-13371337-2025-01-31"
    sensor = "ppk2"
    serial = "13371337"
    date = "2025-01-31"
    [current]
    gain = 1.0021
    offset_a = -1.2e-06
    gain_u = 0.0004
    offset_u_a = 3e-07
    ...

The active calibration is applied in the sensor path and recorded in every trace: root
attribute ``calibration_id`` and the ``/calibration`` group (:meth:`Calibration.trace_attrs`).
"""

from __future__ import annotations

import csv
import datetime
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Calibration", "LinearFit", "fit_linear", "load_reference_csv"]


@dataclass(frozen=True)
class LinearFit:
    """``y = gain * x + offset`` with standard uncertainties and the residual RMS."""

    gain: float
    offset: float
    gain_u: float
    offset_u: float
    cov: float
    """Covariance of gain and offset (needed to propagate the uncertainty of a reading)."""
    residual_rms: float
    n_points: int

    def uncertainty_at(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Standard uncertainty of the corrected value at reading ``x``."""
        xa = np.asarray(x, dtype=np.float64)
        var = xa * xa * self.gain_u**2 + self.offset_u**2 + 2.0 * xa * self.cov
        return np.asarray(np.sqrt(np.maximum(var, 0.0)), dtype=np.float64)


IDENTITY = LinearFit(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def fit_linear(measured: npt.ArrayLike, reference: npt.ArrayLike,
               reference_u: npt.ArrayLike | None = None) -> LinearFit:
    """Least-squares ``reference = gain * measured + offset``.

    With ``reference_u`` (standard uncertainties of the reference values) the fit is weighted
    and the covariance comes from them; without, it is scaled by the residual variance (the
    usual unweighted estimate, which needs at least three points).

    Raises:
        ConfigError: fewer than two points, or all readings equal (no gain to fit).
    """
    x = np.asarray(measured, dtype=np.float64).ravel()
    y = np.asarray(reference, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ConfigError(f"{x.size} readings but {y.size} reference values")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or float(np.ptp(x)) == 0.0:
        raise ConfigError(
            "a gain needs readings at two or more different loads; measure at least zero "
            "current and one reference load (calibration/README.md)")
    if reference_u is not None:
        u = np.asarray(reference_u, dtype=np.float64).ravel()[ok]
        w = 1.0 / np.maximum(u, 1e-30) ** 2
    else:
        w = np.ones_like(x)
    a = np.column_stack([x, np.ones_like(x)])
    aw = a * w[:, None]
    normal = a.T @ aw
    coef = np.linalg.solve(normal, aw.T @ y)
    resid = y - a @ coef
    cov = np.linalg.inv(normal)
    if reference_u is None:
        dof = x.size - 2
        s2 = float(resid @ resid) / dof if dof > 0 else 0.0
        cov = cov * s2
    rms = float(np.sqrt(np.mean(resid**2)))
    return LinearFit(float(coef[0]), float(coef[1]), float(math.sqrt(max(cov[0, 0], 0.0))),
                     float(math.sqrt(max(cov[1, 1], 0.0))), float(cov[0, 1]), rms, int(x.size))


def load_reference_csv(path: Path) -> tuple[npt.NDArray[np.float64], ...]:
    """Read reference measurements: columns ``measured``, ``reference`` and optionally
    ``reference_u`` (any unit suffix such as ``measured_a`` is accepted).

    Returns (measured, reference, reference_u or empty array).
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    except OSError as exc:
        raise ConfigError(f"cannot read reference file {path}: {exc.strerror}") from exc
    if not rows:
        raise ConfigError(f"{path} has no rows; expected a header measured,reference[,"
                          "reference_u] and one row per reference load")

    def column(prefix: str) -> str | None:
        names = [k for k in rows[0] if k and k.strip().lower().startswith(prefix)]
        exact = [k for k in names if k.strip().lower().split("_")[0] == prefix.rstrip("_")]
        return (exact or names or [None])[0]

    cm, cr, cu = column("measured"), column("reference"), column("reference_u")
    if cm is None or cr is None:
        raise ConfigError(f"{path} needs columns 'measured' and 'reference' "
                          f"(found {', '.join(rows[0])})")
    if cu == cr:
        cu = None
    try:
        m = np.array([float(r[cm]) for r in rows])
        ref = np.array([float(r[cr]) for r in rows])
        u = np.array([float(r[cu]) for r in rows]) if cu else np.zeros(0)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: a value is not a number ({exc})") from exc
    return m, ref, u


@dataclass(frozen=True)
class Calibration:
    """One unit's calibration (see the module docstring for the file format)."""

    sensor: str
    serial: str
    date: str
    current: LinearFit = IDENTITY
    voltage: LinearFit = IDENTITY
    notes: str = ""
    reference: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """What traces record as ``calibration_id``."""
        return f"{self.sensor}-{self.serial}-{self.date}"

    @property
    def gain_rel_u(self) -> float:
        """Relative standard uncertainty of the current gain."""
        return abs(self.current.gain_u / self.current.gain) if self.current.gain else math.inf

    def apply_current(self, current_a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Corrected current (float32 in, float32 out)."""
        c = self.current
        if c.gain == 1.0 and c.offset == 0.0:
            return current_a
        return np.asarray(current_a * np.float32(c.gain) + np.float32(c.offset), dtype=np.float32)

    def apply_voltage(self, voltage_v: float) -> float:
        return self.voltage.gain * voltage_v + self.voltage.offset

    def trace_attrs(self) -> dict[str, Any]:
        """Flat attributes for the trace's ``/calibration`` group."""
        out: dict[str, Any] = {"id": self.id, "sensor": self.sensor, "serial": self.serial,
                               "date": self.date, "reference": self.reference}
        for name, fit in (("current", self.current), ("voltage", self.voltage)):
            for k, v in asdict(fit).items():
                out[f"{name}_{k}"] = v
        return out

    # --- files -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration TOML file.

        Raises:
            ConfigError: unreadable file or missing ``[calibration]`` keys.
        """
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read calibration file {p}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"calibration file {p} is not valid TOML: {exc}") from exc
        head = data.get("calibration", {})
        try:
            sensor, serial, date = str(head["sensor"]), str(head["serial"]), str(head["date"])
        except KeyError as exc:
            raise ConfigError(f"{p}: [calibration] needs sensor, serial and date ({exc} is "
                              "missing); see calibration/README.md") from exc

        def fit(section: str, unit: str) -> LinearFit:
            s = data.get(section)
            if not s:
                return IDENTITY
            return LinearFit(float(s.get("gain", 1.0)), float(s.get(f"offset_{unit}", 0.0)),
                             float(s.get("gain_u", 0.0)), float(s.get(f"offset_u_{unit}", 0.0)),
                             float(s.get("cov", 0.0)), float(s.get(f"residual_rms_{unit}", 0.0)),
                             int(s.get("n_points", 0)))

        return cls(sensor, serial, date, fit("current", "a"), fit("voltage", "v"),
                   str(head.get("notes", "")), str(head.get("reference", "")))

    def dumps(self) -> str:
        """The TOML text of this calibration (round-trips through :meth:`load`)."""
        def q(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = ["# tinytelem sensor calibration (see calibration/README.md)", "",
                 "[calibration]", f"id = {q(self.id)}", f"sensor = {q(self.sensor)}",
                 f"serial = {q(self.serial)}", f"date = {q(self.date)}"]
        if self.reference:
            lines.append(f"reference = {q(self.reference)}")
        if self.notes:
            lines.append(f"notes = {q(self.notes)}")
        for section, unit, f in (("current", "a", self.current), ("voltage", "v", self.voltage)):
            if f is IDENTITY:
                continue
            lines += ["", f"[{section}]", f"gain = {f.gain!r}", f"offset_{unit} = {f.offset!r}",
                      f"gain_u = {f.gain_u!r}", f"offset_u_{unit} = {f.offset_u!r}",
                      f"cov = {f.cov!r}", f"residual_rms_{unit} = {f.residual_rms!r}",
                      f"n_points = {f.n_points}"]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")


def today() -> str:
    return datetime.date.today().isoformat()
