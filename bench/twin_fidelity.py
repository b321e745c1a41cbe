"""How true are the twin's predictions? Published boards and our own firmware under QEMU.

Usage::

    python bench/twin_fidelity.py [--quick] [--json] [--limit 2.0]
                                  [--raw build/calibration/raw]

1. **Published boards** (``calibration/published.toml``): predicted vs published decode tok/s
   with their ratio; points a platform's efficiency factor was fitted to are marked ``fitted``
   and get the leave-one-out prediction (the factor refitted without the point).
2. **QEMU** (``calibration/engine.json``): for every ISA family, shape and bit width the
   calibration measured, predicted instructions per forward pass vs the measurement. With the
   raw span measurements (``--raw``, written by ``tinytelem firmware calibrate``) each shape is
   also predicted by a fit that never saw it (leave-one-shape-out).

Exit status 1 when a published ratio (or leave-one-out ratio) is beyond ``--limit`` (default
2.0; the goal is 1.5) or a QEMU prediction is off by more than 10%. ``--quick`` skips the
leave-one-shape-out refits (what CI runs, through tests/costing/test_fidelity.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinytelem.costing.calibration import (
    EngineCalibration,
    calibration_path,
    load_calibration,
    run_instructions,
)
from tinytelem.costing.features import WeightBits
from tinytelem.costing.fidelity import fidelity, load_points
from tinytelem.costing.measure import SHAPES, fit_family
from tinytelem.platforms import all_platforms

QEMU_LIMIT = 0.10


def fitted_from() -> dict[str, list[str]]:
    """Platform -> published point ids its efficiency factor was fitted to (platform files)."""
    out: dict[str, list[str]] = {}
    for p in all_platforms():
        src = p.sources.get("efficiency", "")
        if src.startswith("fitted"):
            out[p.name] = [w.strip(" ,;.") for w in src.split() if w.count("-") >= 2]
    return out


def published(limit: float) -> tuple[list[dict[str, Any]], bool]:
    rows = fidelity(load_points(), fitted_from())
    out, ok = [], True
    for r in rows:
        bad = r.worst_ratio > limit
        ok &= not bad
        out.append({"id": r.point.id, "platform": r.point.platform, "model": r.point.model,
                    "precision": r.point.precision, "weights": r.placement,
                    "published_tok_s": r.point.tok_s, "predicted_tok_s": r.predicted_tok_s,
                    "ratio": r.ratio, "fitted": r.fitted, "loo_tok_s": r.loo_tok_s,
                    "loo_ratio": r.loo_ratio, "loo_unfitted": r.loo_unfitted,
                    "within_limit": not bad,
                    "source": r.point.source})
    return out, ok


def band(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """true / predicted over every published point and leave-one-out prediction."""
    factors = [1.0 / r["ratio"] for r in rows] + [1.0 / r["loo_ratio"] for r in rows
                                                   if r["loo_ratio"]]
    return {"low": round(min(factors), 3), "high": round(max(factors), 3),
            "points": len(rows), "meaning": "true/predicted tok/s on the published boards, "
                                            "incl. leave-one-out predictions"}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The published table for docs/platforms.md."""
    points = {p.id: p for p in load_points()}
    out = ["| point | board, clock | weights in | model, precision | engine | published tok/s "
           "| predicted tok/s | ratio | leave-one-out (ratio) | source |",
           "|---|---|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        p = points[r["id"]]
        prec = "fp32" if p.precision == 32 else f"int{p.precision}"
        loo = "-"
        if r["loo_tok_s"]:
            loo = f"{r['loo_tok_s']:.3g} ({r['loo_ratio']:.2f})"
            loo += ", unfitted" if r["loo_unfitted"] else ""
        fitted = " (fitted)" if r["fitted"] else ""
        out.append(f"| `{p.id}` | {p.board}, {p.clock_hz / 1e6:.0f} MHz | {p.weights_in} | "
                   f"{p.model}, {prec} | {p.engine} | {p.tok_s:.3g} | "
                   f"{r['predicted_tok_s']:.3g} | {r['ratio']:.2f}{fitted} | {loo} | "
                   f"{p.source} |")
    return "\n".join(out)


def _predict(cal: EngineCalibration, m: dict[str, Any]) -> float:
    return run_instructions(cal, SHAPES[m["shape"]], WeightBits.uniform(m["bits"]),
                            m["forwards"], m["samples"]) / max(m["forwards"], 1)


def qemu(raw: Path | None, quick: bool) -> tuple[list[dict[str, Any]], bool]:
    doc = json.loads(calibration_path().read_text())
    out, ok = [], True
    raws: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if raw is not None and raw.is_dir() and not quick:
        for f in sorted(raw.glob("*.json")):
            m = json.loads(f.read_text())
            raws[m["family"]].append(m)
    for fam, f in doc["families"].items():
        cal = load_calibration(fam)
        for m in f["measurements"]:
            meas = m["instructions"]["0"] / max(m["forwards"], 1)
            pred = _predict(cal, m)
            row: dict[str, Any] = {"family": fam, "shape": m["shape"], "bits": m["bits"],
                                   "measured": meas, "predicted": pred,
                                   "error": pred / meas - 1.0}
            held = [x for x in raws.get(fam, []) if x["shape"] != m["shape"]]
            if held:
                fit = fit_family(held)
                loso = EngineCalibration(fam, "", "", fit["ops"], fit["frame"], fit["residual"],
                                         tuple(fit["bits"]))
                row["loso_predicted"] = _predict(loso, m)
                row["loso_error"] = row["loso_predicted"] / meas - 1.0
            bad = abs(row["error"]) > QEMU_LIMIT or abs(row.get("loso_error", 0)) > QEMU_LIMIT
            row["within_limit"] = not bad
            ok &= not bad
            out.append(row)
    return out, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip leave-one-shape-out refits")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--limit", type=float, default=2.0, help="largest allowed factor")
    ap.add_argument("--raw", type=Path, default=Path("build/calibration/raw"))
    ap.add_argument("--markdown", action="store_true",
                    help="print the published table as Markdown (for docs/platforms.md)")
    ap.add_argument("--write", action="store_true",
                    help="write the uncertainty band to calibration/fidelity.json")
    a = ap.parse_args(argv)
    pub, ok_pub = published(a.limit)
    if a.write:
        path = calibration_path().with_name("fidelity.json")
        path.write_text(json.dumps({"band": band(pub), "generated_by": "bench/twin_fidelity.py"},
                                   indent=1, sort_keys=True) + "\n")
    if a.markdown:
        print(markdown(pub))
        return 0 if ok_pub else 1
    q, ok_q = qemu(a.raw, a.quick)
    if a.json:
        print(json.dumps({"published": pub, "qemu": q, "ok": ok_pub and ok_q}, indent=1))
    else:
        print("published boards: predicted vs published decode tok/s")
        print(f"{'point':28s} {'weights':7s} {'published':>9s} {'predicted':>9s} {'ratio':>6s}"
              f" {'LOO pred':>9s} {'LOO ratio':>9s}")
        for r in pub:
            loo = (f"{r['loo_tok_s']:9.2f} {r['loo_ratio']:9.2f}" if r["loo_tok_s"]
                   else f"{'-':>9s} {'-':>9s}")
            mark = (" fitted" + (" (LOO = unfitted: no other point)" if r["loo_unfitted"]
                                 else "")) if r["fitted"] else ""
            print(f"{r['id']:28s} {r['weights']:7s} {r['published_tok_s']:9.2f} "
                  f"{r['predicted_tok_s']:9.2f} {r['ratio']:6.2f} {loo}{mark}")
        print("\nQEMU: predicted vs measured instructions per forward pass (trace level off)")
        worst = max(abs(r["error"]) for r in q)
        worst_loso = max((abs(r["loso_error"]) for r in q if "loso_error" in r), default=None)
        for r in q:
            loso = f"  held-out shape {r['loso_error']:+.1%}" if "loso_error" in r else ""
            print(f"  {r['family']:14s} {r['shape']:5s} {r['bits']:2d}-bit "
                  f"{r['measured'] / 1e6:8.3f} M  {r['error']:+.2%}{loso}")
        print(f"worst QEMU error {worst:.2%}"
              + (f", held-out shape {worst_loso:.2%}" if worst_loso is not None else ""))
    return 0 if ok_pub and ok_q else 1


if __name__ == "__main__":
    sys.exit(main())
