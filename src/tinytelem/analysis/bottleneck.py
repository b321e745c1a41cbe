"""Where the time and energy of a run go: per-operator roofline, measured versus predicted.

For every operator type of the forward pass this module puts three views side by side:

* **the work** (from the model shape, ``models.cost.op_costs``): MACs and bytes moved per
  forward pass, hence the arithmetic intensity (MACs per byte);
* **the machine** (from the platform data, through the twin's ``CostModel``): the compute peak
  of one core and the effective bandwidth of the memories the operator touches (weights in
  SRAM, PSRAM or flash; activations in the arena). Their ratio is the ridge point: an operator
  whose intensity is below it is memory-bound, above it compute-bound;
* **the measurement** (span durations in the trace, and the power samples integrated over those
  spans): time and energy per forward pass, the achieved MAC rate, and how far the measurement
  is from the prediction.

A ratio far from 1 is the interesting result: it says the platform data or the kernel is not
what the cost model assumes. The twin's traces agree with the prediction by construction
(modulo span-tick rounding), real hardware will not.

Tracing overhead is the frames the firmware emitted inside the run windows times the cycles it
spends per frame (predicted from the engine calibration, ``costing.model.frame_cycles``), over
run time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tinytelem.analysis.energy import PowerTrace
from tinytelem.analysis.rundata import RunData, in_windows
from tinytelem.errors import ConfigError
from tinytelem.models.llama2c import STORIES260K_SHAPE, LlamaConfig
from tinytelem.protocol.enums import NO_LAYER, MsgType, Op, TraceLevel

__all__ = [
    "Bottlenecks",
    "LayerCost",
    "OpRoofline",
    "TracingOverhead",
    "analyse_bottlenecks",
    "model_config_of",
    "power_on_device_clock",
    "weight_bits_of",
]

BUILTIN_MODEL_NAME = "builtin-260k"


def model_config_of(attrs: Mapping[str, Any]) -> LlamaConfig | None:
    """The model shape recorded in a trace's root attributes, or None when unknown.

    ``tinytelem profile`` writes ``model_config`` (JSON of ``LlamaConfig``); older traces of the
    twin's built-in model are recognised by name.
    """
    raw = attrs.get("model_config")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if isinstance(raw, Mapping):
        try:
            return LlamaConfig(**{k: raw[k] for k in LlamaConfig.__dataclass_fields__})
        except (KeyError, TypeError):
            return None
    if attrs.get("model_name") == BUILTIN_MODEL_NAME:
        return STORIES260K_SHAPE
    return None


def weight_bits_of(attrs: Mapping[str, Any]) -> int | None:
    """Weight width recorded in the trace (``weight_bits`` root attribute), or None."""
    value = attrs.get("weight_bits")
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0:
        return int(value)
    return None


def power_on_device_clock(data: RunData) -> PowerTrace | None:
    """The trace's power samples placed on the device clock (None without usable power).

    The same placement the summary uses (sensor fit, then inverse device fit), so energies here
    add up to the summary's.
    """
    from tinytelem.analysis.rundata import power_trace

    return power_trace(data)


@dataclass(frozen=True)
class OpRoofline:
    """One operator type, per forward pass (all layers summed)."""

    op: str
    op_id: int
    calls: int
    """Spans of this op in the trace (0 when the trace has no spans)."""
    macs: float
    bytes: float
    intensity: float | None
    """MACs per byte moved."""
    ridge: float | None
    """Peak MAC/s over the op's effective bandwidth: intensity above it means compute-bound."""
    bound: str | None
    predicted_s: float | None
    measured_s: float | None
    energy_j: float | None
    time_share: float | None
    energy_share: float | None
    achieved_macs_per_s: float | None
    attainable_macs_per_s: float | None
    measured_over_predicted: float | None


@dataclass(frozen=True)
class LayerCost:
    """Measured time and energy of one transformer layer (or of the ops outside layers)."""

    layer: str
    time_s: float
    energy_j: float | None
    ops: dict[str, float]
    """op name -> seconds spent in that op inside this layer (whole trace)."""


@dataclass(frozen=True)
class TracingOverhead:
    """Device time spent emitting telemetry frames inside the run windows."""

    frames: int
    overhead_s: float
    run_s: float
    share: float | None
    frame_cycles: dict[str, int]


@dataclass(frozen=True)
class Bottlenecks:
    """Everything :func:`analyse_bottlenecks` found; ``to_dict`` is its JSON form."""

    platform: str | None
    weight_bits: int | None
    forward_passes: int
    peak_macs_per_s: float | None
    placement: dict[str, str]
    ops: tuple[OpRoofline, ...]
    layers: tuple[LayerCost, ...]
    top_time: tuple[str, ...]
    top_energy: tuple[str, ...]
    tracing: TracingOverhead | None
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN never appears)."""
        out: dict[str, Any] = _clean(asdict(self))
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _op_name(op_id: int) -> str:
    try:
        return Op(op_id).name.lower()
    except ValueError:
        return f"op{op_id}"


def _positions(data: RunData) -> list[int]:
    """Positions of the forward passes the analysed runs made (prompt + generated - 1 each)."""
    out: list[int] = []
    runs = data.runs
    if runs.size:
        for r in runs:
            n = int(r["n_prompt"]) + int(max(r["n_generated"], 1)) - 1
            out.extend(range(max(n, 1)))
    elif data.tokens.size:
        out.extend(range(int(data.tokens.size)))
    return out


def _predicted(
    platform_name: str, config: LlamaConfig, bits: int, level: TraceLevel, positions: list[int],
    n_samples: int,
) -> tuple[Any, dict[int, dict[str, float]], float]:
    """CostModel, per-op sums over ``positions`` (macs, bytes, compute_s, memory_s, duration_s)
    and sampling share (samples per forward pass)."""
    from tinytelem.costing.model import CostModel
    from tinytelem.platforms import get_platform

    cm = CostModel(get_platform(platform_name), config, bits, level)
    sums: dict[int, dict[str, float]] = {}
    unique, counts = np.unique(np.asarray(positions or [0]), return_counts=True)
    for raw_pos, count in zip(unique.tolist(), counts.tolist(), strict=True):
        pos = min(int(raw_pos), cm.context - 1)
        costs = cm.op_costs(pos)
        moved: dict[int, int] = {}
        for c in costs:
            moved.setdefault(int(c.op), 0)
            moved[int(c.op)] += c.weight_bytes + c.act_bytes + c.kv_bytes_read + c.kv_bytes_written
        for t in cm.forward_ops(pos):
            s = sums.setdefault(int(t.op), dict.fromkeys(
                ("macs", "bytes", "compute_s", "memory_s", "duration_s"), 0.0))
            s["macs"] += t.macs * count
            s["compute_s"] += t.compute_s * count
            s["memory_s"] += t.memory_s * count
            s["duration_s"] += t.duration_s * count
        for op_id, b in moved.items():
            if op_id in sums:
                sums[op_id]["bytes"] += b * count
    samp = cm.sample_op()
    sums[int(Op.SAMPLE)] = {"macs": 0.0, "bytes": config.vocab_size * 4.0 * n_samples,
                            "compute_s": samp.compute_s * n_samples,
                            "memory_s": samp.memory_s * n_samples,
                            "duration_s": samp.duration_s * n_samples}
    n = float(sum(counts.tolist()))
    for s in sums.values():
        for k in s:
            s[k] /= n
    return cm, sums, n


def _tracing(data: RunData, events: np.ndarray | None, cpu_hz: float, cm: Any = None
             ) -> TracingOverhead | None:
    from tinytelem.costing.model import frame_cycles

    frame_cost = frame_cycles(cm)

    runs = data.runs
    if events is None or events.size == 0 or runs.size == 0 or not cpu_hz > 0:
        return None
    ok = runs[np.isfinite(runs["end_s"])]
    inside = in_windows(events["device_s"], ok["begin_s"], ok["end_s"])
    run_s = float((ok["end_s"] - ok["begin_s"]).astype(np.float64).sum())
    types = events["type"][inside]
    cycles = 0.0
    frames = 0
    for mt, cyc in frame_cost.items():
        n = int(np.count_nonzero(types == int(mt)))
        cycles += n * cyc
        frames += n
    overhead = cycles / cpu_hz
    return TracingOverhead(
        frames=frames, overhead_s=overhead, run_s=run_s,
        share=overhead / run_s if run_s > 0 else None,
        frame_cycles={MsgType(k).name.lower(): round(v) for k, v in frame_cost.items()},
    )


def analyse_bottlenecks(
    data: RunData, events: np.ndarray | None = None, power: PowerTrace | None = None,
    *, top: int = 3,
) -> Bottlenecks:
    """Per-op roofline, measured versus predicted, top sinks and tracing overhead of a trace.

    Args:
        data: the trace tables (``load_run_data``).
        events: the trace's ``/events`` table, for the tracing overhead (None skips it).
        power: power on the device clock; computed from ``data`` when None.
        top: how many top time / energy sinks to name.
    """
    warnings: list[str] = []
    attrs = data.attrs
    if power is None:
        power = power_on_device_clock(data)
    spans = data.spans
    # One integration for every span: each call scans the whole power trace.
    span_energy = (power.integrate(spans["begin_s"], spans["end_s"])[0]
                   if power is not None and spans.size else None)
    is_op = spans["op"] != int(Op.LAYER)
    ops_spans = spans[is_op]
    n_forward = int(np.count_nonzero(ops_spans["op"] == int(Op.EMBED))) if spans.size else 0
    positions = _positions(data)
    if n_forward == 0:
        n_forward = len(positions)
    if spans.size == 0:
        warnings.append("trace has no spans (trace level below 'spans'): predictions only")

    # Measured: per op type, seconds and joules summed over the trace.
    dur = (ops_spans["end_s"] - ops_spans["begin_s"]).astype(np.float64)
    energy = span_energy[is_op] if span_energy is not None else None
    measured: dict[int, tuple[int, float, float | None]] = {}
    for op_id in np.unique(ops_spans["op"]).tolist() if ops_spans.size else []:
        m = ops_spans["op"] == op_id
        e = float(energy[m].sum()) if energy is not None else None
        measured[int(op_id)] = (int(np.count_nonzero(m)), float(dur[m].sum()), e)

    # Predicted, from the model shape and the platform.
    config = model_config_of(attrs)
    bits = weight_bits_of(attrs)
    platform = str(attrs.get("platform") or "") or None
    level_name = str(attrs.get("trace_level") or "spans").upper()
    level = TraceLevel[level_name] if level_name in TraceLevel.__members__ else TraceLevel.SPANS
    cm = None
    pred: dict[int, dict[str, float]] = {}
    if config is None:
        warnings.append("model shape unknown (no model_config attribute): no roofline")
    if bits is None:
        warnings.append("weight width unknown (no weight_bits attribute): assuming 4 bits")
    if config is not None and platform is not None:
        try:
            n_samples = int(data.runs['n_generated'].sum()) if data.runs.size else 0
            cm, pred, _ = _predicted(platform, config, bits or 4, level, positions, n_samples)
        except ConfigError as exc:
            warnings.append(f"no prediction for {platform}: {exc}")

    peak = None
    if cm is not None:
        p = cm.platform
        per_cycle = p.int8_macs_per_cycle if cm.weight_bits <= 8 else p.fp32_flops_per_cycle / 2
        peak = float(per_cycle) * p.cpu_hz
    total_t = sum(v[1] for v in measured.values())
    total_e = sum(v[2] or 0.0 for v in measured.values()) if energy is not None else 0.0
    rows: list[OpRoofline] = []
    for op_id in sorted(set(measured) | set(pred)):
        calls, t_sum, e_sum = measured.get(op_id, (0, math.nan, None))
        pr = pred.get(op_id)
        meas_s = t_sum / n_forward if calls and n_forward else None
        macs = pr["macs"] if pr else 0.0
        moved = pr["bytes"] if pr else 0.0
        intensity = macs / moved if pr and moved > 0 and macs > 0 else None
        ridge = attainable = None
        bound = None
        if pr and peak and pr["memory_s"] > 0:
            # The op's compute rate is the calibrated engine's (MACs over predicted compute
            # time), not the core's peak: the ridge sits where that rate meets the bandwidth.
            rate = macs / pr["compute_s"] if pr["compute_s"] > 0 and macs > 0 else peak
            bw = moved / pr["memory_s"]
            ridge = rate / bw
            attainable = min(rate, (intensity or 0.0) * bw)
            bound = "compute" if pr["compute_s"] >= pr["memory_s"] else "memory"
        pred_s = pr["duration_s"] if pr else None
        rows.append(OpRoofline(
            op=_op_name(op_id), op_id=op_id, calls=calls, macs=macs, bytes=moved,
            intensity=intensity, ridge=ridge, bound=bound, predicted_s=pred_s,
            measured_s=meas_s,
            energy_j=e_sum / n_forward if e_sum is not None and n_forward else None,
            time_share=t_sum / total_t if calls and total_t > 0 else None,
            energy_share=(e_sum / total_e) if e_sum is not None and total_e > 0 else None,
            achieved_macs_per_s=macs / meas_s if meas_s and macs else None,
            attainable_macs_per_s=attainable,
            measured_over_predicted=meas_s / pred_s if meas_s and pred_s else None,
        ))
    key_t = [r for r in rows if (r.measured_s or r.predicted_s)]
    key_t.sort(key=lambda r: -(r.measured_s if r.measured_s is not None else r.predicted_s or 0))
    key_e = sorted((r for r in rows if r.energy_j is not None), key=lambda r: -(r.energy_j or 0))
    cpu_hz = float(attrs.get("cpu_hz") or (cm.platform.cpu_hz if cm is not None else 0) or 0)
    placement = {}
    if cm is not None:
        placement = {"weights": cm.placement.weights, "arena": cm.placement.arena}
    return Bottlenecks(
        platform=platform, weight_bits=bits, forward_passes=n_forward, peak_macs_per_s=peak,
        placement=placement, ops=tuple(rows),
        layers=_layers(spans, span_energy),
        top_time=tuple(r.op for r in key_t[:top]),
        top_energy=tuple(r.op for r in key_e[:top]),
        tracing=_tracing(data, events, cpu_hz, cm), warnings=tuple(warnings),
    )


def _layers(spans: np.ndarray, span_energy: np.ndarray | None) -> tuple[LayerCost, ...]:
    """Time and energy per transformer layer (LAYER spans), plus the ops outside layers."""
    if spans.size == 0:
        return ()
    out: list[LayerCost] = []
    layer_ids = sorted(int(x) for x in np.unique(spans["layer"]))
    is_layer = spans["op"] == int(Op.LAYER)
    for lid in layer_ids:
        own_mask = (spans["layer"] == lid) & is_layer
        inner_mask = (spans["layer"] == lid) & ~is_layer
        inner = spans[inner_mask]
        # A layer's time is its LAYER spans; outside layers it is the ops themselves.
        mask = own_mask if np.any(own_mask) else inner_mask
        timed = spans[mask]
        t = float((timed["end_s"] - timed["begin_s"]).sum())
        e = None
        if span_energy is not None and timed.size:
            e = float(span_energy[mask].sum())
        per_op: dict[str, float] = {}
        for op_id in np.unique(inner["op"]).tolist():
            m = inner["op"] == op_id
            per_op[_op_name(int(op_id))] = float((inner["end_s"][m] - inner["begin_s"][m]).sum())
        name = "outside layers" if lid == NO_LAYER else f"layer {lid}"
        out.append(LayerCost(layer=name, time_s=t, energy_j=e, ops=per_op))
    return tuple(out)
