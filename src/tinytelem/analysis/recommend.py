"""Deployment advice: rank platform x weight-width options against the user's constraints.

Each option is judged on the figures a deployment is constrained by — RAM, flash, TTFT,
inter-token latency, throughput, energy per token (and accuracy when evaluation results are
given). Figures come from a measured trace of the same model, platform and weight width when
one is supplied, otherwise from the calibrated cost model (``costing.model``, a prediction) at trace
level OFF, i.e. what the firmware costs without telemetry. Options meeting every constraint come
first, ordered by the objective (energy per token by default); each carries a sentence saying
why, with the numbers.

Constraint syntax: ``key OP value[unit]`` joined by commas, e.g.
``ram<=512KiB,flash<=8MiB,ttft<=1s,energy_per_token<=5mJ``. Battery: ``1000mAh@3.7V`` or
``3.7Wh``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinytelem.errors import ConfigError
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.units import si

__all__ = [
    "BITS",
    "Battery",
    "Constraint",
    "ConstraintError",
    "ModelRef",
    "Option",
    "parse_battery",
    "parse_constraints",
    "recommend",
    "resolve_model",
]

BITS = (2, 3, 4, 8)

# key -> (field of Option, unit kind)
KEYS: dict[str, tuple[str, str]] = {
    "ram": ("ram_bytes", "bytes"),
    "flash": ("flash_bytes", "bytes"),
    "ttft": ("ttft_s", "time"),
    "itl": ("itl_s", "time"),
    "tok_s": ("tok_s", "rate"),
    "energy_per_token": ("energy_per_token_j", "energy"),
    "power": ("avg_w", "power"),
    "accuracy": ("accuracy", "plain"),
    "perplexity": ("perplexity", "plain"),
}
UNITS: dict[str, dict[str, float]] = {
    "bytes": {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2,
              "gib": 1024**3},
    "time": {"": 1, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6},
    "rate": {"": 1, "tok/s": 1},
    "energy": {"": 1, "j": 1, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6},
    "power": {"": 1, "w": 1, "mw": 1e-3},
    "plain": {"": 1},
}
FORM = ("KEY<=VALUE[UNIT] joined by commas, e.g. 'ram<=512KiB,flash<=8MiB,ttft<=1s,"
        "energy_per_token<=5mJ'; keys: " + ", ".join(KEYS) + "; operators <=, <, >=, >")
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*"
                         r"([a-zµ/]*)\s*$", re.IGNORECASE)


class ConstraintError(ConfigError):
    """A constraint or battery string that does not parse; the message shows the form."""


@dataclass(frozen=True)
class Constraint:
    """``key op value`` with the value in SI units."""

    key: str
    op: str
    value: float
    text: str

    @property
    def field(self) -> str:
        """The :class:`Option` attribute this constraint reads."""
        return KEYS[self.key][0]

    def ok(self, x: float) -> bool:
        """Whether ``x`` satisfies the constraint."""
        return {"<=": x <= self.value, "<": x < self.value, ">=": x >= self.value,
                ">": x > self.value}[self.op]


def parse_constraints(text: str) -> list[Constraint]:
    """Parse ``ram<=512KiB,ttft<=1s,...``.

    Raises:
        ConstraintError: an unknown key, operator or unit, naming the accepted form.
    """
    out = []
    for part in (p for p in text.split(",") if p.strip()):
        m = _CONSTRAINT.match(part)
        if m is None:
            raise ConstraintError(f"cannot read constraint {part.strip()!r}; expected {FORM}")
        key, op, num, unit = m.group(1).lower(), m.group(2), float(m.group(3)), m.group(4)
        if key not in KEYS:
            raise ConstraintError(f"unknown constraint key {key!r}; expected {FORM}")
        units = UNITS[KEYS[key][1]]
        scale = units.get(unit.lower())
        if scale is None:
            raise ConstraintError(
                f"unit {unit!r} does not fit {key!r}; use one of "
                f"{', '.join(u for u in units if u) or 'no unit'} ({FORM})")
        out.append(Constraint(key, op, num * scale, part.strip()))
    return out


@dataclass(frozen=True)
class Battery:
    """Usable battery energy."""

    energy_j: float
    text: str


def parse_battery(text: str) -> Battery:
    """``1000mAh@3.7V``, ``2Ah@3.7V`` or ``3.7Wh``.

    Raises:
        ConstraintError: the string does not have one of those forms.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(mAh|Ah|mWh|Wh)\s*(?:@\s*([0-9]*\.?[0-9]+)\s*V)?\s*",
                     text, re.IGNORECASE)
    if m is None:
        raise ConstraintError(f"cannot read battery {text!r}; expected e.g. '1000mAh@3.7V' or "
                              "'3.7Wh'")
    value, unit, volts = float(m.group(1)), m.group(2).lower(), m.group(3)
    if unit.endswith("wh"):
        return Battery(value * (1e-3 if unit == "mwh" else 1.0) * 3600.0, text.strip())
    if volts is None:
        raise ConstraintError(f"battery {text!r} in {m.group(2)} needs a voltage: "
                              f"'{m.group(1)}{m.group(2)}@3.7V'")
    amp_h = value * (1e-3 if unit == "mah" else 1.0)
    return Battery(amp_h * float(volts) * 3600.0, text.strip())


@dataclass(frozen=True)
class ModelRef:
    """The model to deploy: shape, name and hash (hash empty for a bare shape)."""

    config: LlamaConfig
    name: str
    sha256: str


def resolve_model(spec: str) -> ModelRef:
    """A model file of any format :func:`tinytelem.models.formats.open_model` reads,
    ``builtin[:SHAPE][:SEED]``, or ``builtin-260k`` / ``stories260k`` for that shape."""
    from tinytelem.models.formats import open_model
    from tinytelem.models.llama2c import STORIES260K_SHAPE, builtin_model

    if spec.lower() in ("builtin", "builtin-260k"):
        m = builtin_model(42)
        return ModelRef(m.config, m.name, m.sha256)
    if spec.lower() in ("stories260k", "stories260k-shape"):
        return ModelRef(STORIES260K_SHAPE, "stories260K", "")
    path = Path(spec)
    if not spec.startswith("builtin:") and not path.is_file():
        raise ConfigError(f"model {spec!r} is neither a model file nor a known name "
                          "(builtin-260k, stories260k)")
    lm = open_model(spec)
    return ModelRef(lm.model.config, lm.model.name or path.stem, lm.sha256)


@dataclass
class Option:
    """One platform x weight width, with its figures, verdict and explanation."""

    platform: str
    bits: int
    source: str
    fits: bool = True
    ram_bytes: float | None = None
    flash_bytes: float | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    tok_s: float | None = None
    energy_per_token_j: float | None = None
    avg_w: float | None = None
    idle_w: float | None = None
    accuracy: float | None = None
    perplexity: float | None = None
    placement: str = ""
    tokens_per_charge: float | None = None
    battery_hours: float | None = None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    why: str = ""

    @property
    def ok(self) -> bool:
        """Fits the platform and meets every constraint."""
        return self.fits and not self.violations

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN-free)."""
        d = {k: v for k, v in self.__dict__.items()}
        d["ok"] = self.ok
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def _cost_model(platform: Any, config: LlamaConfig, bits: int) -> Any:
    """The twin's CostModel for ``bits``-wide weights (no telemetry cost: trace level OFF)."""
    from tinytelem.costing.model import CostModel
    from tinytelem.protocol.enums import TraceLevel

    return CostModel(platform, config, bits, TraceLevel.OFF)


def predict(platform: Any, model: ModelRef, bits: int, prompt: int, generate: int) -> Option:
    """Figures of one option from the cost model (trace level OFF: no telemetry cost)."""
    opt = Option(platform.name, bits, "cost model")
    try:
        cm = _cost_model(platform, model.config, bits)
    except ConfigError as exc:
        opt.fits = False
        opt.notes.append(str(exc))
        return opt
    n_pos = prompt + generate - 1
    if cm.context < n_pos:
        opt.notes.append(f"context limited to {cm.context} tokens by RAM")
        generate = max(1, cm.context - prompt + 1)

    def cost(pos: int, sample: bool) -> tuple[float, float]:
        ops = cm.forward_ops(min(pos, cm.context - 1))
        t = sum(o.duration_s for o in ops)
        e = sum(o.duration_s * o.watts for o in ops)
        if sample:
            s = cm.sample_op()
            t, e = t + s.duration_s, e + s.duration_s * s.watts
        return t, e

    ttft = energy = 0.0
    for pos in range(prompt):
        t, e = cost(pos, pos == prompt - 1)
        ttft, energy = ttft + t, energy + e
    decode_t = 0.0
    for pos in range(prompt, prompt + generate - 1):
        t, e = cost(pos, True)
        decode_t, energy = decode_t + t, energy + e
    p = cm.platform
    pl = cm.placement
    ram = cm.need.ram
    if pl.weights != "flash":
        ram += pl.weight_bytes
    opt.ram_bytes = float(ram)
    opt.flash_bytes = float(pl.weight_bytes)
    opt.ttft_s = ttft
    opt.itl_s = decode_t / (generate - 1) if generate > 1 else ttft
    opt.tok_s = 1.0 / opt.itl_s if opt.itl_s else None
    opt.energy_per_token_j = energy / generate
    opt.avg_w = energy / (ttft + decode_t)
    opt.idle_w = float(p.idle_power_w)
    opt.placement = f"weights in {pl.weights}, arena in {pl.arena}"
    return opt


def _measured(path: Path, model: ModelRef) -> tuple[str, int, dict[str, Any], Path] | None:
    from tinytelem.analysis.compare import load_run_summary

    summary, attrs = load_run_summary(path)
    bits = attrs.get("weight_bits")
    same = (model.sha256 and attrs.get("model_sha256") == model.sha256) or (
        str(attrs.get("model_name") or "").lower() == model.name.lower())
    if not bits or not same or not attrs.get("platform"):
        return None
    return str(attrs["platform"]), int(bits), summary, path


def _apply_measured(opt: Option, summary: Mapping[str, Any], path: Path) -> None:
    lat, mem, pw = summary["latency"], summary["memory"], summary["power"]
    opt.source = f"measured ({path})"
    opt.ttft_s = lat.get("ttft_s") or opt.ttft_s
    opt.itl_s = lat["itl_s"].get("mean") or opt.itl_s
    opt.tok_s = lat.get("decode_tok_s") or opt.tok_s
    opt.energy_per_token_j = pw.get("energy_per_token_j") or opt.energy_per_token_j
    opt.avg_w = pw.get("avg_w") or opt.avg_w
    opt.idle_w = pw.get("idle_w") or opt.idle_w
    arena = mem.get("peak_arena_bytes")
    if arena is not None and opt.ram_bytes is not None:
        # Allocated RAM: the measured arena + the memory budget's system reserve (stacks,
        # runtime heap) + weights held in RAM (tinytelem.platforms.memory).
        from tinytelem.platforms import get_platform
        from tinytelem.platforms.memory import CODE_ESTIMATES, family_of

        reserve = CODE_ESTIMATES[family_of(get_platform(opt.platform))][1]
        weights = opt.flash_bytes or 0.0 if "weights in flash" not in opt.placement else 0.0
        opt.ram_bytes = float(reserve + arena) + weights
    opt.notes.append(f"measured with {summary['tokens']['prompt']} prompt / "
                     f"{summary['tokens']['generated']} generated tokens")


def _battery(opt: Option, battery: Battery, duty_tok_s: float) -> None:
    e = opt.energy_per_token_j
    if not e:
        return
    opt.tokens_per_charge = battery.energy_j / e
    idle = opt.idle_w or 0.0
    rate = min(duty_tok_s, opt.tok_s or duty_tok_s)
    busy = rate / opt.tok_s if opt.tok_s else 0.0
    avg = rate * e + (1.0 - busy) * idle
    opt.battery_hours = battery.energy_j / avg / 3600.0 if avg > 0 else None
    if opt.tok_s and duty_tok_s > opt.tok_s:
        opt.notes.append(f"cannot sustain {duty_tok_s:g} tok/s (max {opt.tok_s:.3g})")


_si = si


_UNIT = {"bytes": "B", "time": "s", "energy": "J", "power": "W", "rate": "tok/s", "plain": ""}


def _explain(opt: Option, constraints: Sequence[Constraint], battery: Battery | None,
             duty: float) -> None:
    if not opt.fits:
        opt.why = "does not fit: " + "; ".join(opt.notes)
        return
    parts: list[str] = []
    for c in constraints:
        value = getattr(opt, c.field)
        unit = _UNIT[KEYS[c.key][1]]
        if value is None:
            opt.violations.append(f"{c.key} unknown")
            continue
        good = c.ok(float(value))
        sign = c.op if good else {"<=": ">", "<": ">=", ">=": "<", ">": "<="}[c.op]
        text = f"{c.key} {_si(value, unit)} {sign} {_si(c.value, unit)}"
        (parts if good else opt.violations).append(text)
    head = "meets " + ", ".join(parts) if opt.ok else "fails " + ", ".join(opt.violations)
    extra = [f"{_si(opt.energy_per_token_j, 'J')}/token", f"{_si(opt.tok_s, 'tok/s')}",
             opt.placement]
    if battery is not None and opt.tokens_per_charge:
        extra.append(f"{opt.tokens_per_charge:,.0f} tokens per charge, "
                     f"{opt.battery_hours:,.1f} h at {duty:g} tok/s")
    opt.why = "; ".join([head, *[x for x in extra if x], *opt.notes, opt.source])


OBJECTIVES: dict[str, tuple[str, int]] = {
    "energy": ("energy_per_token_j", 1), "ttft": ("ttft_s", 1), "itl": ("itl_s", 1),
    "tok_s": ("tok_s", -1), "ram": ("ram_bytes", 1),
}


def recommend(
    model: ModelRef, constraints: Sequence[Constraint], *, platforms: Sequence[Any] | None = None,
    bits: Sequence[int] = BITS, traces: Sequence[Path] = (), battery: Battery | None = None,
    duty_tok_s: float = 1.0, prompt: int = 8, generate: int = 64, objective: str = "energy",
    evals: Sequence[Mapping[str, Any]] = (), progress: Callable[[], None] | None = None,
) -> list[Option]:
    """Every platform x bits option, best first (see module docs)."""
    from tinytelem.analysis.compare import _eval_for
    from tinytelem.platforms import all_platforms

    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    measured = {}
    for t in traces:
        found = _measured(t, model)
        if found is not None:
            measured[(found[0], found[1])] = found
    options = []
    for p in platforms if platforms is not None else all_platforms():
        for b in bits:
            opt = predict(p, model, b, prompt, generate)
            hit = measured.get((p.name, b))
            if hit is not None and opt.fits:
                _apply_measured(opt, hit[2], hit[3])
            ev = _eval_for({"model": model.name, "model_sha256": model.sha256,
                            "weight_bits": b}, evals)
            opt.accuracy, opt.perplexity = ev.get("accuracy"), ev.get("perplexity")
            if battery is not None and opt.fits:
                _battery(opt, battery, duty_tok_s)
            _explain(opt, constraints, battery, duty_tok_s)
            options.append(opt)
            if progress is not None:
                progress()
    key, sign = OBJECTIVES[objective]

    def rank(o: Option) -> tuple[int, int, float, int]:
        v = getattr(o, key)
        return (0 if o.ok else 1 if o.fits else 2, len(o.violations),
                sign * v if v is not None else math.inf, -o.bits)

    return sorted(options, key=rank)
