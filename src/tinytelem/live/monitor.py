"""What ``tinytelem monitor`` shows: live state folded from stream messages, and two renderings.

:class:`MonitorState` is pure (messages in, numbers out), so the same code drives the rich
terminal view, the plain periodic lines written when stdout is not a terminal, and the tests.
Definitions follow the analysis code (docs/summary-format.md): TTFT is the first DECODE token
minus INFER_BEGIN in device time, ITL the gaps between consecutive DECODE tokens, tokens/s the
decode rate over the last 32 tokens.

Losses are never hidden: tokens are counted against the indices seen and the run's own counts
(INFER_BEGIN's prompt length, INFER_END's generated tokens), ``dropped`` messages are summed per
stream class, and a run whose tokens did not all arrive never reads "ok" -- the device may have
finished fine, but this view is incomplete, and the line says so.
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
    LayersMessage,
    LinkMessage,
    MemoryMessage,
    PowerGapMessage,
    RunMessage,
    StatsMessage,
    StreamMessage,
    SummaryMessage,
    TokenMessage,
)

__all__ = ["FleetMonitorState", "MonitorState", "sparkline"]

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
        self.run_id: int | None = None
        self.run_status: int | None = None
        self.decode_t: list[float] = []
        self.n_prefill = 0
        self.n_prompt: int | None = None
        self.n_generated: int | None = None
        self.max_index = -1
        self.layers = 0
        self.memory: MemoryMessage | None = None
        self.link_up = True
        self.link_outages = 0
        self.decode_errors = 0
        self.power_gaps = 0
        self.dropped = 0
        self.server_dropped = 0
        self.dropped_by_class: dict[str, int] = {}
        self.server_dropped_by_class: dict[str, int] = {}
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
            self.max_index = max(self.max_index, m.index)
        elif isinstance(m, LayersMessage):
            self.layers += 1
        elif isinstance(m, RunMessage):
            self.run_id = m.run_id
            if m.event == "begin":
                self.run_begin_s = m.device_s
                self.decode_t.clear()
                self.n_prefill = 0
                self.max_index = -1
                self.n_prompt = m.n_prompt
                self.n_generated = None
                self.run_status = None
                self.run_state = f"run {m.run_id} running"
            else:
                self.run_status = m.status
                self.n_generated = m.n_generated
                self.run_state = f"run {m.run_id} ended"
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
            self.server_dropped = max(self.server_dropped, m.server_dropped)
            self.dropped = max(self.dropped, m.dropped)
            for cls, n in m.dropped_by_class.items():
                self.dropped_by_class[cls] = max(self.dropped_by_class.get(cls, 0), n)
            self.device_tx_dropped = m.device_tx_dropped
        elif isinstance(m, DroppedMessage):
            if m.server:
                self.server_dropped = max(self.server_dropped, m.total)
                target = self.server_dropped_by_class
            else:
                self.dropped = max(self.dropped, m.total)
                target = self.dropped_by_class
            for cls, n in (m.totals or m.classes).items():
                target[cls] = max(target.get(cls, 0), n)
        elif isinstance(m, PowerGapMessage):
            self.power_gaps += 1
        elif isinstance(m, ErrorMessage):
            self.last_error = m.text
        elif isinstance(m, ByeMessage):
            self.ended = True

    # ------------------------------------------------------------------ numbers

    @property
    def tokens_received(self) -> int:
        """Tokens of the current run that reached this view (prompt and decode)."""
        return self.n_prefill + len(self.decode_t)

    @property
    def tokens_expected(self) -> int | None:
        """Tokens the device sent: prompt + generated once the run ended, else the highest
        index seen + 1 (None before any)."""
        if self.n_generated is not None and self.n_prompt is not None:
            return self.n_prompt + self.n_generated
        return self.max_index + 1 if self.max_index >= 0 else None

    @property
    def tokens_missing(self) -> int:
        expected = self.tokens_expected
        return max(0, expected - self.tokens_received) if expected is not None else 0

    @property
    def status(self) -> str:
        """The run's state for the final line: "ok" only if the device said so *and* every
        token reached this view."""
        if self.run_status is None:
            return self.run_state
        device = {0: "ok", 1: "stopped", 2: "error"}.get(self.run_status, str(self.run_status))
        missing = self.tokens_missing
        if missing:
            return (f"{self.run_state} (device: {device}; INCOMPLETE here: {missing} of "
                    f"{self.tokens_expected} tokens missing)")
        return f"{self.run_state} ({device})"

    def losses(self) -> str:
        """What this view lost, per class ("" when nothing): tokens first."""
        parts = []
        if self.tokens_missing:
            parts.append(f"{self.tokens_missing} tokens")
        for label, by_class in (("", self.dropped_by_class),
                                ("server ", self.server_dropped_by_class)):
            for cls, n in sorted(by_class.items()):
                if n:
                    parts.append(f"{label}{cls} {n}")
        return ", ".join(parts)

    def summary(self, elapsed_s: float) -> dict[str, object]:
        """The machine-readable final summary (``monitor --json``)."""
        itl = self.itl_percentiles()
        dev = self.device
        return {
            "schema": "tinytelem.monitor/1", "elapsed_s": elapsed_s,
            "device": None if dev is None else {"platform": dev.platform,
                                                "model_name": dev.model_name},
            "run": {"run_id": self.run_id, "ended": self.run_status is not None,
                    "device_status": self.run_status, "status": self.status},
            "tokens": {"prompt": self.n_prefill, "decode": len(self.decode_t),
                       "expected": self.tokens_expected, "missing": self.tokens_missing},
            "complete": self.run_status is not None and not self.tokens_missing,
            "ttft_s": self.ttft_s, "tokens_per_s": self.tokens_per_s, "itl_s": itl,
            "power_w": {"last": self.current_w, "average": self.average_w,
                        "energy_j": self.energy_j, "level": self.level or None},
            "heap_peak_bytes": self.memory.heap_peak if self.memory is not None else None,
            "link": {"up": self.link_up, "outages": self.link_outages,
                     "decode_errors": self.decode_errors, "power_gaps": self.power_gaps,
                     "device_tx_dropped": self.device_tx_dropped},
            "dropped": {"client": self.dropped, "client_by_class": dict(self.dropped_by_class),
                        "server": self.server_dropped,
                        "server_by_class": dict(self.server_dropped_by_class)},
            "layers_messages": self.layers, "messages": self.messages, "bye": self.ended,
        }

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
            f"t={elapsed_s:.1f}s", self.status,
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
        lost = self.losses()
        if lost:
            parts.append(f"LOST: {lost}")
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
                     if itl else "", "", self.status)
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
        lost = self.losses()
        if lost:
            parts.append(f"[bold white on red] LOST in this view: {lost} [/]")
        if self.last_error:
            parts.append(f"[yellow]last error: {self.last_error}[/yellow]")
        return Panel(Group(*parts), title=title, subtitle=f"{elapsed_s:.1f} s")


class FleetMonitorState:
    """:class:`MonitorState` per device of a lab stream (messages with a ``device_id``).

    Messages without one (``hello``, ``bye``, this connection's ``dropped`` notices) reach
    every device's state. A single-device stream has no ids: everything then is one state and
    every rendering is exactly :class:`MonitorState`'s.
    """

    SHARED = ("hello", "bye", "dropped")

    def __init__(self, history: int = 240) -> None:
        self.history = history
        self.shared = MonitorState(history)
        self.devices: dict[str, MonitorState] = {}
        self._shared_messages: list[StreamMessage] = []

    def update(self, m: StreamMessage) -> None:
        """Route one message to its device's state (or to every state)."""
        device_id = getattr(m, "device_id", None)
        if device_id is None:
            self.shared.update(m)
            if isinstance(m, HelloMessage | ByeMessage | DroppedMessage):
                self._shared_messages.append(m)
                for state in self.devices.values():
                    state.update(m)
            return
        if device_id not in self.devices:
            state = self.devices[device_id] = MonitorState(self.history)
            for earlier in self._shared_messages:  # the hello, drops told so far
                state.update(earlier)
        self.devices[device_id].update(m)

    @property
    def ended(self) -> bool:
        return self.shared.ended

    def line(self, elapsed_s: float) -> str:
        """One plain line per device (``[id] ...``), or the single device's line."""
        if not self.devices:
            return self.shared.line(elapsed_s)
        return "\n".join(f"[{d}] {s.line(elapsed_s)}" for d, s in sorted(self.devices.items()))

    def summary(self, elapsed_s: float) -> dict[str, object]:
        """``monitor --json``: the single device's summary, or ``devices`` (id -> summary)."""
        if not self.devices:
            return self.shared.summary(elapsed_s)
        return {"schema": "tinytelem.monitor/1", "elapsed_s": elapsed_s,
                "devices": {d: s.summary(elapsed_s) for d, s in sorted(self.devices.items())},
                "bye": self.shared.ended}

    def renderable(self, elapsed_s: float, width: int = 80) -> Any:
        """The single device's panel, or one titled panel per device."""
        if not self.devices:
            return self.shared.renderable(elapsed_s, width)
        from rich.console import Group

        panels = []
        for device_id, state in sorted(self.devices.items()):
            panel = state.renderable(elapsed_s, width)
            panel.title = f"{device_id} · {panel.title}"
            panels.append(panel)
        return Group(*panels)
