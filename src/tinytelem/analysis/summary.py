"""The summary JSON contract (``tinytelem.summary/1``): build, validate, render.

The summary is what other tools keep and compare, so its keys are stable and every figure is
a plain float or int, or None when the trace cannot tell — never NaN or infinity, which strict
JSON cannot hold. docs/summary-format.md is the normative description; keep the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.table import Table

from tinytelem.analysis.clock import ClockFit
from tinytelem.analysis.metrics import RunMetrics, Summary, compute_metrics
from tinytelem.analysis.prediction import band_text, prediction_block
from tinytelem.analysis.rundata import RunData
from tinytelem.errors import TraceError
from tinytelem.units import si

__all__ = ["SUMMARY_SCHEMA", "build_summary", "figure_mark", "render_devices_table", "render_table",
           "validate_summary"]

SUMMARY_SCHEMA = "tinytelem.summary/1"

_NUM = "number"
_INT = "int"
_STR = "str"

# Required keys (dotted paths) and the type each must have; every one may also be None except
# ``schema``.
REQUIRED: dict[str, str] = {
    "schema": _STR,
    "platform": _STR,
    "device": _STR,
    "model.name": _STR,
    "model.sha256": _STR,
    "model.params": _INT,
    "tokens.prompt": _INT,
    "tokens.generated": _INT,
    "latency.ttft_s": _NUM,
    "latency.e2e_s": _NUM,
    "latency.prefill_tok_s": _NUM,
    "latency.decode_tok_s": _NUM,
    "latency.itl_s.mean": _NUM,
    "latency.itl_s.p50": _NUM,
    "latency.itl_s.p90": _NUM,
    "latency.itl_s.p99": _NUM,
    "latency.itl_s.max": _NUM,
    "memory.peak_heap_bytes": _INT,
    "memory.peak_arena_bytes": _INT,
    "memory.kv_bytes": _INT,
    "memory.stack_peak_bytes": _INT,
    "power.avg_w": _NUM,
    "power.energy_j": _NUM,
    "power.energy_per_token_j": _NUM,
    "power.sample_rate_hz": _NUM,
    "power.sensor": _STR,
    "link.frames": _INT,
    "link.crc_errors": _INT,
    "link.gaps": _INT,
    "link.reconnects": _INT,
    "link.dropped_samples": _INT,
}


def _f(x: Any) -> float | None:
    """A JSON-safe float: None for None, NaN and infinities."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _i(x: Any) -> int | None:
    return None if x is None else int(x)


def _s(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, bytes | bytearray | np.bytes_):
        return bytes(x).hex() if any(b > 0x7E or b < 0x20 for b in bytes(x)) else bytes(x).decode()
    return str(x)


def _clock(fit: ClockFit) -> dict[str, Any]:
    return {
        "method": fit.method,
        "offset_s": _f(fit.offset_s),
        "drift_ppm": _f(fit.drift_ppm),
        "residual_s": _f(fit.residual_s),
        "error_bound_s": _f(fit.error_bound_s),
        "n_points": fit.n_points,
    }


def _stats(values: np.ndarray) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, "p50": None, "max": None}
    return {
        "mean": _f(values.mean()),
        "p50": _f(np.percentile(values, 50)),
        "max": _f(values.max()),
    }


def _run_entry(r: RunMetrics) -> dict[str, Any]:
    e = r.energy
    return {
        "run_id": r.run_id,
        "status": r.status,
        "complete": r.complete,
        "prompt": r.n_prompt,
        "generated": r.n_generated,
        "ttft_s": _f(r.ttft_s),
        "prefill_s": _f(r.prefill_s),
        "e2e_s": _f(r.e2e_s),
        "prefill_tok_s": _f(r.prefill_tok_s),
        "decode_tok_s": _f(r.decode_tok_s),
        "energy_j": _f(e.energy_j) if e is not None and e.covered_s > 0 else None,
        "coverage": _f(e.covered_s / e.window_s) if e is not None and e.window_s > 0 else None,
    }


def build_summary(source: Summary | RunData, run_id: int | None = None) -> dict[str, Any]:
    """The summary dict of a run (contract ``tinytelem.summary/1``).

    Args:
        source: a :class:`Summary` from :func:`compute_metrics`, or the trace tables (then the
            metrics are computed here, for ``run_id``).
        run_id: only used with :class:`RunData`; see :func:`compute_metrics`.

    Returns:
        A dict that ``json.dumps(..., allow_nan=False)`` accepts and
        :func:`validate_summary` passes.
    """
    s = source if isinstance(source, Summary) else compute_metrics(source, run_id)
    a: Mapping[str, Any] = s.attrs
    p = s.power
    return {
        "schema": SUMMARY_SCHEMA,
        "platform": _s(a.get("platform")),
        "device": _s(a.get("device")),
        "model": {
            "name": _s(a.get("model_name")),
            "sha256": _s(a.get("model_sha256")),
            "params": _i(a.get("model_params")),
        },
        "tokens": {"prompt": s.n_prompt, "generated": s.n_generated},
        "latency": {
            "ttft_s": _f(s.ttft_s),
            "e2e_s": _f(s.e2e_s),
            "prefill_s": _f(s.prefill_s),
            "prefill_tok_s": _f(s.prefill_tok_s),
            "decode_tok_s": _f(s.decode_tok_s),
            "itl_s": {
                "n": s.itl.n,
                "mean": _f(s.itl.mean),
                "p50": _f(s.itl.p50),
                "p90": _f(s.itl.p90),
                "p99": _f(s.itl.p99),
                "max": _f(s.itl.max),
            },
        },
        "memory": {
            "peak_heap_bytes": s.memory.peak_heap_bytes,
            "peak_arena_bytes": s.memory.peak_arena_bytes,
            "kv_bytes": s.memory.kv_bytes,
            "stack_peak_bytes": s.memory.stack_peak_bytes,
        },
        "power": {
            "avg_w": _f(p.avg_w),
            "energy_j": _f(p.energy_j),
            "energy_per_token_j": _f(p.energy_per_token_j),
            "sample_rate_hz": _f(s.power_rate_hz),
            "sensor": _s(a.get("sensor")),
            "coverage": _f(p.coverage),
            "energy_filled_j": _f(p.energy_filled_j),
            "prefill_energy_j": _f(p.prefill_energy_j),
            "decode_energy_j": _f(p.decode_energy_j),
            "per_token_j": _stats(p.per_token_j),
            "idle_w": _f(p.idle_w),
            "energy_above_idle_j": _f(p.energy_above_idle_j),
            "n_samples": p.n_samples,
            "net": _net_energy(s, source if isinstance(source, RunData) else None),
        },
        "link": {
            "frames": s.link.frames,
            "crc_errors": s.link.crc_errors,
            "gaps": s.link.gaps,
            "reconnects": s.link.reconnects,
            "dropped_samples": s.link.dropped_samples,
        },
        "clock": {"device": _clock(s.device_clock), "sensor": _clock(s.sensor_clock)},
        "runs": [_run_entry(r) for r in s.runs],
        "warnings": list(s.warnings),
        "prediction": prediction_block(a, _f(s.itl.mean)),
    }


def _net_energy(s: Summary, data: RunData | None) -> dict[str, Any] | None:
    """Energy net of the idle baseline, with uncertainties (see analysis/energy_spans.py)."""
    if data is None:
        return None
    from tinytelem.analysis.energy_spans import energy_breakdown

    align = sum(x for x in (s.device_clock.error_bound_s, s.sensor_clock.error_bound_s)
                if math.isfinite(x))
    out = energy_breakdown(s.power_trace, data.runs, data.tokens, data.spans, align)
    return None if out is None else _clean(out)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return _f(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _lookup(d: Mapping[str, Any], path: str) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise TraceError(
                f"summary is missing {path!r}; was it written by an older tinytelem? "
                f"Rebuild it with build_summary"
            )
        node = node[part]
    return node


def validate_summary(d: Mapping[str, Any]) -> None:
    """Check that ``d`` holds every required key with the right type.

    Raises:
        TraceError: naming the first missing key, mistyped value, NaN or wrong schema.
    """
    for path, kind in REQUIRED.items():
        value = _lookup(d, path)
        if value is None and path != "schema":
            continue
        if kind == _STR:
            ok = isinstance(value, str)
        elif kind == _INT:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                raise TraceError(f"summary key {path!r} is {value}; use null for unknown values")
        if not ok:
            raise TraceError(
                f"summary key {path!r} should be {kind} or null, got {type(value).__name__}"
            )
    if d["schema"] != SUMMARY_SCHEMA:
        raise TraceError(
            f"summary schema is {d['schema']!r}, expected {SUMMARY_SCHEMA!r}; "
            f"upgrade tinytelem or rebuild the summary"
        )


_fmt = si

TWIN_PREDICTED = frozenset({
    "TTFT", "end-to-end", "prefill", "decode", "ITL mean / p50", "ITL p90 / p99 / max",
    "avg power", "energy", "energy/token", "idle power", "peak heap", "peak arena", "KV cache",
    "stack peak"})
"""The figures of a twin's (``emu:``) run that are its cost model's prediction."""
QEMU_VIRTUAL = frozenset({"TTFT", "end-to-end", "prefill", "decode", "ITL mean / p50",
                          "ITL p90 / p99 / max"})
"""The figures of a ``qemu:`` run timed by the virtual clock."""


def figure_mark(summary: Mapping[str, Any], figure: str) -> str:
    """What a figure (a :func:`render_table` row name) is when it was not measured on a board:
    `` (predicted)`` for the twin, `` (virtual clock)`` under QEMU, else empty."""
    source = (summary.get("prediction") or {}).get("source")
    if source == "twin" and figure in TWIN_PREDICTED:
        return " (predicted)"
    if source == "qemu" and figure in QEMU_VIRTUAL:
        return " (virtual clock)"
    return ""


def render_devices_table(devices: Sequence[tuple[str, Mapping[str, Any] | None, str | None]],
                         title: str = "devices") -> Table:
    """One row per device (id, summary or None, error or None): the headline figures of
    :func:`render_table`, each marked as it marks them (a twin's are predicted)."""
    figures = (("TTFT", "latency", "ttft_s", "s"),
               ("prefill", "latency", "prefill_tok_s", "tok/s"),
               ("decode", "latency", "decode_tok_s", "tok/s"),
               ("energy/token", "power", "energy_per_token_j", "J"),
               ("peak heap", "memory", "peak_heap_bytes", "B"))
    table = Table(title=title)
    table.add_column("device", style="bold")
    table.add_column("platform")
    for name, *_ in figures:
        table.add_column(name, justify="right")
    table.add_column("status")
    for device_id, summary, error in devices:
        if summary is None:
            table.add_row(device_id, "", *[""] * len(figures), f"[red]FAILED[/red]: {error}")
            continue
        values = [(name, summary[group][key], unit) for name, group, key, unit in figures]
        cells = [_fmt(v, unit) + (figure_mark(summary, name) if v is not None else "")
                 for name, v, unit in values]
        table.add_row(device_id, str(summary.get("platform") or ""), *cells,
                      "ok" if error is None else f"[red]FAILED[/red]: {error}")
    return table


def render_table(summary: Mapping[str, Any]) -> Table:
    """A two-column rich table of the headline figures, with units."""
    lat, itl = summary["latency"], summary["latency"]["itl_s"]
    mem, pw, link = summary["memory"], summary["power"], summary["link"]
    cov = pw.get("coverage")
    model = summary["model"]
    title = " · ".join(
        str(x) for x in (summary.get("platform"), model.get("name")) if x is not None
    )
    table = Table(title=title or "run summary", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        (
            "prompt / generated tokens",
            f"{summary['tokens']['prompt']} / {summary['tokens']['generated']}",
        ),
        ("TTFT", _fmt(lat["ttft_s"], "s")),
        ("end-to-end", _fmt(lat["e2e_s"], "s")),
        ("prefill", _fmt(lat["prefill_tok_s"], "tok/s")),
        ("decode", _fmt(lat["decode_tok_s"], "tok/s")),
        ("ITL mean / p50", f"{_fmt(itl['mean'], 's')} / {_fmt(itl['p50'], 's')}"),
        (
            "ITL p90 / p99 / max",
            f"{_fmt(itl['p90'], 's')} / {_fmt(itl['p99'], 's')} / {_fmt(itl['max'], 's')}",
        ),
        ("peak heap", _fmt(mem["peak_heap_bytes"], "B")),
        ("peak arena", _fmt(mem["peak_arena_bytes"], "B")),
        ("KV cache", _fmt(mem["kv_bytes"], "B")),
        ("stack peak", _fmt(mem["stack_peak_bytes"], "B")),
        ("avg power", _fmt(pw["avg_w"], "W")),
        ("energy", _fmt(pw["energy_j"], "J")),
        ("energy/token", _fmt(pw["energy_per_token_j"], "J")),
        ("power coverage", _fmt(None if cov is None else 100.0 * cov, "%")),
        ("idle power", _fmt(pw.get("idle_w"), "W")),
        ("frames / CRC errors", f"{_fmt(link['frames'], '')} / {_fmt(link['crc_errors'], '')}"),
        ("seq gaps / reconnects", f"{_fmt(link['gaps'], '')} / {link['reconnects']}"),
        ("dropped samples", _fmt(link["dropped_samples"], "")),
    ]
    pred = summary.get("prediction") or {}
    rows = [(f"{n}{figure_mark(summary, n)}", v) for n, v in rows]
    if pred.get("source") == "twin":
        table.title = f"{table.title} (predicted by the device twin)"
        rows += [("prediction band", band_text(pred.get("band"))),
                 ("calibration", str(pred.get("calibration")))]
    elif pred.get("source") == "qemu":
        rows.insert(1, ("instructions/token (measured)",
                        _fmt(pred.get("instructions_per_token"), "")))
        if pred.get("board_decode_tok_s"):
            rows.insert(2, (f"decode on {pred['board']} (predicted)",
                            f"{_fmt(pred['board_decode_tok_s'], 'tok/s')}, band "
                            f"{band_text(pred.get('band'))}"))
    for name, value in rows:
        table.add_row(name, value)
    return table
