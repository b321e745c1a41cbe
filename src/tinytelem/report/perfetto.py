"""Chrome trace event JSON (opens in ui.perfetto.dev and chrome://tracing).

Mapping (docs/reports.md): one process per trace; thread 1 "device ops" holds the SPAN rows as
complete slices (``ph: "X"``, a LAYER slice around its operators), thread 2 "inference" holds
one slice per run and per phase, thread 3 "tokens" the TOKEN rows as instants (``ph: "i"``);
power and memory are counter tracks (``ph: "C"``); names come from metadata events
(``ph: "M"``). Timestamps are device microseconds since the trace's first run, then shifted
so that none is negative (Perfetto rejects negative timestamps, and power is sampled before the
run starts): ``otherData.run_start_us`` says where the first run begins.

Large traces stay loadable: power is min/max decimated to at most ``max_power_points`` counter
events (two per bucket, in time order), and when there are more than ``max_spans`` spans only
the LAYER spans and the ops outside layers are kept (the process is labelled so).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from tinytelem.protocol.enums import NO_LAYER, Op
from tinytelem.report.data import ReportData, minmax_decimate

__all__ = ["PERFETTO_SCHEMA", "check_nesting", "perfetto_events", "perfetto_json",
           "shift_to_zero"]

TID_OPS, TID_RUNS, TID_TOKENS = 1, 2, 3


def _us(t: float, t0: float) -> float:
    return round((t - t0) * 1e6, 3)


def _op_name(op: int, layer: int) -> str:
    try:
        name = Op(op).name.lower()
    except ValueError:
        name = f"op{op}"
    if op == int(Op.LAYER):
        return f"layer {layer}"
    return name


def _nest(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order slices parent-first and clip children to their parent.

    Span ends are rounded to device ticks, so a child may end a tick after its parent; trace
    viewers then draw it on the wrong row. Clipping by at most that rounding keeps the tree.
    """
    slices.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[dict[str, Any]] = []
    for ev in slices:
        while stack and ev["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
            stack.pop()
        if stack:
            parent_end = stack[-1]["ts"] + stack[-1]["dur"]
            if ev["ts"] + ev["dur"] > parent_end:
                ev["dur"] = round(max(parent_end - ev["ts"], 0.0), 3)
        stack.append(ev)
    return slices


def check_nesting(events: Sequence[dict[str, Any]]) -> list[str]:
    """Problems with the X slices of each (pid, tid): overlaps that are not nesting."""
    problems: list[str] = []
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in events:
        if e.get("ph") == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for key, track in tracks.items():
        stack: list[float] = []
        for e in sorted(track, key=lambda e: (e["ts"], -e["dur"])):
            while stack and e["ts"] >= stack[-1] - 1e-9:
                stack.pop()
            end = e["ts"] + e["dur"]
            if stack and end > stack[-1] + 1e-6:
                problems.append(f"track {key}: {e['name']} at {e['ts']} ends after its parent")
            stack.append(end)
    return problems


def perfetto_events(rd: ReportData, pid: int = 1, *, max_power_points: int = 20_000,
                    max_spans: int = 200_000) -> list[dict[str, Any]]:
    """Trace events of one trace (see module docs for the mapping)."""
    t0 = rd.t0
    ev: list[dict[str, Any]] = []
    spans = rd.data.spans
    reduced = spans.size > max_spans
    if reduced:
        spans = spans[(spans["op"] == int(Op.LAYER)) | (spans["layer"] == NO_LAYER)]
    label = rd.title + (" (op spans reduced to layers)" if reduced else "")
    if rd.detail is not None:
        label += f" ({len(rd.detail.run_ids)} of {rd.detail.runs:,} runs detailed)"

    def meta(name: str, tid: int, value: str) -> None:
        ev.append({"ph": "M", "name": name, "pid": pid, "tid": tid, "args": {"name": value}})

    meta("process_name", 0, label)
    meta("thread_name", TID_OPS, "device ops")
    meta("thread_name", TID_RUNS, "inference")
    meta("thread_name", TID_TOKENS, "tokens")
    slices = []
    for s in spans:
        b, e = float(s["begin_s"]), float(s["end_s"])
        if not (math.isfinite(b) and math.isfinite(e)) or e < b:
            continue
        layer = int(s["layer"])
        slices.append({"ph": "X", "name": _op_name(int(s["op"]), layer), "cat": "op",
                       "pid": pid, "tid": TID_OPS, "ts": _us(b, t0),
                       "dur": round((e - b) * 1e6, 3),
                       "args": {"layer": None if layer == NO_LAYER else layer,
                                "run_id": int(s["run_id"])}})
    ev.extend(_nest(slices))
    runs_sl = []
    tok = rd.data.tokens
    for r in rd.data.runs:
        b, e = float(r["begin_s"]), float(r["end_s"])
        if not (math.isfinite(b) and math.isfinite(e)):
            continue
        rid = int(r["run_id"])
        runs_sl.append({"ph": "X", "name": f"run {rid}", "cat": "run", "pid": pid,
                        "tid": TID_RUNS, "ts": _us(b, t0), "dur": round((e - b) * 1e6, 3),
                        "args": {"prompt": int(r["n_prompt"]),
                                 "generated": int(r["n_generated"]),
                                 "status": int(r["status"])}})
        pre = tok["device_s"][(tok["run_id"] == rid) & (tok["phase"] == 0)]
        split = min(max(float(pre.max()), b), e) if pre.size else b
        for name, x0, x1 in (("prefill", b, split), ("decode", split, e)):
            if x1 > x0:
                runs_sl.append({"ph": "X", "name": name, "cat": "phase", "pid": pid,
                                "tid": TID_RUNS, "ts": _us(x0, t0),
                                "dur": round((x1 - x0) * 1e6, 3), "args": {"run_id": rid}})
    ev.extend(_nest(runs_sl))
    for t in tok:
        d = float(t["device_s"])
        if math.isfinite(d):
            ev.append({"ph": "i", "s": "t", "name": "decode" if int(t["phase"]) else "prefill",
                       "cat": "token", "pid": pid, "tid": TID_TOKENS, "ts": _us(d, t0),
                       "args": {"index": int(t["index"]), "token_id": int(t["token_id"]),
                                "run_id": int(t["run_id"])}})
    ev.extend(_power_counters(rd, pid, t0, max_power_points))
    for m in rd.data.memory:
        d = float(m["device_s"])
        if math.isfinite(d):
            ev.append({"ph": "C", "name": "memory (bytes)", "pid": pid, "ts": _us(d, t0),
                       "args": {"heap_used": int(m["heap_used"]), "kv": int(m["kv_bytes"])}})
    return ev


def _power_counters(rd: ReportData, pid: int, t0: float, max_points: int) -> list[dict[str, Any]]:
    if rd.power is None or rd.power.size == 0:
        return []
    t, p = rd.power.t_s, rd.power.power_w
    out: list[dict[str, Any]] = []
    if t.size <= max_points:
        pts = list(zip(t.tolist(), p.tolist(), strict=True))
    else:
        d = minmax_decimate(t, p, max_points // 2)
        width = (float(t[-1]) - float(t[0])) / (max_points // 2)
        pts = []
        for a, lo, hi in zip(d.t.tolist(), d.lo.tolist(), d.hi.tolist(), strict=True):
            pts.append((a, lo))
            pts.append((a + width / 2, hi))
    for a, w in pts:
        out.append({"ph": "C", "name": "power (W)", "pid": pid, "ts": _us(a, t0),
                    "args": {"W": round(float(w), 6)}})
    return out


def perfetto_json(reports: Sequence[ReportData], **kwargs: Any) -> dict[str, Any]:
    """The whole Chrome trace document for one or more traces (one process each)."""
    events: list[dict[str, Any]] = []
    for i, rd in enumerate(reports):
        events.extend(perfetto_events(rd, pid=i + 1, **kwargs))
    shift = shift_to_zero(events)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "tinytelem", "timebase": "device microseconds",
                          "run_start_us": shift,
                          "traces": [str(rd.path) for rd in reports]}}


def shift_to_zero(events: Sequence[dict[str, Any]]) -> float:
    """Move the time origin so the earliest ``ts`` is 0 (when any is negative); return the
    shift in microseconds. Every trace moves by the same amount, so first runs stay aligned."""
    earliest = min((float(e["ts"]) for e in events if "ts" in e), default=0.0)
    shift = round(-earliest, 3) if earliest < 0 else 0.0
    if shift:
        for e in events:
            if "ts" in e:
                e["ts"] = max(round(e["ts"] + shift, 3), 0.0)
    return shift


_ID = {"type": "integer", "minimum": 0}
_TS = {"type": "number", "minimum": 0}
_ARGS = {"type": "object"}

PERFETTO_SCHEMA: dict[str, Any] = json.loads(json.dumps({
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "tinytelem.perfetto/1",
    "title": "tinytelem Chrome trace event JSON",
    "type": "object",
    "required": ["traceEvents", "displayTimeUnit"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {"type": "array", "items": {"$ref": "#/$defs/event"}},
    },
    "$defs": {
        "event": {"oneOf": [
            {"$ref": "#/$defs/complete"}, {"$ref": "#/$defs/instant"},
            {"$ref": "#/$defs/counter"}, {"$ref": "#/$defs/metadata"},
        ]},
        "complete": {
            "type": "object", "additionalProperties": False,
            "required": ["ph", "name", "cat", "pid", "tid", "ts", "dur"],
            "properties": {"ph": {"const": "X"}, "name": {"type": "string"},
                           "cat": {"type": "string"}, "pid": _ID, "tid": _ID, "ts": _TS,
                           "dur": {"type": "number", "minimum": 0}, "args": _ARGS},
        },
        "instant": {
            "type": "object", "additionalProperties": False,
            "required": ["ph", "name", "pid", "tid", "ts", "s"],
            "properties": {"ph": {"const": "i"}, "name": {"type": "string"},
                           "cat": {"type": "string"}, "pid": _ID, "tid": _ID, "ts": _TS,
                           "s": {"enum": ["t", "p", "g"]}, "args": _ARGS},
        },
        "counter": {
            "type": "object", "additionalProperties": False,
            "required": ["ph", "name", "pid", "ts", "args"],
            "properties": {"ph": {"const": "C"}, "name": {"type": "string"}, "pid": _ID,
                           "ts": _TS, "args": {"type": "object", "minProperties": 1,
                                               "additionalProperties": {"type": "number"}}},
        },
        "metadata": {
            "type": "object", "additionalProperties": False,
            "required": ["ph", "name", "pid", "args"],
            "properties": {"ph": {"const": "M"},
                           "name": {"enum": ["process_name", "thread_name",
                                             "process_sort_index", "thread_sort_index"]},
                           "pid": _ID, "tid": _ID,
                           "args": {"type": "object", "required": ["name"]}},
        },
    },
}))
"""JSON Schema (draft 2020-12 subset) of what :func:`perfetto_json` writes."""


