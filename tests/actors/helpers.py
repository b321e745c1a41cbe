"""Fakes shared by the actor tests: an in-memory trace sink."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np


class MemorySink:
    """Collects what a TraceRecorder writes (the TraceSink protocol)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[np.ndarray]] = {}
        self.power: list[tuple[int, np.ndarray, float]] = []
        self.power_gaps: list[tuple[int, int, float]] = []
        self.link_gaps: list[tuple[float, float]] = []
        self.text: list[tuple[str, float, float, int, str]] = []
        self.attrs: dict[str, dict[str, Any]] = {}
        self.flushes = 0

    def _add(self, name: str, rows: np.ndarray) -> None:
        self.tables.setdefault(name, []).append(rows)

    def table(self, name: str) -> np.ndarray:
        parts = self.tables.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    def add_events(self, rows: np.ndarray) -> None:
        self._add("events", rows)

    def add_tokens(self, rows: np.ndarray) -> None:
        self._add("tokens", rows)

    def add_spans(self, rows: np.ndarray) -> None:
        self._add("spans", rows)

    def add_memory(self, rows: np.ndarray) -> None:
        self._add("memory", rows)

    def add_pings(self, rows: np.ndarray) -> None:
        self._add("pings", rows)

    def add_runs(self, rows: np.ndarray) -> None:
        """Add or replace runs keyed by run_id, as the trace writer does."""
        runs = {int(r["run_id"]): r for part in self.tables.get("runs", []) for r in part}
        runs.update({int(r["run_id"]): r for r in rows})
        self.tables["runs"] = [np.array([runs[k] for k in sorted(runs)], dtype=rows.dtype)]

    def add_power(self, first_index: int, current_a: np.ndarray, host_s: float) -> None:
        self.power.append((first_index, current_a, host_s))

    def add_power_gap(self, first_index: int, n_missing: int, host_s: float) -> None:
        self.power_gaps.append((first_index, n_missing, host_s))

    def add_link_gap(self, lost_host_s: float, restored_host_s: float) -> None:
        self.link_gaps.append((lost_host_s, restored_host_s))

    def add_text(
        self, table: Literal["errors", "logs"], host_s: float, device_s: float, code: int,
        text: str,
    ) -> None:
        self.text.append((table, host_s, device_s, code, text))

    def set_attrs(self, group: str, attrs: dict[str, Any]) -> None:
        self.attrs.setdefault(group, {}).update(attrs)

    def flush(self) -> None:
        self.flushes += 1
