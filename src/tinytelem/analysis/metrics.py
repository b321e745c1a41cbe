"""Run metrics from a trace's tables: latency, throughput, memory, power, energy, link health.

Everything is computed from device timestamps (``device_s``), the truth for device events.
Power samples are brought onto the device clock through two fits (sensor -> host from
``/power/blocks``, device -> host from PING/PONG rows). Definitions are normative in
docs/summary-format.md; the short version:

- TTFT = first DECODE token - INFER_BEGIN; prefill time = last PREFILL token - INFER_BEGIN.
- ITL = differences between consecutive DECODE tokens (pairs whose ``index`` differs by one).
- decode tok/s = (n_decode - 1) / (last DECODE - first DECODE); e2e = INFER_END - INFER_BEGIN.
- With several runs (and no ``run_id``), all runs that ended OK are pooled: ITL samples are
  pooled, TTFT / e2e are means, throughputs and energy per token are ratios of sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.analysis.clock import ClockFit
from tinytelem.analysis.energy import PowerTrace
from tinytelem.analysis.rundata import RunData, device_clock, in_windows, place_power
from tinytelem.errors import TraceError

__all__ = [
    "ItlStats",
    "LinkStats",
    "MemoryStats",
    "PowerStats",
    "RunMetrics",
    "Summary",
    "compute_metrics",
]

PREFILL = 0
DECODE = 1
STATUS_OK = 0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ItlStats:
    """Inter-token latency statistics in seconds (numpy linear percentiles)."""

    n: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, itl: FloatArray) -> ItlStats:
        """Statistics of ``itl``; all None when it is empty."""
        if itl.size == 0:
            return cls(0, None, None, None, None, None)
        p50, p90, p99 = (float(v) for v in np.percentile(itl, [50, 90, 99]))
        return cls(int(itl.size), float(itl.mean()), p50, p90, p99, float(itl.max()))


@dataclass(frozen=True)
class RunEnergy:
    """Energy figures of one run window (J, s)."""

    energy_j: float
    covered_s: float
    window_s: float
    prefill_j: float | None
    decode_j: float | None
    per_token_j: FloatArray
    """Energy between consecutive token times (NaN where a sample gap cut the interval)."""
    idle_energy_j: float
    idle_covered_s: float


@dataclass(frozen=True)
class RunMetrics:
    """Figures of one inference run; None where the trace cannot tell."""

    run_id: int
    status: int
    complete: bool
    begin_s: float | None
    end_s: float | None
    n_prompt: int
    n_generated: int
    ttft_s: float | None
    prefill_s: float | None
    prefill_tok_s: float | None
    decode_s: float | None
    decode_steps: int
    decode_tok_s: float | None
    e2e_s: float | None
    itl_s: FloatArray
    energy: RunEnergy | None


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory figures in bytes over the analysed runs."""

    peak_heap_bytes: int | None
    peak_arena_bytes: int | None
    kv_bytes: int | None
    stack_peak_bytes: int | None


@dataclass(frozen=True)
class PowerStats:
    """Pooled power and energy figures over the analysed runs."""

    avg_w: float | None
    energy_j: float | None
    energy_filled_j: float | None
    energy_per_token_j: float | None
    coverage: float | None
    prefill_energy_j: float | None
    decode_energy_j: float | None
    per_token_j: FloatArray
    idle_w: float | None
    energy_above_idle_j: float | None
    n_samples: int


@dataclass(frozen=True)
class LinkStats:
    """Link health counters; None when the trace did not record them."""

    frames: int | None
    crc_errors: int | None
    gaps: int | None
    reconnects: int
    dropped_samples: int


@dataclass(frozen=True)
class Summary:
    """Everything :func:`compute_metrics` found; ``build_summary`` turns it into the contract."""

    attrs: Mapping[str, Any]
    runs: tuple[RunMetrics, ...]
    ttft_s: float | None
    e2e_s: float | None
    prefill_s: float | None
    prefill_tok_s: float | None
    decode_tok_s: float | None
    itl: ItlStats
    n_prompt: int
    n_generated: int
    memory: MemoryStats
    power: PowerStats
    power_rate_hz: float | None
    link: LinkStats
    device_clock: ClockFit
    sensor_clock: ClockFit
    warnings: tuple[str, ...]
    power_trace: PowerTrace | None = field(default=None, repr=False, compare=False)
    """The power samples on the device clock the energies came from (reports plot it)."""


def _pos(x: float) -> float | None:
    """``x`` when it is a positive finite duration, else None."""
    return x if math.isfinite(x) and x > 0 else None


def _ratio(num: float, den: float | None) -> float | None:
    if den is None or not math.isfinite(den) or den <= 0 or not math.isfinite(num):
        return None
    return num / den


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _select_runs(data: RunData, run_id: int | None, warnings: list[str]) -> list[np.void | None]:
    """Rows of the runs table to analyse (None stands for a run known only from its tokens)."""
    runs = data.runs
    if run_id is not None:
        rows = runs[runs["run_id"] == run_id]
        if rows.size:
            return [rows[-1]]
        if np.any(data.tokens["run_id"] == run_id):
            warnings.append(f"run {run_id} has tokens but no INFER_BEGIN/END row")
            return [None]
        present = sorted({int(r) for r in runs["run_id"]} | {int(r) for r in data.tokens["run_id"]})
        raise TraceError(f"run {run_id} is not in this trace; runs present: {present or 'none'}")
    if runs.size:
        ok = runs[(runs["status"] == STATUS_OK) & np.isfinite(runs["end_s"])]
        if ok.size:
            return list(ok)
        last = runs[np.argsort(runs["begin_s"], kind="stable")][-1]
        warnings.append(f"no run ended OK; analysing run {int(last['run_id'])} as it stands")
        return [last]
    if data.tokens.size:
        warnings.append("no INFER_BEGIN/END rows; latency from INFER_BEGIN is unknown")
        return [None]
    return []


def _clip_warnings(data: RunData, rows: list[np.void | None]) -> list[str]:
    """Runs the device clipped: INFER_BEGIN announced fewer tokens than the host asked for
    (``requested_tokens`` attribute), because the context ends first (llama2.c stops there)."""
    asked = data.attrs.get("requested_tokens")
    if asked is None:
        return []
    return [f"run {int(r['run_id'])}: asked for {int(asked)} tokens, but the device's context "
            f"leaves room for {int(r['n_tokens'])} after the {int(r['n_prompt'])}-token "
            "prompt, so the run was clipped there (llama2.c stops at seq_len too)"
            for r in rows if r is not None and int(r["n_tokens"]) < int(asked)]


def _run_tokens(data: RunData, rid: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(prefill times, decode times, decode indices) of one run, sorted by device time."""
    tok = data.tokens[data.tokens["run_id"] == rid]
    tok = tok[np.isfinite(tok["device_s"])]
    tok = tok[np.argsort(tok["device_s"], kind="stable")]
    pre = tok[tok["phase"] == PREFILL]
    dec = tok[tok["phase"] == DECODE]
    return (
        pre["device_s"].astype(np.float64),
        dec["device_s"].astype(np.float64),
        dec["index"].astype(np.float64),
    )


def _itl(t: FloatArray, index: FloatArray) -> tuple[FloatArray, int]:
    """Inter-token gaps and decode steps covered by ``t``; index gaps (lost frames) skipped."""
    if t.size < 2:
        return np.zeros(0), 0
    dt = np.diff(t)
    di = np.diff(index)
    if np.all(di > 0):
        return dt[di == 1], int(index[-1] - index[0])
    # Indices not usable (not increasing): trust arrival order.
    return dt, int(t.size - 1)


def _run_metrics(
    data: RunData, row: np.void | None, rid: int, power: PowerTrace | None, idle_from: float
) -> RunMetrics:
    pre_t, dec_t, dec_i = _run_tokens(data, rid)
    if row is not None:
        status = int(row["status"])
        begin = float(row["begin_s"])
        end = float(row["end_s"])
        n_prompt_row, n_gen_row = int(row["n_prompt"]), int(row["n_generated"])
    else:
        status, begin, end, n_prompt_row, n_gen_row = -1, math.nan, math.nan, 0, 0
    complete = status == STATUS_OK and math.isfinite(end)
    begin_ok = math.isfinite(begin)
    n_prompt = n_prompt_row or int(pre_t.size)
    n_generated = n_gen_row if complete and n_gen_row else int(dec_t.size)
    ttft = _pos(float(dec_t[0]) - begin) if dec_t.size and begin_ok else None
    prefill = _pos(float(pre_t[-1]) - begin) if pre_t.size and begin_ok else None
    itl, steps = _itl(dec_t, dec_i)
    decode_s = _pos(float(dec_t[-1] - dec_t[0])) if dec_t.size >= 2 else None
    e2e = _pos(end - begin) if math.isfinite(end) and begin_ok else None
    energy = None
    if power is not None and begin_ok:
        last_tok = max([float(v[-1]) for v in (pre_t, dec_t) if v.size], default=math.nan)
        stop = end if math.isfinite(end) else last_tok
        energy = _run_energy(power, begin, stop, pre_t=pre_t, dec_t=dec_t, idle_from=idle_from)
    return RunMetrics(
        run_id=rid,
        status=status,
        complete=complete,
        begin_s=begin if begin_ok else None,
        end_s=end if math.isfinite(end) else None,
        n_prompt=n_prompt,
        n_generated=n_generated,
        ttft_s=ttft,
        prefill_s=prefill,
        prefill_tok_s=_ratio(float(n_prompt), prefill) if n_prompt else None,
        decode_s=decode_s,
        decode_steps=steps,
        decode_tok_s=_ratio(float(steps), decode_s),
        e2e_s=e2e,
        itl_s=itl,
        energy=energy,
    )


def _measured(energy: float, covered: float) -> float | None:
    """Energy of a window, or None when no sample covered any of it."""
    return energy if covered > 0 else None


def _run_energy(
    power: PowerTrace,
    begin: float,
    end: float,
    *,
    pre_t: FloatArray,
    dec_t: FloatArray,
    idle_from: float,
) -> RunEnergy | None:
    if not (math.isfinite(end) and end > begin):
        return None
    energy, covered = power.window(begin, end)
    prefill_j = decode_j = None
    if pre_t.size:
        split = float(np.clip(pre_t[-1], begin, end))
        prefill_j = _measured(*power.window(begin, split))
        decode_j = _measured(*power.window(split, end))
    start = float(pre_t[-1]) if pre_t.size else begin
    if dec_t.size:
        edges = np.concatenate(([start], dec_t))
        per_token, cov = power.integrate(edges[:-1], edges[1:])
        # A token whose interval fell partly into a sample gap has no honest energy.
        per_token = np.where(cov >= 0.99 * np.diff(edges), per_token, np.nan)
    else:
        per_token = np.zeros(0)
    idle_e, idle_c = power.window(idle_from, begin)
    return RunEnergy(energy, covered, end - begin, prefill_j, decode_j, per_token, idle_e, idle_c)


def _memory(data: RunData, windows: list[tuple[float, float]]) -> MemoryStats:
    mem = data.memory
    if windows and mem.size:
        begin, end = np.array(windows, dtype=np.float64).T
        inside = in_windows(mem["device_s"], begin, end)
        if np.any(inside):
            mem = mem[inside]
    if mem.size == 0:
        return MemoryStats(None, None, None, None)
    return MemoryStats(
        int(mem["heap_peak"].max()),
        int(mem["arena_bytes"].max()),
        int(mem["kv_bytes"].max()),
        int(mem["stack_peak"].max()),
    )


def _link(data: RunData) -> LinkStats:
    def get(*keys: str) -> int | None:
        for k in keys:
            if data.link.get(k) is not None:
                return int(data.link[k])
        return None

    gaps = data.link_gaps
    reconnects = int(np.count_nonzero(np.isfinite(gaps["restored_host_s"]))) if gaps.size else 0
    dropped = int(data.power_gaps["n_missing"].sum()) if data.power_gaps.size else 0
    return LinkStats(get("frames"), get("crc_errors"), get("gaps", "seq_gaps"), reconnects, dropped)


def _power_stats(runs: list[RunMetrics], n_samples: int) -> PowerStats:
    en = [r.energy for r in runs if r.energy is not None]
    if not en:
        return PowerStats(None, None, None, None, None, None, None, np.zeros(0), None, None, 0)
    energy = sum(e.energy_j for e in en)
    covered = sum(e.covered_s for e in en)
    window = sum(e.window_s for e in en)
    avg_w = _ratio(energy, covered)
    n_gen = sum(r.n_generated for r in runs if r.energy is not None)
    pre = [e.prefill_j for e in en]
    dec = [e.decode_j for e in en]
    idle_w = _ratio(sum(e.idle_energy_j for e in en), sum(e.idle_covered_s for e in en))
    return PowerStats(
        avg_w=avg_w,
        energy_j=energy if covered > 0 else None,
        energy_filled_j=avg_w * window if avg_w is not None else None,
        energy_per_token_j=_ratio(energy, float(n_gen)) if covered > 0 else None,
        coverage=_ratio(covered, window),
        prefill_energy_j=sum(p for p in pre if p is not None) if None not in pre else None,
        decode_energy_j=sum(d for d in dec if d is not None) if None not in dec else None,
        per_token_j=np.concatenate([e.per_token_j for e in en]),
        idle_w=idle_w,
        energy_above_idle_j=energy - idle_w * covered if idle_w is not None else None,
        n_samples=n_samples,
    )


def compute_metrics(data: RunData, run_id: int | None = None) -> Summary:
    """Compute the metrics of one run, or of all runs that ended OK pooled together.

    Args:
        data: the trace tables.
        run_id: the run to analyse; None pools every run that ended OK (or, when none did,
            takes the last run as it stands).

    Raises:
        TraceError: ``run_id`` names a run the trace does not hold.
    """
    warnings: list[str] = []
    rows = _select_runs(data, run_id, warnings)
    warnings += _clip_warnings(data, rows)
    device = device_clock(data, warnings)
    power, sensor = place_power(data, device, warnings)
    ordered = data.runs[np.argsort(data.runs["begin_s"], kind="stable")] if data.runs.size else None
    first_sample = float(power.t_s[0]) if power is not None and power.size else math.nan
    metrics: list[RunMetrics] = []
    for row in rows:
        if row is None:
            rid = int(data.tokens["run_id"][-1]) if run_id is None else run_id
            metrics.append(_run_metrics(data, None, rid, power, math.nan))
            continue
        idle_from = first_sample
        if ordered is not None:
            before = ordered["end_s"][ordered["end_s"] <= row["begin_s"]]
            if before.size:
                idle_from = max(float(before.max()), first_sample)
        metrics.append(_run_metrics(data, row, int(row["run_id"]), power, idle_from))
    windows = [
        (r.begin_s, r.end_s if r.end_s is not None else math.inf)
        for r in metrics
        if r.begin_s is not None
    ]
    itl = np.concatenate([r.itl_s for r in metrics]) if metrics else np.zeros(0)
    prefill_total = sum(r.prefill_s for r in metrics if r.prefill_s is not None)
    prompt_timed = sum(r.n_prompt for r in metrics if r.prefill_s is not None)
    decode_total = sum(r.decode_s for r in metrics if r.decode_s is not None)
    steps_timed = sum(r.decode_steps for r in metrics if r.decode_s is not None)
    rate = float(data.power_rate_hz)
    return Summary(
        attrs=data.attrs,
        runs=tuple(metrics),
        ttft_s=_mean([r.ttft_s for r in metrics]),
        e2e_s=_mean([r.e2e_s for r in metrics]),
        prefill_s=_mean([r.prefill_s for r in metrics]),
        prefill_tok_s=_ratio(float(prompt_timed), prefill_total) if prompt_timed else None,
        decode_tok_s=_ratio(float(steps_timed), decode_total),
        itl=ItlStats.of(itl),
        n_prompt=sum(r.n_prompt for r in metrics),
        n_generated=sum(r.n_generated for r in metrics),
        memory=_memory(data, windows),
        power=_power_stats(metrics, data.power_samples_summarised
                           or (power.size if power is not None else 0)),
        power_rate_hz=rate if math.isfinite(rate) and rate > 0 else None,
        link=_link(data),
        device_clock=device,
        sensor_clock=sensor,
        warnings=tuple(warnings),
        power_trace=power,
    )
