"""Quantize/dequantize throughput of our GGML block quantizers against gguf-py, same run.

Run: ``python bench/kquants.py [--rows 256] [--cols 4096] [--repeat 3] [--json]``.

For Q4_0 and Q8_0 both sides quantize and dequantize (and the bytes must be identical); gguf-py
has no Q2_K/Q3_K/Q4_K quantizer, so for those its column is dequantization only (of our bytes).
Figures are millions of weights per second, best of ``--repeat`` runs, one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinytelem.models import kquants
from tinytelem.models.evaluate import blas_single_thread

TYPES = ("q4_0", "q8_0", "q2_k", "q3_k", "q4_k")


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(rows: int, cols: int, repeat: int) -> list[dict[str, Any]]:
    import gguf

    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    n = x.size / 1e6
    results = []
    for t in TYPES:
        gt = getattr(gguf.GGMLQuantizationType, t.upper())
        tq, packed = _best(lambda t=t: kquants.quantize(x, t), repeat)
        td, deq = _best(lambda t=t, p=packed: kquants.dequantize(p, t), repeat)
        row: dict[str, Any] = {
            "type": t, "weights": x.size,
            "ours_quantize_mw_s": round(n / tq, 2), "ours_dequantize_mw_s": round(n / td, 2),
            "rmse": float(np.sqrt(((deq - x) ** 2).mean())),
        }
        gd, gdeq = _best(lambda gt=gt, p=packed: gguf.quants.dequantize(p, gt), repeat)
        row["gguf_dequantize_mw_s"] = round(n / gd, 2)
        row["dequantize_identical"] = bool(np.array_equal(gdeq, deq))
        if t in ("q4_0", "q8_0"):
            gq, gpacked = _best(lambda gt=gt: gguf.quants.quantize(x, gt), repeat)
            row["gguf_quantize_mw_s"] = round(n / gq, 2)
            row["quantize_ratio_ours_over_gguf"] = round(gq / tq, 2)
            row["bytes_identical"] = bool(np.array_equal(gpacked, packed))
        results.append(row)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON document")
    args = ap.parse_args()
    with blas_single_thread():
        res = run(args.rows, args.cols, args.repeat)
    if args.json:
        print(json.dumps({"benchmark": "kquants", "rows": args.rows, "cols": args.cols,
                          "results": res}, indent=2))
        return
    print(f"{'type':<6} {'ours q MW/s':>11} {'gguf q':>8} {'ours dq':>8} {'gguf dq':>8} "
          f"{'rmse':>7}  identical")
    for r in res:
        print(f"{r['type']:<6} {r['ours_quantize_mw_s']:>11} "
              f"{r.get('gguf_quantize_mw_s', '-'):>8} {r['ours_dequantize_mw_s']:>8} "
              f"{r['gguf_dequantize_mw_s']:>8} {r['rmse']:>7.4f}  "
              f"{r.get('bytes_identical', r['dequantize_identical'])}")


if __name__ == "__main__":
    main()
