"""Fit a model to a platform: per-tensor bit-widths, KV-cache precision and length, placement.

Method (sensitivity-based, like mixed-precision searches in the literature, kept simple):

1. **Sensitivity.** On a short calibration text, quantize one matrix at a time to each
   (bit-width, group size) pair (2, 3, 4, 8 bits x the candidate groups; round-to-nearest) with
   every other tensor in float, and measure the mean KL divergence of the next-token
   distribution against the float model. Keeping the matrix float32 is an option too.
2. **Trade-off curve.** Starting from every matrix at 8 bits, repeatedly take the downgrade
   with the least added KLD per byte saved (a greedy walk over each tensor's lower convex hull
   of its (bits, group) options: the Lagrangian solution of the multiple-choice knapsack).
   Because a smaller group costs bytes (one float16 scale per group) and buys accuracy, the
   group size is chosen per tensor by the same walk: a sensitive matrix can get 3 bits in
   groups of 32 while a robust one gets 3 bits in groups of 64. Summed per-tensor KLDs
   predict the whole model's; a handful of points along the curve are measured with
   everything quantized.
3. **Choice.** The lowest-KLD point whose weights fit the platform's flash (after the engine
   code estimate), or with ``--max-kld`` the smallest point within it.
4. **KV cache and placement.** The longest context up to the requested one and the widest KV
   type (fp32, fp16, int8) whose working memory fits SRAM; else fits SRAM+PSRAM (KV in PSRAM);
   else the longest context that fits with int8 KV. Weights go to SRAM when everything fits
   there, to PSRAM when it has room (faster than flash XIP), else stay in flash (XIP).

The plan (``--out plan.json``) carries ``per_tensor_bits``, ``per_tensor_group`` and
``group_size`` exactly as ``tinytelem.models.quant.quantize_model`` takes them (``tinytelem
model quantize IN --plan plan.json -o OUT`` does that). Plans written before per-tensor groups
existed lack ``per_tensor_group``; ``group_size`` then applies to every tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError, ModelError
from tinytelem.models import names
from tinytelem.models.evaluate import blas_single_thread, forward_sequence, log_softmax
from tinytelem.models.llama2c import LlamaModel, LlamaWeights
from tinytelem.platforms.memory import CODE_ESTIMATES, family_of, memory_need

__all__ = ["PLAN_SCHEMA", "CurvePoint", "Plan", "kld_against", "optimize_model", "plan_options",
           "render_plan", "sensitivities"]

F32 = npt.NDArray[np.float32]
K = TypeVar("K", bound=Hashable)
Choice = tuple[int, int]
"""(bits, group size) of one tensor; ``(32, 0)`` keeps it float32."""
Options = dict[str, dict[Choice, tuple[int, float]]]
"""Tensor -> choice -> (bytes, KLD with only that tensor quantized)."""
PLAN_SCHEMA: Final = "tinytelem.plan/1"
_BITS: Final = (8, 4, 3, 2)
_KINDS: Final = names.MATRIX_KINDS
_FIELD: Final = {t.native: t.field for t in names.LAYER}
_EMB, _CLS = names.EMBEDDING, names.CLASSIFIER


def _matrices(model: LlamaModel) -> dict[str, F32]:
    """Native (``.tlm``) tensor names -> matrix, for every quantizable matrix."""
    w = model.weights
    out = {_EMB.native: getattr(w, _EMB.field)}
    for i in range(model.config.n_layers):
        for k in _KINDS:
            out[f"layers.{i}.{k}"] = getattr(w, _FIELD[k])[i]
    if not model.config.shared_classifier:
        out[_CLS.native] = getattr(w, _CLS.field)
    return out


def _with(model: LlamaModel, replace: dict[str, F32]) -> LlamaModel:
    """A copy of ``model`` with some matrices replaced (by native name)."""
    w = model.weights
    fields = {k: getattr(w, k) for k in vars(w)}
    for kind in _KINDS:
        if any(n.endswith(f".{kind}") for n in replace):
            stack = np.array(fields[_FIELD[kind]], copy=True)
            for i in range(model.config.n_layers):
                if f"layers.{i}.{kind}" in replace:
                    stack[i] = replace[f"layers.{i}.{kind}"]
            fields[_FIELD[kind]] = stack
    if _EMB.native in replace:
        fields[_EMB.field] = replace[_EMB.native]
        if model.config.shared_classifier:
            fields[_CLS.field] = fields[_EMB.field]
    if _CLS.native in replace:
        fields[_CLS.field] = replace[_CLS.native]
    return LlamaModel(model.config, LlamaWeights(**fields), model.name, model.sha256,
                      model.source)


def kld_against(ref_logp: Sequence[npt.NDArray[np.float64]], model: LlamaModel,
                seqs: Sequence[Sequence[int]]) -> float:
    """Mean KL(ref || model) over every position of the calibration sequences."""
    total, n = 0.0, 0
    for lp, s in zip(ref_logp, seqs, strict=True):
        lq = log_softmax(forward_sequence(model, s))
        total += float((np.exp(lp) * (lp - lq)).sum())
        n += lp.shape[0]
    return max(total / max(n, 1), 0.0)


def _fake_quant(w: F32, bits: int, group: int) -> tuple[F32, int]:
    from tinytelem.models.qtensor import quantize_matrix

    extra = -w.shape[1] % group  # zero columns to whole groups, as quantize_model stores them
    qt = quantize_matrix(np.pad(w, ((0, 0), (0, extra))), bits, group, True, "rtn")
    return qt.dequantize()[:, : w.shape[1]], qt.nbytes()


def sensitivities(model: LlamaModel, seqs: Sequence[Sequence[int]], group: int,
                  bits: Sequence[int] = _BITS,
                  progress: Callable[[str], None] | None = None,
                  ) -> dict[str, dict[int, tuple[int, float]]]:
    """Tensor -> bits -> (bytes, KLD with only that tensor quantized); 32 = float."""
    ref = [log_softmax(forward_sequence(model, s)) for s in seqs]
    out: dict[str, dict[int, tuple[int, float]]] = {}
    for name, w in _matrices(model).items():
        if progress is not None:
            progress(name)
        opts: dict[int, tuple[int, float]] = {32: (4 * w.size, 0.0)}
        for b in bits:
            deq, nbytes = _fake_quant(w, b, group)
            opts[b] = (nbytes, kld_against(ref, _with(model, {name: deq}), seqs))
        out[name] = opts
    return out


def plan_options(model: LlamaModel, seqs: Sequence[Sequence[int]], groups: Sequence[int],
                 bits: Sequence[int] = _BITS,
                 progress: Callable[[str], None] | None = None) -> Options:
    """Sensitivities at every (bits, group) pair of ``bits`` x ``groups``, plus float32."""
    out: Options = {}
    for g in groups:
        for name, opts in sensitivities(model, seqs, g, bits, progress).items():
            merged = out.setdefault(name, {})
            for b, cost in opts.items():
                merged[(b, 0) if b == 32 else (b, g)] = cost
    return out


@dataclass(frozen=True)
class CurvePoint:
    """One point of the size-versus-KLD trade-off.

    ``bits`` maps every matrix to its width (32 = float32); ``groups`` maps the quantized
    ones to their group size (empty when the options had no group, as in unit tests).
    """

    weight_bytes: int
    predicted_kld: float
    bits: dict[str, int]
    measured_kld: float | None = None
    groups: dict[str, int] = field(default_factory=dict)


def _bits_of(choice: object) -> int:
    """The width of an option key: ``8`` or ``(8, 32)``."""
    if isinstance(choice, tuple):
        return int(choice[0])
    assert isinstance(choice, int)
    return choice


def _point(sens: Mapping[str, Mapping[K, tuple[int, float]]], cur: Mapping[str, K],
           fixed_bytes: int) -> CurvePoint:
    size = fixed_bytes + sum(sens[n][c][0] for n, c in cur.items())
    kld = sum(sens[n][c][1] for n, c in cur.items())
    bits = {n: _bits_of(c) for n, c in cur.items()}
    groups = {n: int(c[1]) for n, c in cur.items()
              if isinstance(c, tuple) and c[0] != 32}
    return CurvePoint(size, kld, bits, groups=groups)


def _hull(opts: Mapping[K, tuple[int, float]]) -> list[K]:
    """Choices on the lower convex hull of (bytes, kld), from largest to smallest bytes."""
    pts = sorted(opts.items(), key=lambda kv: -kv[1][0])
    hull: list[K] = []
    for b, (size, kld) in pts:
        while hull and kld <= opts[hull[-1]][1]:
            hull.pop()  # bigger and no better than this one: dominated
        while len(hull) >= 2:
            s1, k1 = opts[hull[-2]]
            s2, k2 = opts[hull[-1]]
            # slope (added KLD per byte saved) must increase along the hull
            if (k2 - k1) * (s2 - size) >= (kld - k2) * (s1 - s2):
                hull.pop()
            else:
                break
        hull.append(b)
    return hull


def trade_off_curve(sens: Mapping[str, Mapping[K, tuple[int, float]]], fixed_bytes: int,
                    start_bits: int = 8) -> list[CurvePoint]:
    """Greedy downgrade walk (see module docstring), from ``start_bits`` everywhere.

    Option keys are bit-widths (``int``) or (bits, group) pairs (:data:`Choice`); a tensor
    starts at its largest ``start_bits`` option on the hull (float32 when that is dominated).
    """
    hulls = {n: _hull(o) for n, o in sens.items()}
    pos: dict[str, int] = {}
    for n, h in hulls.items():
        pos[n] = next((i for i, c in enumerate(h) if _bits_of(c) == start_bits), 0)
    cur = {n: hulls[n][pos[n]] for n in sens}
    points = [_point(sens, cur, fixed_bytes)]
    while True:
        best, best_rate = None, math.inf
        for n, h in hulls.items():
            if pos[n] + 1 >= len(h):
                continue
            s0, k0 = sens[n][h[pos[n]]]
            s1, k1 = sens[n][h[pos[n] + 1]]
            saved = s0 - s1
            rate = (k1 - k0) / saved if saved > 0 else math.inf
            if rate < best_rate:
                best, best_rate = n, rate
        if best is None:
            return points
        pos[best] += 1
        cur[best] = hulls[best][pos[best]]
        points.append(_point(sens, cur, fixed_bytes))


@dataclass
class Plan:
    """The chosen configuration and the curve it came from."""

    model: str
    platform: str
    group_size: int
    per_tensor_bits: dict[str, int]
    weight_bytes: int
    predicted_kld: float
    measured_kld: float
    kv_bits: int
    context: int
    placement: dict[str, str]
    flash_budget: int
    ram_need: int
    ram_available: int
    curve: list[CurvePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    calibration_tokens: int = 0
    per_tensor_group: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plan file (schema ``tinytelem.plan/1``)."""
        return {
            "schema": PLAN_SCHEMA, "model": self.model, "platform": self.platform,
            "group_size": self.group_size, "symmetric": True, "method": "rtn",
            "per_tensor_bits": self.per_tensor_bits,
            "per_tensor_group": self.per_tensor_group,
            "kv_cache": {"bits": self.kv_bits, "context": self.context},
            "placement": self.placement, "weight_bytes": self.weight_bytes,
            "predicted_kld": self.predicted_kld, "measured_kld": self.measured_kld,
            "flash_budget": self.flash_budget, "ram_need": self.ram_need,
            "ram_available": self.ram_available,
            "calibration_tokens": self.calibration_tokens,
            "curve": [{"weight_bytes": p.weight_bytes, "predicted_kld": p.predicted_kld,
                       "measured_kld": p.measured_kld,
                       "mean_bits": _mean_bits(p.bits)} for p in self.curve],
            "notes": self.notes,
        }


def _mean_bits(bits: dict[str, int]) -> float:
    return round(sum(bits.values()) / max(1, len(bits)), 3)


def _kv_and_context(model: LlamaModel, wbytes: int, platform: Any, context: int,
                    ) -> tuple[int, int, str, int]:
    """(kv_bits, context, kv placement, ram need) per step 4 of the module docstring."""
    cfg = model.config
    fam = family_of(platform)
    if fam == "linux":
        need = memory_need(cfg, wbytes, platform, context, 4)
        return 32, context, "dram", need.ram + wbytes
    for limit, where in ((platform.sram_bytes, "sram"),
                         (platform.sram_bytes + platform.psram_bytes, "psram")):
        for kvb in (4, 2, 1):
            need = memory_need(cfg, wbytes, platform, context, kvb)
            if need.ram <= limit:
                return 8 * kvb, context, where, need.ram
    total = platform.sram_bytes + platform.psram_bytes
    for ctx in range(context, 0, -1):
        need = memory_need(cfg, wbytes, platform, ctx, 1)
        if need.ram <= total:
            return 8, ctx, "sram" if need.ram <= platform.sram_bytes else "psram", need.ram
    raise ModelError(f"even one position of int8 KV cache does not fit the "
                     f"{total / 1024:.0f} KiB of RAM of {platform.display_name}")


def optimize_model(model: LlamaModel, seqs: Sequence[Sequence[int]], platform: str | Any, *,
                   context: int | None = None, max_kld: float | None = None,
                   groups: Sequence[int] = (32, 64), measure_points: int = 6,
                   progress: Callable[[str], None] | None = None) -> Plan:
    """Choose per-tensor bits, group size, KV precision/length and placement (module doc).

    ``platform`` is a name or a :class:`~tinytelem.platforms.Platform` (e.g. a variant with
    less flash).

    Raises:
        ConfigError: Unknown platform or context outside 1..seq_len.
        ModelError: Nothing fits (the message says by how much).
    """
    with blas_single_thread():
        return _optimize(model, seqs, platform, context=context, max_kld=max_kld,
                         groups=groups, measure_points=measure_points, progress=progress)


def _optimize(model: LlamaModel, seqs: Sequence[Sequence[int]], platform: str | Any, *,
              context: int | None, max_kld: float | None, groups: Sequence[int],
              measure_points: int, progress: Callable[[str], None] | None) -> Plan:
    from tinytelem.models.quant import quantize_model
    from tinytelem.platforms import get_platform

    p = get_platform(platform) if isinstance(platform, str) else platform
    cfg = model.config
    ctx = cfg.seq_len if context is None else context
    if not 1 <= ctx <= cfg.seq_len:
        raise ConfigError(f"context {ctx} is outside 1..{cfg.seq_len}")
    fam = family_of(p)
    code, _ = CODE_ESTIMATES[fam]
    if fam == "linux":
        budget = p.dram_bytes - memory_need(cfg, 0, p, ctx, 4).ram
    else:
        budget = p.flash_bytes - code
    norm_bytes = 4 * (2 * cfg.n_layers * cfg.dim + cfg.dim)
    rope_bytes = 2 * 4 * cfg.seq_len * (cfg.head_dim // 2)
    fixed = norm_bytes + rope_bytes
    ref = [log_softmax(forward_sequence(model, s)) for s in seqs]
    usable = sorted({g for g in groups if cfg.dim % g == 0})
    if not usable:
        raise ConfigError(f"none of the group sizes {list(groups)} divides dim={cfg.dim}")
    curve = trade_off_curve(plan_options(model, seqs, usable, progress=progress), fixed)
    fitting = [pt for pt in curve if pt.weight_bytes <= budget]
    chosen: CurvePoint | None = None
    if max_kld is not None:
        fitting = [pt for pt in fitting if pt.predicted_kld <= max_kld]
        chosen = min(fitting, key=lambda pt: pt.weight_bytes) if fitting else None
    elif fitting:
        chosen = min(fitting, key=lambda pt: pt.predicted_kld)
    if chosen is None:
        smallest = min(curve, key=lambda pt: pt.weight_bytes)
        why = (f"no mix of 2..8-bit weights has predicted KLD <= {max_kld}"
               if max_kld is not None and smallest.weight_bytes <= budget else
               f"the smallest mix needs {smallest.weight_bytes / 1024:.1f} KiB of weights but "
               f"{budget / 1024:.1f} KiB is available")
        raise ModelError(f"{model.name} cannot be fitted to {p.display_name}: {why}; raise "
                         "--max-kld, shorten the context or choose a bigger platform")
    group = _main_group(chosen.groups, usable[0])

    def build(pt: CurvePoint) -> Any:
        return quantize_model(model, 8, group, per_tensor_bits=pt.bits,
                              per_tensor_group=pt.groups)

    def measure(pt: CurvePoint) -> float:
        from tinytelem.models.quant import dequantize_model

        return kld_against(ref, dequantize_model(build(pt)), seqs)

    step = max(1, len(curve) // max(1, measure_points))
    measured = {i: measure(curve[i]) for i in range(0, len(curve), step)}
    idx = curve.index(chosen)
    measured[idx] = measure(chosen)
    curve = [CurvePoint(pt.weight_bytes, pt.predicted_kld, pt.bits, measured.get(i), pt.groups)
             for i, pt in enumerate(curve)]
    qm = build(chosen)
    wbytes = qm.weight_bytes()
    kv_bits, ctx_used, kv_where, ram_need = _kv_and_context(model, wbytes, p, ctx)
    placement = {"kv_cache": kv_where, "activations": "sram" if kv_where == "sram" else
                 ("dram" if fam == "linux" else "sram/psram")}
    if fam == "linux":
        placement["weights"] = "dram"
    elif ram_need + wbytes <= p.sram_bytes:
        placement["weights"] = "sram"
    elif p.psram_bytes and wbytes + (ram_need if kv_where == "psram" else 0) <= p.psram_bytes:
        placement["weights"] = "psram"
    else:
        placement["weights"] = "flash-xip"
    notes = []
    if ctx_used < ctx:
        notes.append(f"context shortened from {ctx} to {ctx_used} to fit RAM")
    if kv_bits < 32:
        notes.append(f"KV cache at {kv_bits} bits (its accuracy cost is not in the KLD "
                     "figures, which use a float cache)")
    kept = [n for n, b in chosen.bits.items() if b == 32]
    if kept:
        notes.append(f"kept float32 (quantizing them cost more KLD than it saved): "
                     f"{', '.join(kept)}")
    return Plan(model=model.name, platform=p.name, group_size=group,
                per_tensor_bits=dict(chosen.bits), weight_bytes=wbytes,
                predicted_kld=chosen.predicted_kld, measured_kld=measured[idx],
                kv_bits=kv_bits, context=ctx_used, placement=placement, flash_budget=budget,
                ram_need=ram_need, ram_available=p.sram_bytes + p.psram_bytes + p.dram_bytes,
                curve=curve, notes=notes,
                calibration_tokens=sum(len(s) - 1 for s in seqs),
                per_tensor_group=dict(chosen.groups))


def _main_group(groups: Mapping[str, int], default: int) -> int:
    """The most used group size (ties: the smaller), the plan's default ``group_size``."""
    counts: dict[int, int] = {}
    for g in groups.values():
        counts[g] = counts.get(g, 0) + 1
    return min(counts, key=lambda g: (-counts[g], g)) if counts else default


def _decimate(curve: list[CurvePoint], chosen: dict[str, int], rows: int = 16,
              ) -> list[CurvePoint]:
    """At most ~``rows`` points: evenly spaced, plus every measured point and the choice."""
    step = max(1, math.ceil(len(curve) / rows))
    return [pt for i, pt in enumerate(curve)
            if i % step == 0 or i == len(curve) - 1 or pt.measured_kld is not None
            or pt.bits == chosen]


def render_plan(plan: Plan) -> str:
    """The trade-off table and the chosen plan, for the terminal."""
    lines = [f"{'weights KiB':>11} {'mean bits':>9} {'pred. KLD':>10} {'meas. KLD':>10}",
             "-" * 44]
    shown = _decimate(plan.curve, plan.per_tensor_bits)
    for pt in shown:
        meas = f"{pt.measured_kld:.5f}" if pt.measured_kld is not None else "-"
        mark = " <- chosen" if pt.bits == plan.per_tensor_bits else ""
        lines.append(f"{pt.weight_bytes / 1024:>11.1f} {_mean_bits(pt.bits):>9.2f} "
                     f"{pt.predicted_kld:>10.5f} {meas:>10}{mark}")
    hist: dict[int, int] = {}
    for b in plan.per_tensor_bits.values():
        hist[b] = hist.get(b, 0) + 1
    ghist: dict[int, int] = {}
    for g in plan.per_tensor_group.values():
        ghist[g] = ghist.get(g, 0) + 1
    lines += [
        f"platform {plan.platform}: weight budget {plan.flash_budget / 1024:.1f} KiB, "
        f"group size {plan.group_size}",
        "bits: " + ", ".join(f"{b}-bit x{n}" for b, n in sorted(hist.items())),
        *(["groups: " + ", ".join(f"{g} x{n}" for g, n in sorted(ghist.items()))]
          if ghist else []),
        f"weights {plan.weight_bytes / 1024:.1f} KiB, KLD predicted {plan.predicted_kld:.5f} "
        f"measured {plan.measured_kld:.5f} over {plan.calibration_tokens} tokens",
        f"KV cache {plan.kv_bits}-bit x {plan.context} positions; RAM {plan.ram_need / 1024:.1f}"
        f" KiB of {plan.ram_available / 1024:.1f} KiB",
        "placement: " + ", ".join(f"{k} -> {v}" for k, v in plan.placement.items()),
    ]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
