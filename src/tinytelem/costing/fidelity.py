"""How far the twin's predictions are from published measurements on real boards.

``calibration/published.toml`` lists published tiny-LLM figures (board, clock, where the
weights live, model, precision, tok/s, exact source). For each point the cost model predicts
decode tok/s for the same model, precision and placement on the platform (with the measured
board's differences, e.g. its PSRAM size, as overrides). A platform may carry one fitted
efficiency factor (its platform file says which points it was fitted to); for every point of a
fitted platform the table also gives the leave-one-out prediction: the factor refitted without
that point (1.0, i.e. unfitted, when the platform has no other point).

A published engine that spread its matmuls over ``cores_used`` cores is predicted with its
compute time divided by ``cores_used`` (ideal scaling: an upper bound on what two cores give)
and its external-memory waits not divided (the cores share one PSRAM/flash bus). A published
harness that sleeps one RTOS tick per token inside its timed loop (``harness_tick_hz``:
FreeRTOS ``vTaskDelay(1)`` wakes at the next tick) is predicted the same way: each token's
time rounded up to whole ticks. The published rate is an average over the run's positions, and
a token's cost grows with its position (attention reads the whole KV cache), so the prediction
averages the same positions: llama2.c's generate loop starts its timer after the first token and
stops at BOS or after its steps, so positions 1 to ``run_positions - 1`` (llama2.c's default 256
steps when the source does not pin the run down, capped at the model's context).
``bench/twin_fidelity.py`` prints the table.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.costing.calibration import EngineCalibration, load_calibration
from tinytelem.costing.features import WeightBits
from tinytelem.errors import ConfigError
from tinytelem.models.llama2c import STORIES260K_SHAPE, LlamaConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PUBLISHED_SHAPES", "FidelityRow", "Point", "fidelity", "fit_efficiency",
           "load_points", "predict_tok_s"]

PUBLISHED_SHAPES: dict[str, LlamaConfig] = {
    "stories260K": STORIES260K_SHAPE,
    "stories15M": LlamaConfig(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6,
                              vocab_size=32000, seq_len=256, shared_classifier=True),
}
DECODE_POSITIONS = 256
"""Positions of a published run whose length the source does not state: llama2.c's default 256
steps (every llama2.c port in calibration/published.toml sets ``steps = 256``)."""


@dataclass(frozen=True)
class Point:
    """One published measurement."""

    id: str
    platform: str
    board: str
    clock_hz: int
    weights_in: str
    model: str
    precision: int
    embedding_bits: int
    cores_used: int
    tok_s: float
    engine: str
    source: str
    quoted: str
    overrides: Mapping[str, Any]
    notes: str
    harness_tick_hz: float = 0.0
    """The published loop sleeps until the next RTOS tick after every token, inside the timed
    region (0: it does not)."""
    run_positions: int = 0
    """Positions the published run went through (it stops at BOS or after its steps); its timer
    covers positions 1 to run_positions - 1. 0: not stated, DECODE_POSITIONS."""
    scale_bytes: int = 2
    """Bytes of one group scale in the published engine's weight format (2: f16, as ``.tlm``;
    4: fp32). Only quantized (<= 8-bit) points have group scales."""
    group_size: int = 32
    """Weights per group scale in the published engine's weight format."""
    matvec_instructions_per_mac: float = 0.0
    """Instructions per weight of the published engine's quantized matvec loop (its kernel
    compiled for the platform's ISA family and counted, ``notes`` say how), replacing the
    engine calibration's per-MAC coefficient for the point's precision. 0: the published
    kernel does what ours does per weight (llama2.c's scalar float loop is ours, see
    docs/platforms.md)."""


def published_path() -> Path:
    """``calibration/published.toml`` of the source checkout, or the wheel's copy."""
    from tinytelem.costing.calibration import calibration_file

    found = calibration_file("published.toml")
    if found is None:
        raise ConfigError("calibration/published.toml was not found; reinstall tinytelem or run "
                          "from a source checkout")
    return found


def load_points(path: Path | None = None) -> list[Point]:
    """Every published point.

    Raises:
        ConfigError: the file is malformed (a missing or unknown field names the point).
    """
    p = path or published_path()
    doc = tomllib.loads(p.read_text(encoding="utf-8"))
    fields = dataclasses.fields(Point)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    out = []
    for i, raw in enumerate(doc.get("point", [])):
        missing, extra = required - set(raw), set(raw) - names
        if missing or extra:
            raise ConfigError(f"{p.name}: point {i} ({raw.get('id', '?')}): missing "
                              f"{sorted(missing)}, unknown {sorted(extra)}")
        if raw["model"] not in PUBLISHED_SHAPES:
            raise ConfigError(f"{p.name}: point {raw['id']}: unknown model {raw['model']!r}")
        out.append(Point(**raw))
    return out


def _platform(point: Point, efficiency: float | None) -> Any:
    from tinytelem.platforms import get_platform

    base = get_platform(point.platform)
    changes: dict[str, Any] = dict(point.overrides)
    changes["cpu_hz"] = point.clock_hz
    if efficiency is not None:
        changes["efficiency"] = efficiency
    return dataclasses.replace(base, **changes)


def _published_kernel(point: Point, family: str) -> EngineCalibration | None:
    """The ISA family's engine calibration with the published matvec's per-MAC instructions,
    or None (the calibration as it is) when the point does not state them."""
    if point.matvec_instructions_per_mac <= 0:
        return None
    cal = load_calibration(family)
    width = cal.kernel_width(point.precision)
    matvec = {**cal.ops["matvec"], f"macs_{width}": point.matvec_instructions_per_mac}
    if point.embedding_bits != point.precision:
        raise ConfigError(f"point {point.id}: matvec_instructions_per_mac needs the embedding "
                          "at the layers' precision")
    return dataclasses.replace(cal, ops={**cal.ops, "matvec": matvec})


def predict_tok_s(point: Point, efficiency: float | None = None) -> tuple[float, str]:
    """Predicted decode tok/s of ``point`` and where the model put the weights.

    ``efficiency`` replaces the platform file's factor (None keeps it).
    """
    from tinytelem.costing.model import CostModel
    from tinytelem.protocol.enums import TraceLevel

    cfg = PUBLISHED_SHAPES[point.model]
    platform = _platform(point, efficiency)
    cm = CostModel(platform, cfg,
                   WeightBits(point.precision, point.embedding_bits, point.group_size,
                              point.scale_bytes),
                   TraceLevel.OFF, calibration=_published_kernel(point, platform.isa_family))
    n = min(point.run_positions or DECODE_POSITIONS, cm.context)
    first = 1 if n > 1 else 0  # llama2.c starts its timer after the first token
    step = max(1, (n - first) // 32)
    times = []
    for pos in range(first, n, step):
        ops = cm.forward_ops(pos)
        compute = sum(o.compute_s for o in ops)
        times.append(cm.token_seconds(pos) - compute * (1.0 - 1.0 / point.cores_used))
    if point.harness_tick_hz > 0:
        tick = 1.0 / point.harness_tick_hz
        times = [math.floor(t / tick + 1.0) * tick for t in times]
    return len(times) / sum(times), cm.placement.weights


def fit_efficiency(points: Sequence[Point]) -> float:
    """The factor that makes the geometric mean of predicted/published 1 over ``points``.

    Bisection on log(factor): predicted tok/s falls monotonically as the factor grows, but
    in steps where a harness rounds token times to whole ticks, so no Newton-like update.
    """
    def excess(e: float) -> float:
        logs = [math.log(predict_tok_s(p, e)[0] / p.tok_s) for p in points]
        return sum(logs) / len(logs)

    lo, hi = math.log(0.05), math.log(50.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if excess(math.exp(mid)) > 0:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class FidelityRow:
    """Predicted vs published for one point."""

    point: Point
    predicted_tok_s: float
    placement: str
    ratio: float
    """predicted / published."""
    fitted: bool
    """The platform's efficiency factor was fitted using this point."""
    loo_tok_s: float | None
    loo_ratio: float | None
    loo_unfitted: bool = False
    """The platform has no other point: the leave-one-out prediction is the unfitted one."""

    @property
    def worst_ratio(self) -> float:
        """max(r, 1/r) over the prediction and the leave-one-out prediction (refitted on the
        platform's other points, or the unfitted model when it has none: how far the core model
        alone is from the point)."""
        rs = [self.ratio] + ([self.loo_ratio] if self.loo_ratio else [])
        return max(max(r, 1.0 / r) for r in rs)


def fidelity(points: Sequence[Point], fitted_from: Mapping[str, Sequence[str]]
             ) -> list[FidelityRow]:
    """One row per point; ``fitted_from`` maps a platform to the point ids its factor used."""
    rows = []
    for p in points:
        pred, where = predict_tok_s(p)
        used = list(fitted_from.get(p.platform, ()))
        fitted = p.id in used
        loo = loo_ratio = None
        if fitted:
            others = [q for q in points if q.id in used and q.id != p.id]
            e = fit_efficiency(others) if others else 1.0
            loo = predict_tok_s(p, e)[0]
            loo_ratio = loo / p.tok_s
        rows.append(FidelityRow(p, pred, where, pred / p.tok_s, fitted, loo, loo_ratio,
                                fitted and not [q for q in used if q != p.id]))
    return rows
