"""Benchmark of the group-wise quantizer and the integer inference engine; prints JSON.

Usage::

    python bench/quant.py [--json] [--repeat 3] [--tokens 64]

Measures, in one run:

* ``quantize``: throughput in MB of float32 weights per second for ``rtn`` and ``search`` at
  2/3/4/8 bits (symmetric and asymmetric, group 32) on a 1M-parameter synthetic set of
  matrices (median of ``--repeat``);
* ``inference`` (needs ../shared/models/stories260K.bin, skipped otherwise): ms/token of the
  float32 reference and of the integer engine (8- and 4-bit), same prompt, same run;
* ``accuracy`` (same model): per bit width, greedy tokens identical to fp32 before the first
  divergence, teacher-forced top-1 agreement over the fp32 greedy sequence, and model size --
  the table in docs/quantization.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.models import qinfer, reference
from tinytelem.models.llama2c import LlamaModel, load_checkpoint
from tinytelem.models.qtensor import quantize_matrix
from tinytelem.models.quant import quantize_model
from tinytelem.models.tlm import serialize_tlm
from tinytelem.models.tokenizer import load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
PROMPT = "Once upon a time"


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_quantize(repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((512, 256)) * 0.05).astype(np.float32) for _ in range(8)]
    mb = sum(m.nbytes for m in mats) / 1e6
    out: dict[str, Any] = {"weights_mb": round(mb, 3)}
    for method in ("rtn", "search"):
        for bits in (2, 3, 4, 8):
            for sym in (True, False):
                def run(b: int = bits, s: bool = sym, me: str = method) -> None:
                    for m in mats:
                        quantize_matrix(m, b, 32, s, me)  # type: ignore[arg-type]

                key = f"{method}_q{bits}_{'sym' if sym else 'asym'}"
                out[key + "_mb_s"] = round(mb / _median(run, repeat), 2)
    return out


def _ms_per_token(step: Callable[[int, int], object], ids: list[int]) -> float:
    t = time.perf_counter()
    for pos, tok in enumerate(ids):
        step(tok, pos)
    return 1000 * (time.perf_counter() - t) / len(ids)


def bench_inference(model: LlamaModel, ids: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"tokens": len(ids)}
    out["fp32_reference_ms_per_token"] = round(
        _ms_per_token(reference.Transformer(model).forward, ids), 4)
    for bits in (8, 4):
        qt = qinfer.QTransformer(quantize_model(model, bits, 32))
        out[f"integer_q{bits}_ms_per_token"] = round(_ms_per_token(qt.forward, ids), 4)
    out["integer_over_fp32"] = round(out["integer_q4_ms_per_token"]
                                     / out["fp32_reference_ms_per_token"], 2)
    return out


def bench_accuracy(model: LlamaModel, ref_ids: list[int], prompt: list[int]
                   ) -> list[dict[str, Any]]:
    rows = []
    ref = reference.Transformer(model)
    ref_top = [int(np.argmax(ref.forward(t, p))) for p, t in enumerate(ref_ids[:-1])]
    for bits in (8, 4, 3, 2):
        for method in ("rtn", "search"):
            group = 64 if bits == 8 else 32
            qm = quantize_model(model, bits, group, method=method)  # type: ignore[arg-type]
            qt = qinfer.QTransformer(qm)
            top = [int(np.argmax(qt.forward(t, p))) for p, t in enumerate(ref_ids[:-1])]
            gen = qinfer.generate(qm, prompt, len(ref_ids) - 1)
            prefix = next((i for i, (a, b) in enumerate(zip(ref_ids, gen, strict=False))
                           if a != b), min(len(gen), len(ref_ids)))
            rows.append({
                "bits": bits, "group": group, "method": method,
                "teacher_forced_top1": round(sum(a == b for a, b in zip(ref_top, top,
                                                                         strict=True))
                                             / len(ref_top), 3),
                "greedy_identical_prefix": prefix - len(prompt),
                "generated": len(ref_ids) - len(prompt),
                "tlm_bytes": len(serialize_tlm(qm)),
                "bits_per_weight": round(qm.bits_per_weight(), 3),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="JSON only (the default prints "
                        "JSON too, indented)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    result: dict[str, Any] = {"quantize": bench_quantize(args.repeat)}
    model_path, tok_path = SHARED / "stories260K.bin", SHARED / "tok512.bin"
    if model_path.is_file() and tok_path.is_file():
        model = load_checkpoint(model_path)
        prompt = load_tokenizer(tok_path).encode(PROMPT)
        ref_ids = reference.generate(model, prompt, args.tokens)
        result["inference"] = bench_inference(model, ref_ids)
        result["accuracy"] = bench_accuracy(model, ref_ids, prompt)
        result["fp32_bytes"] = model_path.stat().st_size
    else:
        result["inference"] = result["accuracy"] = f"skipped: {model_path} not found"
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
