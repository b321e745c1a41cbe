"""Will this model run on that chip? Structure, storage types, flash and RAM against a platform.

The memory model (documented in docs/model-formats.md, "Validation"):

* **flash need** = stored weight bytes + an engine code estimate for the platform family
  (:data:`CODE_ESTIMATES`; MCUs run weights in place from flash / XIP). Linux boards load the
  weights into DRAM, so there the weights count against RAM and flash is not checked.
* **RAM need** = KV cache (``2 * layers * context * kv_dim * kv_bytes``) + run.c's activation
  buffers at that context (:func:`tinytelem.platforms.memory.activation_bytes`) + scratch (one float
  row of the widest matrix for dequantization, the int8-quantized activation vector, and the
  telemetry buffers) + the platform's system reserve.
* **RAM available** = SRAM + PSRAM on MCUs (KV and activations go to PSRAM only when SRAM is not
  enough, which the report says), DRAM on Linux boards.

A model that does not fit gets the remedy with numbers: the longest context that fits at fp32,
fp16 and int8 KV, or the bit-width whose weights fit the flash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from tinytelem.errors import ConfigError
from tinytelem.models.formats import LoadedModel
from tinytelem.models.gguf_io import TensorInfo
from tinytelem.platforms.memory import (
    CODE_ESTIMATES,
    MemoryNeed,
    family_of,
    longest_context,
    memory_need,
)

__all__ = [
    "CODE_ESTIMATES",
    "ENGINE_TYPES",
    "MemoryNeed",
    "ValidationReport",
    "family_of",
    "memory_need",
    "render_report",
    "validate_model",
]

#: Storage types the tinytelem firmware engine runs natively (the .tlm tensor kinds).
ENGINE_TYPES: Final = frozenset({"f32", "f16", "int8", "int4", "int3", "int2", "uint8", "uint4",
                                 "uint3", "uint2"})


# ---------------------------------------------------------------- memory model

# The budget itself lives beside the platform registry (tinytelem.platforms.memory), shared with
# the twin's cost model, recommend and bottleneck analysis.


@dataclass
class ValidationReport:
    """Everything ``model validate`` prints; ``fits`` decides the exit code."""

    model: str
    fmt: str
    config: dict[str, Any]
    params: int
    tensors: list[TensorInfo]
    type_histogram: dict[str, int]
    bits_per_weight: float
    weight_bytes: int
    unsupported_types: list[str]
    unsupported_ops: list[str]
    platform: str | None = None
    context: int = 0
    kv_bits: int = 32
    need: MemoryNeed | None = None
    flash_available: int = 0
    ram_available: int = 0
    sram_available: int = 0
    flash_ok: bool = True
    ram_ok: bool = True
    placement: dict[str, str] = field(default_factory=dict)
    remedies: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """True when flash and RAM suffice and no op is unsupported."""
        return self.flash_ok and self.ram_ok and not self.unsupported_ops

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report with stable keys."""
        need = self.need
        return {
            "model": self.model, "format": self.fmt, "config": self.config,
            "params": self.params, "weight_bytes": self.weight_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "type_histogram": self.type_histogram,
            "tensors": [{"name": t.name, "shape": list(t.shape), "type": t.qtype,
                         "bytes": t.nbytes, "bits_per_weight": round(t.bits_per_weight, 4)}
                        for t in self.tensors],
            "unsupported_types": self.unsupported_types,
            "unsupported_ops": self.unsupported_ops,
            "platform": self.platform, "context": self.context, "kv_bits": self.kv_bits,
            "need": None if need is None else {
                "flash": need.flash, "ram": need.ram, "weights": need.weights,
                "code": need.code, "kv_cache": need.kv_cache,
                "activations": need.activations, "scratch": need.scratch,
                "reserve": need.reserve},
            "available": {"flash": self.flash_available, "ram": self.ram_available,
                          "sram": self.sram_available},
            "flash_ok": self.flash_ok, "ram_ok": self.ram_ok, "fits": self.fits,
            "placement": self.placement, "remedies": self.remedies, "notes": self.notes,
        }


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"




def validate_model(lm: LoadedModel, platform: str | None = None, context: int | None = None,
                   kv_bits: int = 32) -> ValidationReport:
    """Check a model's structure, types and (with a platform) its flash and RAM fit.

    Raises:
        ConfigError: For an unknown platform, a context outside 1..seq_len, or kv_bits not in
            32/16/8.
    """
    cfg = lm.model.config
    if kv_bits not in (32, 16, 8):
        raise ConfigError(f"--kv-bits must be 32, 16 or 8, got {kv_bits}")
    ctx = cfg.seq_len if context is None else context
    if not 1 <= ctx <= cfg.seq_len:
        raise ConfigError(f"context {ctx} is outside 1..{cfg.seq_len} (the model's seq_len)")
    hist = Counter(t.qtype for t in lm.tensors)
    numel = sum(t.numel for t in lm.tensors)
    wbytes = lm.weight_bytes
    unsupported = sorted({t.qtype for t in lm.tensors} - ENGINE_TYPES)
    rep = ValidationReport(
        model=lm.path, fmt=lm.fmt, config={k: getattr(cfg, k) for k in (
            "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len",
            "shared_classifier")},
        params=numel, tensors=lm.tensors, type_histogram=dict(sorted(hist.items())),
        bits_per_weight=8.0 * wbytes / max(1, numel), weight_bytes=wbytes,
        unsupported_types=unsupported, unsupported_ops=list(lm.unsupported_ops),
        context=ctx, kv_bits=kv_bits, notes=list(lm.notes))
    if unsupported:
        rep.notes.append(
            f"types {', '.join(unsupported)} are not run natively by the tinytelem engine; "
            "convert with `tinytelem model quantize MODEL --bits 4 -o model.tlm` (sizes below "
            "are of this file as stored)")
    if platform is None:
        return rep
    from tinytelem.platforms import get_platform

    p = get_platform(platform)
    rep.platform = p.name
    kvb = kv_bits // 8
    fam = family_of(p)
    need = memory_need(cfg, wbytes, p, ctx, kvb)
    rep.need = need
    rep.sram_available = p.sram_bytes
    if fam == "linux":
        rep.ram_available = p.dram_bytes
        rep.flash_available = 0
        ram_need = need.ram + wbytes
        rep.ram_ok = ram_need <= p.dram_bytes
        rep.placement = {"weights": "dram", "kv_cache": "dram", "activations": "dram"}
    else:
        rep.flash_available = p.flash_bytes
        rep.ram_available = p.sram_bytes + p.psram_bytes
        rep.flash_ok = need.flash <= p.flash_bytes
        rep.ram_ok = need.ram <= rep.ram_available
        in_sram = need.ram <= p.sram_bytes
        spill = "psram" if p.psram_bytes else "does not fit"
        rep.placement = {
            "weights": "flash-xip",
            "kv_cache": "sram" if in_sram else spill,
            "activations": "sram" if need.activations + need.scratch + need.reserve
            <= p.sram_bytes else spill}
        if p.psram_bytes and wbytes + (0 if in_sram else need.ram) <= p.psram_bytes:
            rep.placement["weights"] = "psram (copied from flash at boot; faster than XIP)"
        if not in_sram and rep.ram_ok:
            rep.notes.append(f"KV cache does not fit the {_kib(p.sram_bytes)} SRAM and goes to "
                             "PSRAM (slower); a shorter --context or int8 KV keeps it in SRAM")
        if not rep.flash_ok:
            room = p.flash_bytes - need.code
            for bits in (8, 4, 3, 2):
                est = sum((t.numel * bits // 8 + t.numel // 32 * 2) if len(t.shape) == 2
                          else t.nbytes for t in lm.tensors)
                if est <= room:
                    rep.remedies.append(
                        f"weights need {_kib(wbytes)} but {_kib(max(room, 0))} of flash is left "
                        f"after {_kib(need.code)} of code; {bits}-bit weights (~{_kib(est)}) "
                        f"fit: `tinytelem model quantize MODEL --bits {bits} -o model.tlm`")
                    break
            else:
                rep.remedies.append(f"even 2-bit weights do not fit {_kib(p.flash_bytes)} of "
                                    "flash; choose a smaller model or a platform with more flash")
    if not rep.ram_ok:
        ram = rep.ram_available - (wbytes if fam == "linux" else 0)
        opts = []
        for kb, label in ((kvb, f"{kv_bits}-bit KV"), (2, "fp16 KV"), (1, "int8 KV")):
            if kb > kvb:
                continue
            best = longest_context(cfg, wbytes, p, ram, kb)
            if best > 0:
                opts.append(f"--context {best} with {label}")
        shown = need.ram + (wbytes if fam == "linux" else 0)
        msg = (f"needs {_kib(shown)} RAM for context {ctx} but {p.display_name} has "
               f"{_kib(rep.ram_available)}")
        rep.remedies.append(msg + ("; fits with " + ", or ".join(opts) if opts
                                   else "; no context length fits"))
    return rep


def render_report(rep: ValidationReport) -> str:
    """Human-readable report: structure, types, memory table and the verdict."""
    c = rep.config
    lines = [f"model {rep.model} ({rep.fmt}): dim {c['dim']}, hidden {c['hidden_dim']}, "
             f"{c['n_layers']} layers, {c['n_heads']} heads ({c['n_kv_heads']} kv), vocab "
             f"{c['vocab_size']}, seq_len {c['seq_len']}",
             f"{rep.params:,} parameters in {len(rep.tensors)} tensors, {_kib(rep.weight_bytes)} "
             f"stored, {rep.bits_per_weight:.2f} bits/weight",
             "types: " + ", ".join(f"{k} x{v}" for k, v in rep.type_histogram.items())]
    if rep.unsupported_ops:
        lines.append("unsupported ops: " + ", ".join(rep.unsupported_ops))
    lines += [f"note: {n}" for n in rep.notes]
    need = rep.need
    if need is not None:
        lines.append(f"platform {rep.platform}, context {rep.context}, KV {rep.kv_bits}-bit:")
        rows = [("weights", need.weights), ("engine code (estimate)", need.code),
                ("KV cache", need.kv_cache), ("activations", need.activations),
                ("scratch", need.scratch), ("system reserve (estimate)", need.reserve)]
        lines += [f"  {k:<26} {_kib(v):>14}" for k, v in rows]
        if rep.flash_available:
            lines.append(f"  flash need {_kib(need.flash)} of {_kib(rep.flash_available)}: "
                         f"{'ok' if rep.flash_ok else 'DOES NOT FIT'}")
        ram = need.ram + (need.weights if rep.placement.get("weights") == "dram" else 0)
        lines.append(f"  RAM need {_kib(ram)} of {_kib(rep.ram_available)}: "
                     f"{'ok' if rep.ram_ok else 'DOES NOT FIT'}")
        lines.append("  placement: " + ", ".join(f"{k} -> {v}" for k, v in rep.placement.items()))
    lines += [f"remedy: {r}" for r in rep.remedies]
    if need is not None or rep.unsupported_ops:
        lines.append("verdict: " + ("fits" if rep.fits else "does NOT fit"))
    return "\n".join(lines)
