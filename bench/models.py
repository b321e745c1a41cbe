"""The generated ~8 M-parameter model end to end: build, quantize, export, run; prints JSON.

Run: ``python bench/models.py [--json] [--shape 8m] [--tokens 256] [--int-tokens 64]``.

Measures, in one run, on ``builtin_model(0, shape)`` (8m: dim 256, hidden 768, 8 layers,
8 heads, 4 KV heads, vocab 4096, 7.34 M parameters):

* ``build``: seconds to generate the model and its fp32 size;
* ``quantize``: seconds to quantize to 8- and 4-bit groups of 32 (``quantize_model``);
* ``export``: seconds and bytes to write ``.tlm`` (8 and 4 bit) and GGUF (Q8_0, Q4_0, Q4_K),
  and to read each file back;
* ``eval``: tokens/s of the float32 reference (one token at a time, run.c's loop), of the
  batched float forward ``model eval`` uses, and of the integer engine (int8 activations,
  the firmware's arithmetic) on ``--int-tokens`` tokens;
* ``q4_0_vs_gguf``: our Q4_0 quantizer and gguf-py's ``gguf.quants.quantize`` on the same
  matrices (every matrix of the model), best of ``--repeat``; the ratio and whether the bytes
  are identical (the run fails if they are not).

Everything runs with one BLAS thread (``blas_single_thread``) so figures compare across
machines with different core counts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tinytelem.models import kquants, qinfer, reference
from tinytelem.models.evaluate import blas_single_thread, forward_sequence
from tinytelem.models.gguf_io import read_gguf, tensor_items, write_gguf
from tinytelem.models.llama2c import builtin_model
from tinytelem.models.quant import quantize_model
from tinytelem.models.tlm import read_tlm, write_tlm

T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    best, out = float("inf"), None
    for _ in range(repeat):
        dt, out = _timed(fn)
        best = min(best, dt)
    return best, out  # type: ignore[return-value]


def run(shape: str, tokens: int, int_tokens: int, repeat: int, workdir: Path) -> dict[str, Any]:
    import gguf

    res: dict[str, Any] = {"shape": shape}
    dt, model = _timed(lambda: builtin_model(0, shape))
    c = model.config
    params = sum(int(a.size) for k, a in vars(model.weights).items() if k != "wcls")
    res["config"] = {k: getattr(c, k) for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                                 "n_kv_heads", "vocab_size", "seq_len")}
    res["build"] = {"seconds": round(dt, 3), "params": params, "fp32_bytes": 4 * params}

    quant: dict[str, Any] = {}
    qmodels = {}
    for bits in (8, 4):
        dt, qm = _timed(lambda b=bits: quantize_model(model, b, 32))
        qmodels[bits] = qm
        quant[f"q{bits}_g32_seconds"] = round(dt, 3)
        quant[f"q{bits}_g32_bits_per_weight"] = round(qm.bits_per_weight(), 3)
    res["quantize"] = quant

    export: dict[str, Any] = {}
    for bits, qm in qmodels.items():
        path = workdir / f"m{bits}.tlm"
        dt, size = _timed(lambda q=qm, p=path: write_tlm(q, p))
        rt, _ = _timed(lambda p=path: read_tlm(p))
        export[f"tlm_q{bits}"] = {"write_s": round(dt, 3), "read_s": round(rt, 3),
                                  "bytes": size}
    for qtype in ("q8_0", "q4_0", "q4_k"):
        path = workdir / f"m-{qtype}.gguf"
        dt, _ = _timed(lambda t=qtype, p=path: write_gguf(model, p, t))
        rt, _ = _timed(lambda p=path: read_gguf(p))
        export[f"gguf_{qtype}"] = {"write_s": round(dt, 3), "read_s": round(rt, 3),
                                   "bytes": path.stat().st_size}
    res["export"] = export

    ids = [1] + [3 + (i * 37) % 256 for i in range(tokens - 1)]
    step = reference.Transformer(model)
    dt, _ = _timed(lambda: [step.forward(t, p) for p, t in enumerate(ids)])
    ev: dict[str, Any] = {"tokens": tokens, "fp32_reference_tok_s": round(tokens / dt, 1)}
    dt, _ = _timed(lambda: forward_sequence(model, ids))
    ev["fp32_batched_tok_s"] = round(tokens / dt, 1)
    for bits, qm in qmodels.items():
        qt = qinfer.QTransformer(qm)
        sub = ids[:int_tokens]
        dt, _ = _timed(lambda q=qt, s=sub: [q.forward(t, p) for p, t in enumerate(s)])
        ev[f"integer_q{bits}_tok_s"] = round(len(sub) / dt, 1)
    ev["integer_tokens"] = min(int_tokens, tokens)
    res["eval"] = ev

    mats = [a for a in tensor_items(model).values() if a.ndim == 2]
    n = sum(a.size for a in mats)
    ours_t, ours = _best(lambda: [kquants.quantize(a, "q4_0") for a in mats], repeat)
    theirs_t, theirs = _best(
        lambda: [gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0) for a in mats],
        repeat)
    identical = all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    res["q4_0_vs_gguf"] = {
        "tensors": len(mats), "weights": int(n),
        "ours_s": round(ours_t, 4), "gguf_s": round(theirs_t, 4),
        "ours_mw_s": round(n / 1e6 / ours_t, 2), "gguf_mw_s": round(n / 1e6 / theirs_t, 2),
        "speed_ratio_ours_over_gguf": round(theirs_t / ours_t, 2),
        "bytes_identical": identical,
    }
    if not identical:
        raise SystemExit("Q4_0 bytes differ from gguf-py's: the quantizer is broken")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="8m", choices=("260k", "1m", "8m"))
    ap.add_argument("--tokens", type=int, default=256, help="tokens for the float rates")
    ap.add_argument("--int-tokens", type=int, default=128, help="tokens for the integer engine")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one compact JSON document")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, blas_single_thread():
        res = run(args.shape, args.tokens, args.int_tokens, args.repeat, Path(tmp))
    print(json.dumps({"benchmark": "models", **res}, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
