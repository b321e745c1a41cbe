"""Benchmark of the real firmware: instructions per token and tracing overhead per target.

Usage::

    python bench/firmware.py [--json | --markdown] [--tokens 16] [--target cortex-m4 ...]
                             [--native-repeat 5] [--model M.tlm ...] [--no-demo]

For every QEMU target (cortex-m4, cortex-m7, stm32f405, riscv32) the firmware boots under
``-icount shift=0,sleep=off``, gets ``CONFIG`` with trace level 0 (off), 1 (tokens) or 2 (spans)
and one greedy ``RUN`` of ``--tokens`` tokens. The figures come from the device's own frames:

* **instructions**: under ``-icount shift=0`` each guest instruction advances virtual time by
  exactly 1 ns, so a run's instruction count is ``(INFER_END.ticks - INFER_BEGIN.ticks) *
  1e9 / tick_hz`` (tick_hz from HELLO). RISC-V counts mcycle (1 GHz: exact); the Cortex-M
  boards count SysTick at 25 MHz (mps2, 40 instructions per tick) or 168 MHz (netduinoplus2),
  so those are exact to one tick. Instructions include everything the core executed during
  the run: the engine, the telemetry encoder, UART writes and the 1 kHz SysTick handler.
* ``instructions_per_token``: run instructions / forward passes (prompt + generated - 1).
* ``tokens_per_s_virtual``: generated tokens / run duration in virtual seconds, i.e. at 1e9
  instructions per second; scale by the real core's instructions per second for an estimate.
* ``overhead``: (instructions at the level / instructions with tracing off) - 1.

``native`` runs the host build as a process (stdio link); it has no instruction counter, so its
figures are host time (CLOCK_MONOTONIC microseconds), medians of ``--native-repeat`` runs, and
its overheads are as noisy as the host.

With ``--model`` (a ``.tlm``; repeat it for several bit widths) the llama engine is benchmarked
too; when that build is not possible yet, the result says why instead. For the llama engine
the spans run also gives each operator's instructions per token (its spans' durations, less
one measured span record each), per multiply-accumulate (MACs from the model's shapes;
attention's averaged over the run's positions) and its share of the untraced token.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tinytelem.costing.measure import firmware_run
from tinytelem.errors import ConfigError, TinyTelemError
from tinytelem.firmware.build import BuildResult, build
from tinytelem.firmware.qemu import run_qemu
from tinytelem.firmware.targets import get_target, missing_tools
from tinytelem.protocol.codec import expand_spans
from tinytelem.protocol.enums import Op
from tinytelem.protocol.messages import InferBegin, SpanBatch, SpanBegin, SpanEnd

QEMU_TARGETS = ["cortex-m4", "cortex-m7", "stm32f405", "riscv32", "riscv32f"]
LEVELS = {0: "off", 1: "tokens", 2: "spans"}
PROMPT = (1,)
SESSION_TIMEOUT_S = 120.0

Opener = Callable[[], AbstractAsyncContextManager[trio.abc.Stream]]


async def _one_run(open_link: Opener, level: int, n_tokens: int) -> dict[str, Any]:
    """Boot, CONFIG ``level``, one greedy RUN; the run's tick figures."""
    async with open_link() as stream:
        hello, run = await firmware_run(stream, level, n_tokens, PROMPT)
    begin = next(f for f in run if isinstance(f.message, InferBegin))
    end = run[-1]
    ticks = (end.ticks - begin.ticks) & 0xFFFFFFFF
    generated = int(end.message.n_generated)
    return {"ticks": ticks, "tick_hz": int(hello.tick_hz), "platform": hello.platform,
            "generated": generated, "forwards": len(PROMPT) + generated - 1,
            "frames": len(run), "op_ticks": _op_ticks(run)}


def _op_ticks(run: list[Any]) -> dict[str, Any]:
    """Ticks inside each operator's spans and their count (layer spans: count only), and the
    ticks from each LAYER begin to the record after it (nothing runs between: one record)."""
    open_at: dict[tuple[int, int], int] = {}
    ticks: dict[str, int] = {}
    count: dict[str, int] = {}
    spans = 0
    gaps = [b.delta for f in run if isinstance(f.message, SpanBatch)
            for a, b in itertools.pairwise(f.message.records)
            if not a.end and a.op == Op.LAYER]
    for f in (e for frame in run for e in expand_spans(frame)):
        m = f.message
        if isinstance(m, SpanBegin):
            open_at[(m.layer, m.op)] = f.ticks
        elif isinstance(m, SpanEnd) and (m.layer, m.op) in open_at:
            spans += 1
            start = open_at.pop((m.layer, m.op))
            if m.op == Op.LAYER:
                continue
            name = Op(m.op).name if m.op in Op._value2member_map_ else str(m.op)
            # signed: a SysTick read at a reload edge can come out one tick early
            d = ((f.ticks - start + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            ticks[name] = ticks.get(name, 0) + d
            count[name] = count.get(name, 0) + 1
    return {"ticks": ticks, "count": count, "spans": spans,
            "record_ticks": statistics.mean(gaps) if gaps else 0.0}


def model_macs(model: Path, forwards: int) -> dict[str, float]:
    """Multiply-accumulates per forward pass of each operator kind (shapes from the .tlm).

    Attention's depend on the position: averaged over positions 0 .. forwards-1.
    """
    from tinytelem.models.tlm import parse_tlm

    qmodel, infos, _ = parse_tlm(model.read_bytes(), str(model))
    c = qmodel.config
    cols = {i.name: i.shape[1] for i in infos if len(i.shape) == 2}
    kv = c.dim * c.n_kv_heads // c.n_heads
    w2 = cols.get("layers.0.w2", c.hidden_dim)
    mean_len = (forwards + 1) / 2
    return {
        "QKV": c.n_layers * (c.dim + 2 * kv) * c.dim,
        "ATTENTION": c.n_layers * 2 * c.n_heads * c.head_dim * mean_len,
        "ATTN_OUT": c.n_layers * c.dim * c.dim,
        "FFN": c.n_layers * (2 * c.hidden_dim * c.dim + c.dim * w2),
        "CLASSIFIER": c.vocab_size * c.dim,
    }


def _per_op(spans_run: dict[str, Any], off_instructions: float, spans_instructions: float,
            macs: dict[str, float] | None) -> dict[str, Any]:
    """Instructions per token of each operator, per MAC, and share of the untraced token.

    A span's duration holds one span record (the rest of its begin record after the timestamp
    and its end record up to the timestamp), so each span is charged one record less: the
    measured gap from a LAYER begin to the record right after it. The SPAN_BATCH frames are
    sent between tokens, outside every span.
    """
    ot = spans_run["op_ticks"]
    fwd = max(spans_run["forwards"], 1)
    scale = 1e9 / spans_run["tick_hz"]
    frame = ot["record_ticks"] * scale
    per_token_off = off_instructions / fwd
    ops: dict[str, Any] = {}
    for name, t in ot["ticks"].items():
        per = (t * scale - ot["count"][name] * frame) / fwd
        row: dict[str, Any] = {"instructions_per_token": round(per),
                               "share": per / per_token_off}
        m = (macs or {}).get(name)
        if m:
            row["macs_per_token"] = round(m)
            row["instructions_per_mac"] = per / m
        ops[name] = row
    return {"span_record_instructions": round(frame),
            "span_overhead_per_event": round((spans_instructions - off_instructions)
                                             / max(2 * ot["spans"], 1)),
            "ops": ops}


def _qemu_opener(target: str, elf: Path) -> Opener:
    return lambda: run_qemu(target, elf)


def _native_opener(exe: Path) -> Opener:
    @asynccontextmanager
    async def open_native() -> AsyncIterator[trio.abc.Stream]:
        proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            yield trio.StapledStream(proc.stdin, proc.stdout)
        finally:
            with trio.CancelScope(shield=True):
                proc.kill()
                await proc.wait()

    return open_native


async def _measure(open_link: Opener, n_tokens: int, repeat: int, icount: bool,
                   model: Path | None = None) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    base = 0.0
    last: dict[str, Any] = {}
    for level, name in LEVELS.items():
        runs = []
        for _ in range(repeat):
            with trio.fail_after(SESSION_TIMEOUT_S):
                runs.append(await _one_run(open_link, level, n_tokens))
        r0 = runs[0]
        ticks = statistics.median(r["ticks"] for r in runs)
        seconds = ticks / r0["tick_hz"]
        row: dict[str, Any] = {"generated": r0["generated"], "frames": r0["frames"],
                               "run_s": seconds,
                               "tokens_per_s": r0["generated"] / seconds if seconds else None}
        if icount:
            instructions = round(ticks * 1e9 / r0["tick_hz"])
            row["instructions"] = instructions
            row["instructions_per_token"] = round(instructions / max(r0["forwards"], 1))
            cost = float(instructions)
        else:
            row["us_per_token"] = seconds * 1e6 / max(r0["forwards"], 1)
            cost = seconds
        if level == 0:
            base = cost
        row["overhead"] = cost / base - 1.0 if base else None
        levels[name] = row
        last = r0
    out = {"platform": r0["platform"], "tick_hz": r0["tick_hz"],
           "clock": "virtual (icount shift=0: 1 instruction = 1 ns)" if icount else
           "host CLOCK_MONOTONIC", "levels": levels}
    if icount and model is not None:
        macs = model_macs(model, last["forwards"])
        out["per_op"] = _per_op(last, levels["off"]["instructions"],
                                levels["spans"]["instructions"], macs)
        out["macs_per_token"] = round(sum(macs.values()))
    return out


def _build(target: str, model: Path | None, root: Path) -> BuildResult:
    variant = "demo" if model is None else model.stem
    return build(target, model, build_dir=root / f"{target}-{variant}")


async def bench(targets: list[str], n_tokens: int, native_repeat: int,
                models: list[Path] | None, root: Path, progress: Callable[[str], None],
                demo: bool = True) -> dict[str, Any]:
    """Every target's figures (or the reason it was skipped)."""
    out: dict[str, Any] = {"tokens": n_tokens, "prompt": list(PROMPT), "engines": {}}
    engines: list[tuple[str, Path | None]] = [("demo", None)] if demo else []
    engines += [(f"llama:{m.name}", m) for m in models or []]
    for engine, path in engines:
        per: dict[str, Any] = {}
        for target in targets:
            t = get_target(target)
            missing = missing_tools(t)
            if missing:
                per[target] = {"skipped": f"{', '.join(missing)} missing; install with "
                                          "`bash scripts/setup-system.sh`"}
                continue
            progress(f"{engine} on {target}")
            try:
                res = _build(target, path, root)
            except ConfigError as exc:
                per[target] = {"skipped": f"build failed: {exc}"}
                continue
            if t.native:
                per[target] = await _measure(_native_opener(res.elf), n_tokens, native_repeat,
                                             icount=False)
            else:
                per[target] = await _measure(_qemu_opener(target, res.elf), n_tokens, 1,
                                             icount=True, model=path)
        out["engines"][engine] = per
    return out


def _table(result: dict[str, Any]) -> str:
    lines = []
    for engine, per in result["engines"].items():
        lines.append(f"engine {engine}, {result['tokens']} tokens")
        for target, r in per.items():
            if "skipped" in r:
                lines.append(f"  {target:10s} skipped: {r['skipped']}")
                continue
            lv = r["levels"]
            if "instructions_per_token" in lv["off"]:
                head = (f"{lv['off']['instructions_per_token']:>9d} instr/token, "
                        f"{lv['off']['tokens_per_s']:8.1f} tok/s virtual")
            else:
                head = (f"{lv['off']['us_per_token']:9.1f} us/token,    "
                        f"{lv['off']['tokens_per_s']:8.1f} tok/s host   ")
            lines.append(f"  {target:10s} {head}  overhead tokens "
                         f"{lv['tokens']['overhead']:+.3%}  spans {lv['spans']['overhead']:+.3%}")
            if "per_op" in r:
                lines.append(f"  {'':10s} {r['macs_per_token']} MACs/token, "
                             f"{lv['off']['instructions_per_token'] / r['macs_per_token']:.2f} "
                             f"instr/MAC; span record {r['per_op']['span_record_instructions']} "
                             f"instr, {r['per_op']['span_overhead_per_event']} per span "
                             "event with the batch frames")
                for op, o in sorted(r["per_op"]["ops"].items(),
                                    key=lambda kv: -kv[1]["instructions_per_token"]):
                    mac = (f"{o['instructions_per_mac']:6.2f} instr/MAC"
                           if "instructions_per_mac" in o else " " * 16)
                    lines.append(f"  {'':10s}   {op:11s} {o['instructions_per_token']:>9d} "
                                 f"instr/token  {mac}  {o['share']:6.1%}")
    return "\n".join(lines)


OP_ORDER = ("QKV", "ATTENTION", "ATTN_OUT", "FFN", "CLASSIFIER")


def markdown(result: dict[str, Any]) -> str:
    """The llama engines' figures as the Markdown tables docs/firmware.md carries."""
    head = ("| model | target | instr./token | instr./MAC | tokens | spans | "
            + " | ".join(f"{op} instr./MAC (share)" for op in OP_ORDER) + " | other |")
    lines = [head, "|" + "---|" * (7 + len(OP_ORDER))]
    for engine, per in result["engines"].items():
        if not engine.startswith("llama:"):
            continue
        for target, r in per.items():
            if "per_op" not in r:
                continue
            lv, ops = r["levels"], r["per_op"]["ops"]
            cells = []
            for op in OP_ORDER:
                o = ops.get(op, {})
                cells.append(f"{o.get('instructions_per_mac', 0):.2f} ({o.get('share', 0):.1%})")
            other = 1.0 - sum(ops.get(op, {}).get("share", 0.0) for op in OP_ORDER)
            tok = lv["off"]["instructions_per_token"]
            lines.append(
                f"| {engine[6:]} | {target} | {tok:,} | {tok / r['macs_per_token']:.2f} | "
                f"{lv['tokens']['overhead']:+.2%} | {lv['spans']['overhead']:+.2%} | "
                + " | ".join(cells) + f" | {other:.1%} |")
    return "\n".join(lines).replace(",", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated per run")
    parser.add_argument("--target", action="append", default=None,
                        help="target (repeatable; default: the QEMU targets and native)")
    parser.add_argument("--native-repeat", type=int, default=5)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo engine")
    parser.add_argument("--markdown", action="store_true",
                        help="print the llama engines' table for docs/firmware.md")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help=".tlm for the llama engine (repeatable: one per bit width)")
    parser.add_argument("--build-root", type=Path, default=None,
                        help="where the benchmark's builds go (default build/bench-firmware)")
    args = parser.parse_args(argv)
    targets = args.target or [*QEMU_TARGETS, "native"]
    root = args.build_root or Path(__file__).resolve().parents[1] / "build" / "bench-firmware"

    def progress(msg: str) -> None:
        if not args.json:
            print(f"... {msg}", file=sys.stderr)

    try:
        result = trio.run(bench, targets, args.tokens, args.native_repeat, args.model, root,
                          progress, not args.no_demo)
    except TinyTelemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["host"] = {"python": platform.python_version(), "machine": platform.machine()}
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.markdown:
        print(markdown(result))
    else:
        print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

