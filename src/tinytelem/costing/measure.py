"""Measure the C engine under QEMU and fit its instructions per operator (the engine calibration).

One command (``tinytelem firmware calibrate``) runs this: for every ISA family it builds the
firmware with the llama engine for several model shapes and weight widths (``.tlm`` files from
seeded random weights and the project's quantizer), boots each under ``-icount shift=0`` (one
instruction = 1 ns of virtual time) and runs one greedy RUN at trace levels off, tokens and
spans. From the device's own frames:

* **span work**: a span's begin..end records measure the operator plus one span record (the
  part of the begin record after its timestamp and the part of the end record before it add up
  to one record), so ``work = ticks * 1e9 / tick_hz - record``; a record's cost is the gap
  between a LAYER begin and the record right after it (nothing runs between the two);
* **frame cost**: (spans-level run - tokens-level run - records) / SPAN_BATCH frames, and
  (tokens-level run - off run) / (TOKEN + MEMORY frames), fitted as ``a + b * wire bytes``;
* **residual**: the off-level run minus all span work, per forward pass (the token loop, link
  polling, the SysTick handler), fitted as ``a + b * n_layers``.

Each operator kind is then fitted by weighted least squares (relative error) on the features of
:mod:`tinytelem.costing.features`. The result is JSON in ``calibration/engine.json`` with the git
tree hash of ``firmware/`` it was measured on.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinytelem.costing.features import (
    CALIBRATION_GROUP,
    WeightBits,
    forward_ops,
    matvec_columns,
    sample_features,
)
from tinytelem.errors import ConfigError
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.protocol.enums import Op

if TYPE_CHECKING:
    import trio

    from tinytelem.protocol.messages import Hello

__all__ = [
    "FAMILIES",
    "SHAPES",
    "Family",
    "RunFrames",
    "calibrate",
    "engine_hash",
    "firmware_run",
    "measure_one",
]

SCHEMA = 1
N_TOKENS = 6
LEVELS = (0, 1, 2)


@dataclass(frozen=True)
class Family:
    """An ISA family: the QEMU target that runs it and the build that produces its code."""

    name: str
    target: str
    description: str
    make_vars: dict[str, str] = field(default_factory=dict)
    bits: tuple[int, ...] = (2, 3, 4, 8, 32)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("cortex-m4", "cortex-m4", "Armv7E-M, DSP (SMLAD) + FPv4-SP (mps2-an386)"),
    Family("cortex-m7", "cortex-m7", "Armv7E-M, DSP + FPv5 (mps2-an500)"),
    Family("cortex-m0plus", "cortex-m4",
           "Armv6-M, no DSP, no FPU (soft float): Cortex-M0+ code run on mps2-an386",
           {"ARCH": "-mcpu=cortex-m0plus -mthumb -mfloat-abi=soft"}),
    Family("rv32imac", "riscv32", "RV32IMAC, no F (soft float) (QEMU virt)"),
    Family("rv32imafc", "riscv32f", "RV32IMAFC, single-precision F (QEMU virt)"),
)}

SHAPES: dict[str, LlamaConfig] = {
    "260k": LlamaConfig(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4,
                        vocab_size=512, seq_len=512, shared_classifier=True),
    "d96": LlamaConfig(dim=96, hidden_dim=256, n_layers=3, n_heads=6, n_kv_heads=2,
                       vocab_size=384, seq_len=128, shared_classifier=True),
    "d128": LlamaConfig(dim=128, hidden_dim=344, n_layers=2, n_heads=4, n_kv_heads=4,
                        vocab_size=256, seq_len=64, shared_classifier=True),
}
"""Calibration shapes: stories260K's, and two with other widths, head sizes (8, 16, 32), GQA
ratios, vocabularies and contexts, so the fit must generalise across shapes."""


def engine_hash(root: Path) -> str:
    """Git tree hash of ``firmware/`` at HEAD, with ``-dirty`` when it has local changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown (git not found)"
    try:
        tree = subprocess.run([git, "-C", str(root), "rev-parse", "HEAD:firmware"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([git, "-C", str(root), "status", "--porcelain", "--",
                                "firmware"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return tree + ("-dirty" if dirty else "")


def make_model(shape: str, bits: int, out_dir: Path, seed: int = 7) -> Path:
    """A ``.tlm`` of ``shape`` with seeded random weights at ``bits`` (32: all float)."""
    from tinytelem.models.llama2c import LlamaModel, LlamaWeights
    from tinytelem.models.quant import quantize_model
    from tinytelem.models.tlm import write_tlm

    path = out_dir / f"{shape}-{bits}.tlm"
    if path.is_file():
        return path
    cfg = SHAPES[shape]
    rng = np.random.default_rng(seed)
    kv = cfg.kv_dim
    nl, d, h = cfg.n_layers, cfg.dim, cfg.hidden_dim

    def w(*dims: int) -> Any:
        return (rng.standard_normal(dims, dtype=np.float32) / np.sqrt(dims[-1])).astype(
            np.float32)

    emb = w(cfg.vocab_size, d) * np.float32(4.0)
    weights = LlamaWeights(
        token_embedding=emb, rms_att=np.ones((nl, d), np.float32), wq=w(nl, d, d),
        wk=w(nl, kv, d), wv=w(nl, kv, d), wo=w(nl, d, d), rms_ffn=np.ones((nl, d), np.float32),
        w1=w(nl, h, d), w2=w(nl, d, h), w3=w(nl, h, d), rms_final=np.ones(d, np.float32),
        wcls=emb)
    model = LlamaModel(cfg, weights, name=f"cal-{shape}", sha256="", source="calibration")
    if bits == 32:
        kinds = ("tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w2", "w3")
        q = quantize_model(model, 8, CALIBRATION_GROUP, per_tensor_bits=dict.fromkeys(kinds, 32))
    else:
        q = quantize_model(model, bits, CALIBRATION_GROUP)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tlm(q, path)
    return path


@dataclass
class RunFrames:
    """What one run at one trace level measured."""

    level: int
    instructions: int
    forwards: int
    generated: int
    span_work: list[tuple[int, int, int, float]] = field(default_factory=list)
    """(pos, layer, op, measured instructions incl. one span record) per closed span."""
    frame_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """Wire bytes of every frame, by type name."""
    records: int = 0
    """Span records (events) the run's SPAN_BATCH frames carried."""
    record_gaps: list[float] = field(default_factory=list)
    """Instructions from a LAYER begin to the next record: one record's cost each."""


async def firmware_run(stream: trio.abc.Stream, level: int, n_tokens: int,
                       prompt: tuple[int, ...] = (1,)) -> tuple[Hello, list[Any]]:
    """One greedy run on a freshly booted firmware: the HELLO it answered CONFIG with, and the
    frames from then until INFER_END (inclusive), as sent (SPAN_BATCH frames not expanded:
    :func:`~tinytelem.protocol.codec.expand_spans` gives their span events).

    Boots on its HELLO, sends CONFIG ``level`` (the firmware says HELLO again), then RUN.
    Shared by calibration and ``bench/firmware.py`` so both read a run the same way.

    Raises:
        ConfigError: The link closed mid-run, a frame was corrupt, or the run did not end OK.
    """
    from tinytelem.protocol.codec import NEED_DATA, FrameDecoder, FrameError, encode_frame
    from tinytelem.protocol.commands import Config, Run
    from tinytelem.protocol.messages import Hello, InferEnd

    dec = FrameDecoder(expand_spans=False)
    frames: list[Any] = []

    async def until(kind: type) -> Any:
        while True:
            ev = dec.next_event()
            if ev is NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConfigError("the firmware closed the link in the middle of a run")
                dec.receive_data(bytes(data))
                continue
            if isinstance(ev, FrameError):
                raise ConfigError(f"corrupt frame from the firmware: {ev}")
            frames.append(ev)
            if isinstance(ev.message, kind):
                return ev

    await until(Hello)
    await stream.send_all(encode_frame(Config(level), 0, 0))
    hello = (await until(Hello)).message
    frames.clear()
    await stream.send_all(encode_frame(Run(1, 42, 0.0, n_tokens, prompt), 1, 0))
    end = await until(InferEnd)
    if end.message.status != 0:
        raise ConfigError(f"the firmware ended the run with status {end.message.status}")
    return hello, frames


async def _one_run(target: str, elf: Path, level: int, n_tokens: int) -> RunFrames:
    import trio

    from tinytelem.firmware.qemu import run_qemu
    from tinytelem.protocol.codec import expand_spans
    from tinytelem.protocol.messages import InferBegin, SpanBatch, SpanBegin, SpanEnd

    with trio.fail_after(600):
        async with run_qemu(target, elf) as stream:
            hello, frames = await firmware_run(stream, level, n_tokens)
    end = frames[-1]
    scale = 1e9 / hello.tick_hz
    begin = next(f for f in frames if isinstance(f.message, InferBegin))
    generated = int(end.message.n_generated)
    out = RunFrames(level, round(((end.ticks - begin.ticks) & 0xFFFFFFFF) * scale), 0,
                    generated)
    open_spans: dict[tuple[int, int], int] = {}
    pos = -1
    for f in frames:
        out.frame_bytes[f.message.TYPE.name].append(f.size)
        if isinstance(f.message, SpanBatch):
            recs = f.message.records
            out.records += len(recs)
            out.record_gaps += [b.delta * scale for a, b in itertools.pairwise(recs)
                                if not a.end and a.op == Op.LAYER]
    for f in (e for frame in frames for e in expand_spans(frame)):
        m = f.message
        if isinstance(m, SpanBegin):
            if m.op == Op.EMBED:
                pos += 1
            open_spans[(m.layer, m.op)] = f.ticks
        elif isinstance(m, SpanEnd):
            t0 = open_spans.pop((m.layer, m.op))
            if m.op != Op.LAYER:
                out.span_work.append((pos, m.layer, m.op, ((f.ticks - t0) & 0xFFFFFFFF) * scale))
    return out


async def measure_one(family: Family, shape: str, bits: int, work_dir: Path,
                      n_tokens: int = N_TOKENS) -> dict[str, Any]:
    """Build and run one (family, shape, bits) at every trace level; the raw measurement."""
    from tinytelem.firmware.build import build

    work_dir = work_dir.resolve()  # make runs in firmware/: relative paths would move
    tlm = make_model(shape, bits, work_dir / "models")
    res = build(family.target, tlm, build_dir=work_dir / f"{family.name}-{shape}-{bits}",
                trace_level=0, make_vars=family.make_vars)
    runs = {lv: await _one_run(family.target, res.elf, lv, n_tokens) for lv in LEVELS}
    off, tok, spans = runs[0], runs[1], runs[2]
    # A greedy run that samples BOS stops early: count the passes the spans saw (the run is
    # deterministic, so every level ran the same ones).
    forwards = sum(1 for s in spans.span_work if s[2] == Op.EMBED)
    samples = sum(1 for s in spans.span_work if s[2] == Op.SAMPLE)
    record = float(np.mean(spans.record_gaps)) if spans.record_gaps else 0.0
    batches = spans.frame_bytes["SPAN_BATCH"]
    batch = (spans.instructions - tok.instructions - spans.records * record) / max(len(batches), 1)
    tok_frames = tok.frame_bytes["TOKEN"] + tok.frame_bytes["MEMORY"]
    return {
        "family": family.name, "target": family.target, "shape": shape, "bits": bits,
        "context": res.context, "generated": off.generated, "forwards": forwards,
        "samples": samples,
        "instructions": {str(r.level): r.instructions for r in runs.values()},
        "span_record": {"instructions": record, "records": spans.records},
        "span_batch": {"instructions": batch, "bytes": float(np.mean(batches or [0])),
                       "frames": len(batches)},
        "token_frames": {"instructions": (tok.instructions - off.instructions)
                         / max(len(tok_frames), 1),
                         "bytes": float(np.mean(tok_frames or [0]))},
        "spans": [[p, layer, op, round(w - record, 1)]
                  for p, layer, op, w in spans.span_work],
    }


# ------------------------------------------------------------------------------- fitting

def _lstsq(rows: Sequence[dict[str, float]], y: Sequence[float], cols: Sequence[str]
           ) -> dict[str, float]:
    """Least squares of relative error; columns never present are dropped (coefficient 0)."""
    a = np.array([[r.get(c, 0.0) for c in cols] for r in rows], dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    used = [i for i in range(len(cols)) if np.any(a[:, i] != 0)]
    w = 1.0 / np.maximum(np.abs(yv), 1.0)
    coef, *_ = np.linalg.lstsq(a[:, used] * w[:, None], yv * w, rcond=None)
    out = dict.fromkeys(cols, 0.0)
    for i, c in zip(used, coef, strict=True):
        out[cols[i]] = float(c)
    return out


def _shape_of(m: dict[str, Any]) -> LlamaConfig:
    return SHAPES[m["shape"]]


def fit_family(measurements: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Coefficients of every operator kind for one family from its measurements."""
    ms = list(measurements)
    groups: dict[str, tuple[list[dict[str, float]], list[float]]] = defaultdict(
        lambda: ([], []))
    bits_seen: set[int] = set()
    for m in ms:
        cfg = _shape_of(m)
        wb = WeightBits.uniform(m["bits"])
        bits_seen.update({wb.layers, wb.embedding})
        per_pos: dict[int, dict[tuple[int, int], Any]] = {}
        for pos, layer, op, work in m["spans"]:
            if op == Op.SAMPLE:
                feats = sample_features(cfg)
                groups["sample"][0].append(dict(feats.features))
                groups["sample"][1].append(work)
                continue
            if pos not in per_pos:
                per_pos[pos] = {(o.layer, int(o.op)): o for o in forward_ops(cfg, pos, wb)}
            o = per_pos[pos][(layer, op)]
            key = o.kind if o.kind not in ("embed",) else f"embed_{wb.embedding}"
            groups[key][0].append(dict(o.features))
            groups[key][1].append(work)
    bits = tuple(sorted(bits_seen))
    cols = {"norm": ("one", "dim"), "rope": ("one", "rot"),
            "attention": ("one", "heads", "heads_t", "dim_t"), "sample": ("one", "vocab"),
            "matvec": matvec_columns(bits)}
    ops: dict[str, dict[str, float]] = {}
    for key, (rows, y) in sorted(groups.items()):
        if key.startswith("embed_"):
            b = key.split("_")[1]
            ops[key] = _lstsq(rows, y, (f"one_{b}", f"dim_{b}"))
        else:
            ops[key] = _lstsq(rows, y, cols[key])
    # Frame cost per frame: a + b * wire bytes, from SPAN_BATCH and TOKEN/MEMORY frames.
    pts = [(m["span_batch"]["bytes"], m["span_batch"]["instructions"]) for m in ms]
    pts += [(m["token_frames"]["bytes"], m["token_frames"]["instructions"]) for m in ms]
    xb = np.array([[1.0, b] for b, _ in pts])
    fc, *_ = np.linalg.lstsq(xb, np.array([i for _, i in pts]), rcond=None)
    frame = {"one": float(fc[0]), "bytes": float(fc[1])}
    # Residual per forward at level off: total minus the span work, a + b * n_layers.
    res_rows, res_y = [], []
    for m in ms:
        cfg = _shape_of(m)
        work = sum(s[3] for s in m["spans"])
        res_rows.append({"one": 1.0, "layers": float(cfg.n_layers)})
        res_y.append((m["instructions"]["0"] - work) / max(m["forwards"], 1))
    residual = _lstsq(res_rows, res_y, ("one", "layers"))
    # A span event: its record's instructions (clock read, a few bytes into the batch).
    record = float(np.mean([m["span_record"]["instructions"] for m in ms]))
    return {"ops": ops, "frame": frame, "residual": residual, "bits": list(bits),
            "span_record": record}


def calibrate(families: Sequence[str], shapes: Sequence[str], work_dir: Path, root: Path,
              progress: Callable[[str], None] = lambda s: None,
              bits: Sequence[int] | None = None) -> dict[str, Any]:
    """Measure and fit every family; the calibration document (see docs/emulator.md)."""
    import trio

    out: dict[str, Any] = {"schema": SCHEMA, "engine_hash": engine_hash(root),
                           "method": "QEMU -icount shift=0 (1 instruction = 1 ns), per-op span "
                                     "records, weighted least squares per operator kind",
                           "group_size": CALIBRATION_GROUP, "tokens": N_TOKENS,
                           "families": {}}
    for name in families:
        fam = FAMILIES[name]
        ms = []
        for shape in shapes:
            for b in bits or fam.bits:
                progress(f"{name}: {shape} {b}-bit")
                raw = work_dir / "raw" / f"{name}-{shape}-{b}.json"
                m = trio.run(measure_one, fam, shape, b, work_dir)
                raw.parent.mkdir(parents=True, exist_ok=True)
                raw.write_text(json.dumps(m))
                ms.append(m)
        fit = fit_family(ms)
        fit["description"] = fam.description
        fit["target"] = fam.target
        fit["measurements"] = [{k: m[k] for k in ("shape", "bits", "context", "forwards",
                                                  "samples", "generated", "instructions")}
                               for m in ms]
        out["families"][name] = fit
    return out


def write_calibration(doc: dict[str, Any], path: Path) -> None:
    """Write the calibration JSON (stable key order, one trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

