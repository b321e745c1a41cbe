"""Runs side by side: latency, throughput, memory, energy and accuracy, best value marked.

Each input is a trace (``.h5``), a ``summary.json``, a directory written by ``tinytelem
profile`` (holding both), or a fleet's directory (analysis/fleet.py): a lab's (``record`` or
``profile --session``: every device's trace) or a collector's (every run summary collected
over MQTT); rows then say whose run they are (host and device). Accuracy comes from
evaluation results (``--eval``), matched to runs by model name or SHA-256 prefix and, when
given, by weight width. Two shapes are accepted (docs/reports.md): the output of ``tinytelem
model eval --json`` as it is::

    {"reference": "stories260K.bin", "results": [{"label": "4-bit g32", "ppl": 5.93,
     "top1": 0.82, "kld_mean": 0.11, "bits_per_weight": 5.19, ...}]}

and a hand-written one (a bare list of its objects, or one object, is accepted too)::

    {"results": [{"model": "stories260K", "weight_bits": 4, "perplexity": 9.8,
                  "accuracy": 0.41}]}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinytelem.analysis.fleet import FleetRun, fleet_runs
from tinytelem.errors import ConfigError, TraceError

__all__ = ["METRICS", "Comparison", "Metric", "compare_runs", "load_eval", "load_run_summary"]


@dataclass(frozen=True)
class Metric:
    """A compared figure: its key, column label, unit and which direction is better."""

    key: str
    label: str
    unit: str
    better: str  # "min" or "max"


METRICS: tuple[Metric, ...] = (
    Metric("ttft_s", "TTFT", "s", "min"),
    Metric("itl_p50_s", "ITL p50", "s", "min"),
    Metric("itl_p99_s", "ITL p99", "s", "min"),
    Metric("decode_tok_s", "decode", "tok/s", "max"),
    Metric("ram_bytes", "RAM", "B", "min"),
    Metric("flash_bytes", "flash", "B", "min"),
    Metric("energy_per_token_j", "energy/token", "J", "min"),
    Metric("avg_w", "avg power", "W", "min"),
    Metric("accuracy", "accuracy", "", "max"),
    Metric("perplexity", "perplexity", "", "min"),
    Metric("top1", "top-1 agreement", "", "max"),
    Metric("kld_mean", "KLD mean", "", "min"),
)
EVAL_KEYS = ("accuracy", "perplexity", "top1", "kld_mean")
"""What an evaluation result adds to a run (top-1 agreement and KLD are against the float
reference of ``model eval``, not against ground truth)."""


@dataclass(frozen=True)
class Comparison:
    """Rows (one per run) and, per metric key, the index of the best row (or None)."""

    rows: tuple[dict[str, Any], ...]
    best: dict[str, int | None]
    metrics: tuple[Metric, ...] = field(default=METRICS)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: rows, and the label of the best run per metric."""
        return {
            "schema": "tinytelem.compare/1",
            "metrics": [m.__dict__ for m in self.metrics],
            "rows": list(self.rows),
            "best": {k: (self.rows[i]["label"] if i is not None else None)
                     for k, i in self.best.items()},
        }


def _weights_bytes(attrs: Mapping[str, Any]) -> int | None:
    from tinytelem.analysis.bottleneck import model_config_of, weight_bits_of

    config, bits = model_config_of(attrs), weight_bits_of(attrs)
    if config is None or bits is None:
        return None
    c = config
    kv_dim = c.dim * c.n_kv_heads // c.n_heads
    per_layer = 2 * c.dim * c.dim + 2 * c.dim * kv_dim + 3 * c.dim * c.hidden_dim
    params = c.vocab_size * c.dim + c.n_layers * per_layer
    if not c.shared_classifier:
        params += c.vocab_size * c.dim
    return math.ceil(params * bits / 8) + (2 * c.n_layers + 1) * c.dim * 4


def load_run_summary(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, trace root attrs) of a trace, a summary.json or a profile directory."""
    p = Path(path)
    trace = summary_file = None
    if p.is_dir():
        trace = p / "trace.h5" if (p / "trace.h5").is_file() else None
        summary_file = p / "summary.json" if (p / "summary.json").is_file() else None
        if trace is None and summary_file is None:
            raise ConfigError(f"{p} holds neither trace.h5 nor summary.json; pass a run directory "
                              "written by 'tinytelem profile', a lab's --out (lab.json), a "
                              "'collect --out' directory, a trace or a summary file")
    elif p.suffix == ".json":
        summary_file = p
    else:
        trace = p
    attrs: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    if trace is not None:
        from tinytelem.trace.reader import open_trace

        with open_trace(trace) as tr:
            attrs = dict(tr.attrs)
            summary = tr.summary
    if summary_file is not None:
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TraceError(f"cannot read summary {summary_file}: {exc}") from exc
    elif not summary and trace is not None:
        from tinytelem.analysis.loader import summary_of_trace

        summary = summary_of_trace(trace)
    if summary.get("schema") != "tinytelem.summary/1":
        raise TraceError(f"{path} is not a tinytelem summary (schema tinytelem.summary/1)")
    return summary, attrs


_BITS_LABEL = re.compile(r"^(\d+)-bit\b")


def _from_model_eval(item: Mapping[str, Any], reference: str) -> dict[str, Any]:
    """One result of ``model eval --json`` in the shape compare matches on.

    A ``--bits`` row ("4-bit g32") is the reference model quantized on the fly: its model is
    the reference's file stem. A file row ("q4.tlm") is that file's stem; its weight width is
    known only when every weight has the same width (32 for a float checkpoint).
    """
    label = str(item["label"])
    match = _BITS_LABEL.match(label)
    bits: int | None
    if match:
        model, bits = Path(reference).stem, int(match.group(1))
    else:
        bpw = item.get("bits_per_weight")
        model = Path(label).stem
        bits = int(bpw) if isinstance(bpw, int | float) and float(bpw).is_integer() else None
    return {"model": model, "weight_bits": bits, "perplexity": item.get("ppl"),
            "top1": item.get("top1"), "kld_mean": item.get("kld_mean"), "label": label}


def load_eval(path: str | Path) -> list[dict[str, Any]]:
    """Evaluation results: list of {model, weight_bits?, accuracy?, perplexity?, top1?,
    kld_mean?}, from ``model eval --json`` output or the hand-written shape."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read eval results {path}: {exc}") from exc
    items = doc.get("results", [doc]) if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and isinstance(items, list) and items and all(
            isinstance(x, dict) and "label" in x and "ppl" in x for x in items):
        return [_from_model_eval(x, str(doc.get("reference", ""))) for x in items]
    if not isinstance(items, list) or not all(isinstance(x, dict) and "model" in x
                                              for x in items):
        raise ConfigError(f"{path}: eval results must be the output of `tinytelem model eval "
                          "--json`, or {'results': [{'model': ..., 'weight_bits': 4, "
                          "'accuracy': 0.4, 'perplexity': 9.8}]}")
    return items


def _eval_for(row: Mapping[str, Any], evals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The result for a run: same model, same weight width; one of unknown width only when
    no result has the run's width."""
    loose: dict[str, Any] = {}
    for e in evals:
        m = str(e["model"]).lower()
        names = {str(row.get("model") or "").lower()}
        sha = str(row.get("model_sha256") or "").lower()
        if m not in names and not (len(m) >= 8 and sha.startswith(m)):
            continue
        bits, run_bits = e.get("weight_bits"), row.get("weight_bits")
        if bits is None or run_bits is None:
            loose = loose or {k: e.get(k) for k in EVAL_KEYS}
            continue
        if int(bits) == int(run_bits):
            return {k: e.get(k) for k in EVAL_KEYS}
    return loose


def _row(run: FleetRun, summary: Mapping[str, Any], attrs: Mapping[str, Any]) -> dict[str, Any]:
    lat, mem, pw = summary["latency"], summary["memory"], summary["power"]
    heap, stack = mem.get("peak_heap_bytes"), mem.get("stack_peak_bytes")
    bits = attrs.get("weight_bits")
    model = summary["model"].get("name")
    who = "/".join(x for x in (run.host, run.device) if x)
    label = " · ".join(str(x) for x in (who, summary.get("platform"), model,
                                        f"{bits}-bit" if bits else None) if x)
    return {
        "label": label, "path": str(run.path), "host": run.host, "device": run.device,
        "platform": summary.get("platform"),
        "model": model, "model_sha256": summary["model"].get("sha256"),
        "weight_bits": int(bits) if bits else None,
        "ttft_s": lat.get("ttft_s"), "itl_p50_s": lat["itl_s"].get("p50"),
        "itl_p99_s": lat["itl_s"].get("p99"), "decode_tok_s": lat.get("decode_tok_s"),
        "ram_bytes": heap + stack if heap is not None and stack is not None else heap,
        "flash_bytes": _weights_bytes(attrs),
        "energy_per_token_j": pw.get("energy_per_token_j"), "avg_w": pw.get("avg_w"),
        **dict.fromkeys(EVAL_KEYS),
    }


def compare_runs(paths: Sequence[str | Path], evals: Sequence[Mapping[str, Any]] = ()
                 ) -> Comparison:
    """Load every run (a fleet's directory stands for its runs) and find the best value per
    metric."""
    rows = []
    for run in fleet_runs(paths):
        summary, attrs = load_run_summary(run.path)
        row = _row(run, summary, attrs)
        row.update({k: v for k, v in _eval_for(row, evals).items() if v is not None})
        rows.append(row)
    labels = [r["label"] for r in rows]
    for i, r in enumerate(rows):  # make labels unique so tables and charts can name rows
        if labels.count(r["label"]) > 1:
            r["label"] = f"{r['label']} #{i + 1}"
    best: dict[str, int | None] = {}
    for m in METRICS:
        vals = [(i, r[m.key]) for i, r in enumerate(rows) if isinstance(r[m.key], int | float)]
        if len(vals) < 1:
            best[m.key] = None
            continue
        pick = min if m.better == "min" else max
        best[m.key] = pick(vals, key=lambda iv: iv[1])[0]
    return Comparison(tuple(rows), best)
