"""Synthetic traces with known truth for the analysis tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinytelem.analysis.rundata import RunData
from tinytelem.trace.schema import (
    PING_DTYPE,
    POWER_BLOCK_DTYPE,
    RUN_DTYPE,
    TOKEN_DTYPE,
)

TICK_HZ = 1_000_000.0


@dataclass(frozen=True)
class Clock:
    """Truth: host_s = offset + scale * x."""

    offset: float
    scale: float

    def to_host(self, x: np.ndarray | float) -> np.ndarray:
        return self.offset + self.scale * np.asarray(x, dtype=np.float64)

    def from_host(self, h: np.ndarray | float) -> np.ndarray:
        return (np.asarray(h, dtype=np.float64) - self.offset) / self.scale


def tokens_for_run(
    run_id: int,
    begin: float,
    prefill: list[float],
    decode: list[float],
    device: Clock | None = None,
    delay: float = 0.0005,
) -> np.ndarray:
    """TOKEN rows: prefill then decode tokens at the given device times."""
    times = [*prefill, *decode]
    tok = np.zeros(len(times), dtype=TOKEN_DTYPE)
    tok["run_id"] = run_id
    tok["index"] = np.arange(len(times))
    tok["token_id"] = 7
    tok["phase"] = [0] * len(prefill) + [1] * len(decode)
    tok["device_s"] = times
    tok["ticks"] = np.round(np.asarray(times) * TICK_HZ).astype(np.uint64)
    dev = device or Clock(0.0, 1.0)
    tok["host_s"] = dev.to_host(np.asarray(times)) + delay
    return tok


def run_row(run_id: int, begin: float, end: float, n_prompt: int, n_gen: int, status: int = 0):
    row = np.zeros(1, dtype=RUN_DTYPE)
    row["run_id"] = run_id
    row["n_prompt"] = n_prompt
    row["n_tokens"] = n_prompt + n_gen
    row["n_generated"] = n_gen
    row["status"] = status
    row["begin_s"] = begin
    row["end_s"] = end
    row["begin_ticks"] = round(begin * TICK_HZ)
    row["end_ticks"] = round(end * TICK_HZ) if np.isfinite(end) else 0
    return row


def schedule(
    begin: float = 1.0,
    n_prompt: int = 5,
    prefill_dt: float = 0.002,
    first_decode: float = 0.012,
    n_decode: int = 20,
    itl: float = 0.010,
    jitter: np.ndarray | None = None,
    tail: float = 0.003,
):
    """(prefill times, decode times, end) of a run with a known schedule."""
    prefill = [begin + prefill_dt * (i + 1) for i in range(n_prompt)]
    gaps = np.full(n_decode - 1, itl) + (jitter if jitter is not None else 0.0)
    t0 = prefill[-1] + first_decode
    decode = list(t0 + np.concatenate(([0.0], np.cumsum(gaps))))
    return prefill, decode, decode[-1] + tail


def make_pings(
    device: Clock,
    span_s: float,
    every_s: float,
    rng: np.random.Generator,
    t0_host: float = 0.5,
    base: float = 0.0002,
    scale: float = 0.001,
) -> np.ndarray:
    """PING rows: each way a one-sided delay base + Exp(scale)."""
    send = np.arange(t0_host, t0_host + span_s, every_s)
    d1 = base + rng.exponential(scale, send.size)
    d2 = base + rng.exponential(scale, send.size)
    handled = send + d1
    p = np.zeros(send.size, dtype=PING_DTYPE)
    p["nonce"] = np.arange(send.size)
    p["send_host_s"] = send
    p["recv_host_s"] = handled + d2
    p["ticks"] = np.round(device.from_host(handled) * TICK_HZ).astype(np.uint64)
    return p


def make_power(
    sensor: Clock,
    device: Clock,
    watts,
    n_samples: int,
    rate: float,
    block: int,
    rng: np.random.Generator,
    voltage: float = 5.0,
    drop_blocks: tuple[int, ...] = (),
):
    """(current_a, blocks) sampling ``watts(device_s)`` on the sensor clock."""
    idx = np.arange(n_samples)
    t_dev = device.from_host(sensor.to_host(idx / rate))
    current = (watts(t_dev) / voltage).astype(np.float32)
    starts = np.arange(0, n_samples, block)
    keep = [i for i in range(starts.size) if i not in drop_blocks]
    blocks = np.zeros(len(keep), dtype=POWER_BLOCK_DTYPE)
    parts = []
    offset = 0
    for row, i in enumerate(keep):
        s = starts[i]
        n = min(block, n_samples - s)
        blocks["first_index"][row] = s
        blocks["n"][row] = n
        blocks["host_s"][row] = float(sensor.to_host((s + n - 1) / rate)) + 0.0003
        blocks["host_s"][row] += rng.exponential(0.002)
        if "offset" in blocks.dtype.names:
            blocks["offset"][row] = offset
        offset += n
        parts.append(current[s : s + n])
    return np.concatenate(parts), blocks


def piecewise(edges: list[float], levels: list[float]):
    """watts(t): levels[i] on [edges[i-1], edges[i]); levels has len(edges) + 1 entries."""
    e = np.asarray(edges)
    lv = np.asarray(levels)

    def watts(t: np.ndarray) -> np.ndarray:
        return lv[np.searchsorted(e, t, side="right")]

    return watts


def analytic_energy(edges: list[float], levels: list[float], t0: float, t1: float) -> float:
    bounds = [-np.inf, *edges, np.inf]
    total = 0.0
    for i, level in enumerate(levels):
        lo, hi = max(bounds[i], t0), min(bounds[i + 1], t1)
        if hi > lo:
            total += level * (hi - lo)
    return total


def empty_run_data(**kw) -> RunData:
    return RunData(**kw)


def blocks_of(rows: list[tuple[int, int]], dtype: np.dtype = POWER_BLOCK_DTYPE) -> np.ndarray:
    b = np.zeros(len(rows), dtype=dtype)
    b["first_index"] = [r[0] for r in rows]
    b["n"] = [r[1] for r in rows]
    if "offset" in dtype.names:
        b["offset"] = np.cumsum([0] + [r[1] for r in rows])[:-1]
    return b
