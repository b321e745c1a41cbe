"""The engine calibration: instructions per operator of the C engine, per ISA family.

Written by ``tinytelem firmware calibrate`` (:mod:`tinytelem.costing.measure`) to
``calibration/engine.json`` and read here. :meth:`EngineCalibration.instructions` evaluates the
fitted linear model of one operator span; the cost model turns instructions into board time.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.costing.features import OpFeatures
from tinytelem.errors import ConfigError

__all__ = ["EngineCalibration", "calibration_file", "calibration_path", "load_calibration"]

CALIBRATED_FLOAT = 32


_HERE = Path(__file__).resolve()
CHECKOUT_CALIBRATION = _HERE.parents[3] / "calibration"
"""``calibration/`` of the source checkout (src/tinytelem/costing/ is three levels below)."""
PACKAGED_CALIBRATION = _HERE.parents[1] / "_calibration"
"""The copy a wheel carries (setup.py copies ``calibration/`` there)."""


def calibration_file(name: str) -> Path | None:
    """``calibration/<name>`` of the source checkout, else the wheel's copy, else None."""
    for folder in (CHECKOUT_CALIBRATION, PACKAGED_CALIBRATION):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def calibration_path() -> Path:
    """``calibration/engine.json`` of the source checkout, or the copy an installed wheel carries.

    Raises:
        ConfigError: neither is there.
    """
    found = calibration_file("engine.json")
    if found is None:
        raise ConfigError("calibration/engine.json was not found next to this tinytelem; "
                          "reinstall tinytelem or regenerate it with `tinytelem firmware "
                          "calibrate` in a source checkout")
    return found


@dataclass(frozen=True)
class EngineCalibration:
    """The fitted coefficients of one ISA family."""

    family: str
    engine_hash: str
    calibration_id: str
    ops: Mapping[str, Mapping[str, float]]
    frame: Mapping[str, float]
    residual: Mapping[str, float]
    bits: tuple[int, ...]
    span_record: float = 0.0
    """Instructions of one span event (a record appended to the pending SPAN_BATCH)."""

    def _bits(self, b: int) -> int:
        if b in self.bits:
            return b
        if b > 8:  # f16 runs the float path
            return CALIBRATED_FLOAT
        raise ConfigError(f"the engine calibration of {self.family} has no {b}-bit kernels "
                          f"(calibrated: {', '.join(map(str, self.bits))})")

    def kernel_width(self, bits: int) -> int:
        """The calibrated kernel width that runs ``bits``-wide weights (f16 runs the float
        path).

        Raises:
            ConfigError: no calibrated kernel runs them.
        """
        return self._bits(bits)

    def instructions(self, op: OpFeatures) -> float:
        """Fitted instructions of one operator span (never below zero)."""
        if op.kind == "embed":
            (key, _), = ((k, v) for k, v in op.features.items() if k.startswith("one_"))
            b = self._bits(int(key.split("_")[1]))
            if f"embed_{b}" not in self.ops:  # calibrated embeddings are 8-bit or float
                b = 8 if b <= 8 else CALIBRATED_FLOAT
            coef = self.ops[f"embed_{b}"]
            feats = {f"{k.split('_')[0]}_{b}": v for k, v in op.features.items()}
        elif op.kind == "matvec":
            coef = self.ops["matvec"]
            feats = {}
            for k, v in op.features.items():
                name, _, width = k.rpartition("_")
                feats[f"{name}_{self._bits(int(width))}" if width.isdigit() else k] = v
        else:
            coef = self.ops[op.kind]
            feats = dict(op.features)
        return max(0.0, sum(coef.get(k, 0.0) * v for k, v in feats.items()))

    def frame_instructions(self, wire_bytes: int) -> float:
        """Instructions the firmware spends building and sending one frame."""
        return max(0.0, self.frame["one"] + self.frame["bytes"] * wire_bytes)

    def residual_instructions(self, n_layers: int) -> float:
        """Instructions per forward pass outside every operator span (the token loop)."""
        return max(0.0, self.residual["one"] + self.residual["layers"] * n_layers)


@functools.cache
def _document(path: str) -> tuple[dict[str, Any], str]:
    raw = Path(path).read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); regenerate it with "
                          "`tinytelem firmware calibrate`") from exc
    return doc, hashlib.sha256(raw).hexdigest()[:12]


def load_calibration(family: str, path: Path | None = None) -> EngineCalibration:
    """The calibration of ``family`` (e.g. ``cortex-m4``).

    Raises:
        ConfigError: the file is missing or has no such family.
    """
    p = path or calibration_path()
    doc, digest = _document(str(p))
    fams = doc.get("families", {})
    if family not in fams:
        raise ConfigError(f"the engine calibration has no family {family!r} (it has "
                          f"{', '.join(sorted(fams))}); fix the platform's isa_family")
    f = fams[family]
    engine = str(doc.get("engine_hash", "unknown"))
    return EngineCalibration(family, engine, f"engine-{engine[:12]}-{digest}", f["ops"],
                             f["frame"], f["residual"], tuple(int(b) for b in f["bits"]),
                             float(f.get("span_record", 0.0)))


def run_instructions(cal: EngineCalibration, shape: Any, bits: Any, forwards: int,
                     generated: int, frames: Mapping[int, float] | None = None) -> float:
    """Predicted instructions of a greedy run of ``forwards`` passes (positions 0..forwards-1)
    and ``generated`` samples, plus ``frames`` (wire bytes -> count) the firmware sends: what
    ``-icount`` measures between INFER_BEGIN and INFER_END."""
    from tinytelem.costing.features import forward_ops, sample_features

    total = 0.0
    for pos in range(forwards):
        total += sum(cal.instructions(o) for o in forward_ops(shape, pos, bits))
        total += cal.residual_instructions(shape.n_layers)
    total += generated * cal.instructions(sample_features(shape))
    for size, n in (frames or {}).items():
        total += n * cal.frame_instructions(int(size))
    return total
