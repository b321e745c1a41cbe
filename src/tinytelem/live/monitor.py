"""What ``tinytelem monitor`` shows: live state folded from stream messages, and two renderings.

:class:`MonitorState` is pure (messages in, numbers out), so the same code drives the rich
terminal view, the plain periodic lines written when stdout is not a terminal, and the tests.
Definitions follow the analysis code (docs/summary-format.md): TTFT is the first DECODE token
minus INFER_BEGIN in device time, ITL the gaps between consecutive DECODE tokens, tokens/s the
decode rate over the last 32 tokens.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from tinytelem.live.schema import (
    ByeMessage,
    DeviceInfo,
    DroppedMessage,
    ErrorMessage,
    HelloMessage,
    LinkMessage,
    MemoryMessage,
    PowerGapMessage,
    RunMessage,
    StatsMessage,
    StreamMessage,
    SummaryMessage,
    TokenMessage,
)

__all__ = ["MonitorState", "sparkline"]

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int) -> str:
    """Unicode block sparkline of the last ``width`` values (scaled min..max)."""
    vals = [v for v in values[-width:] if math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return SPARK[3] * len(vals)
    return "".join(SPARK[min(7, int((v - lo) / span * 7.999))] for v in vals)


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 1e3:.1f} ms"


def _mw(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 1e3:.1f} mW"


def _mib(value: int) -> str:
    return f"{value / 1024:.1f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.2f} MiB"


class MonitorState:
    """Folds stream messages into the numbers the monitor shows."""

    def __init__(self, history: int = 240) -> None:
        self.hello: HelloMessage | None = None
        self.device: DeviceInfo | None = None
        self.power_w: deque[float] = deque(maxlen=history)
        self.level = ""
        self.energy_j = 0.0
        self.power_s = 0.0
        self.run_begin_s: float | None = None
        self.run_state = "idle"
        self.decode_t: list[float] = []
        self.n_prefill = 0
        self.memory: MemoryMessage | None = None
        self.link_up = True
        self.link_outages = 0
        self.decode_errors = 0
        self.power_gaps = 0
        self.dropped = 0
        self.server_dropped = 0
        self.device_tx_dropped = 0
        self.last_error = ""
        self.messages = 0
        self.ended = False

    # ------------------------------------------------------------------ folding

    def update(self, m: StreamMessage) -> None:
        """Take one message."""
        self.messages += 1
        if isinstance(m, SummaryMessage):
            self.level = m.level
            for mean, n in zip(m.mean, m.n, strict=False):
                watts = mean * m.voltage_v
                self.power_w.append(watts)
                if math.isfinite(watts):
                    dt = n / m.sample_rate_hz
                    self.energy_j += watts * dt
                    self.power_s += dt
        elif isinstance(m, TokenMessage):
            if m.phase == 0:
                self.n_prefill += 1
            else:
                self.decode_t.append(m.device_s)
        elif isinstance(m, RunMessage):
            if m.event == "begin":
                self.run_begin_s = m.device_s
                self.decode_t.clear()
                self.n_prefill = 0
                self.run_state = f"run {m.run_id} running"
            else:
                status = {0: "ok", 1: "stopped", 2: "error"}.get(m.status, str(m.status))
                self.run_state = f"run {m.run_id} ended ({status})"
        elif isinstance(m, MemoryMessage):
            self.memory = m
        elif isinstance(m, HelloMessage):
            self.hello = m
            self.device = m.device or self.device
        elif isinstance(m, DeviceInfo):
            self.device = m
        elif isinstance(m, LinkMessage):
            self.link_up = m.up
            if not m.up:
                self.link_outages += 1
        elif isinstance(m, StatsMessage):
            self.link_up = m.link_up
            self.link_outages = m.link_outages
            self.decode_errors = m.decode_errors
            self.power_gaps = m.power_gaps
            self.server_dropped = m.server_dropped
            self.dropped = max(self.dropped, m.dropped)
            self.device_tx_dropped = m.device_tx_dropped
        elif isinstance(m, DroppedMessage):
            self.dropped = max(self.dropped, m.total)
        elif isinstance(m, PowerGapMessage):
            self.power_gaps += 1
        elif isinstance(m, ErrorMessage):
            self.last_error = m.text
        elif isinstance(m, ByeMessage):
            self.ended = True

    # ------------------------------------------------------------------ numbers

    @property
    def current_w(self) -> float | None:
        return self.power_w[-1] if self.power_w else None

    @property
    def average_w(self) -> float | None:
        return self.energy_j / self.power_s if self.power_s > 0 else None

    @property
    def ttft_s(self) -> float | None:
        if self.run_begin_s is None or not self.decode_t:
            return None
        return self.decode_t[0] - self.run_begin_s

    @property
    def tokens_per_s(self) -> float | None:
        t = self.decode_t[-33:]
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])

    def itl_percentiles(self) -> dict[str, float] | None:
        """p50/p90/p99 of inter-token latency (seconds) over the run so far."""
        if len(self.decode_t) < 2:
            return None
        gaps = np.diff(np.asarray(self.decode_t))
        p50, p90, p99 = np.percentile(gaps, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}

    def memory_fractions(self) -> list[tuple[str, int, float]]:
        """(label, bytes, fraction of device RAM) for heap, peak heap, arena and KV cache."""
        m = self.memory
        if m is None:
            return []
        ram = self.device.ram_bytes if self.device is not None and self.device.ram_bytes else 0
        rows = [("heap", m.heap_used), ("heap peak", m.heap_peak), ("arena", m.arena_bytes),
                ("kv cache", m.kv_bytes)]
        return [(label, value, value / ram if ram else math.nan) for label, value in rows]

    # ------------------------------------------------------------------ renderings

    def line(self, elapsed_s: float) -> str:
        """One plain status line (stdout is not a terminal)."""
        itl = self.itl_percentiles()
        tps = self.tokens_per_s
        parts = [
            f"t={elapsed_s:.1f}s", self.run_state,
            f"power={_mw(self.current_w)}", f"avg={_mw(self.average_w)}",
            f"tokens={len(self.decode_t)}",
            f"tok/s={tps:.1f}" if tps is not None else "tok/s=-",
            f"ttft={_ms(self.ttft_s)}",
            ("itl p50/p90/p99=" + "/".join(_ms(itl[k]) for k in ("p50", "p90", "p99")))
            if itl else "itl=-",
        ]
        if self.memory is not None:
            parts.append(f"heap={_mib(self.memory.heap_used)}")
        parts += [f"link={'up' if self.link_up else 'DOWN'}", f"outages={self.link_outages}",
                  f"dropped={self.dropped}", f"server_dropped={self.server_dropped}"]
        return " ".join(parts)

    def renderable(self, elapsed_s: float, width: int = 80) -> Any:
        """The rich live view: power sparkline, latency, memory bars, link and drops."""
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        dev = self.device
        title = (f"{dev.platform} · {dev.model_name} · fw {dev.firmware_version}" if dev
                 else "waiting for the device")
        spark_w = max(10, width - 30)
        power = Table.grid(padding=(0, 1))
        power.add_row("[bold]power[/bold]",
                      f"[green]{sparkline(list(self.power_w), spark_w)}[/green]")
        power.add_row("", f"now {_mw(self.current_w)}   avg {_mw(self.average_w)}   "
                          f"level {self.level or '-'}")
        itl = self.itl_percentiles()
        tps = self.tokens_per_s
        perf = Table.grid(padding=(0, 2))
        perf.add_row("[bold]tokens[/bold]", f"{len(self.decode_t)} decoded, "
                     f"{self.n_prefill} prompt", "[bold]tok/s[/bold]",
                     f"{tps:.1f}" if tps is not None else "-",
                     "[bold]TTFT[/bold]", _ms(self.ttft_s))
        perf.add_row("[bold]ITL[/bold]", "p50 " + _ms(itl["p50"]) if itl else "-",
                     "p90 " + _ms(itl["p90"]) if itl else "", "p99 " + _ms(itl["p99"])
                     if itl else "", "", self.run_state)
        mem = Table.grid(padding=(0, 1))
        for label, value, frac in self.memory_fractions():
            bar = ProgressBar(total=1.0, completed=0.0 if math.isnan(frac) else min(frac, 1.0),
                              width=max(10, width // 3))
            pct = "" if math.isnan(frac) else f"{frac * 100:.1f}% of RAM"
            mem.add_row(f"[bold]{label}[/bold]", bar, _mib(value), pct)
        link = (f"link [{'green' if self.link_up else 'red'}]"
                f"{'up' if self.link_up else 'DOWN'}[/] · outages {self.link_outages} · "
                f"decode errors {self.decode_errors} · power gaps {self.power_gaps} · "
                f"dropped (this view) {self.dropped} · server dropped {self.server_dropped} · "
                f"device tx dropped {self.device_tx_dropped}")
        parts: list[Any] = [power, perf, mem, link]
        if self.last_error:
            parts.append(f"[yellow]last error: {self.last_error}[/yellow]")
        return Panel(Group(*parts), title=title, subtitle=f"{elapsed_s:.1f} s")
