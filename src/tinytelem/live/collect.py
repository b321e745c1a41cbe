"""Keep a fleet's summaries from an MQTT broker (``tinytelem collect``), each exactly once.

Publishers (``record --publish``) send two kinds of summary with QoS 1, which the broker may
deliver twice; the collector keeps each once, keyed by what names it:

============================  =================================  ==========================
message                       kept as                            key
============================  =================================  ==========================
``session_summary``           ``OUT/<host>/<device>/<run_uid>/``  host, device, run_uid
                              ``summary.json`` (+ ``meta.json``)
``run_summary``               a line of ``.../runs.jsonl``       ... and the run id
``summary`` (``--power``)     a line of ``.../power.jsonl``      (QoS 0: as it comes)
============================  =================================  ==========================

``summary.json`` is the trace's summary as the recorder computed it (``tinytelem.summary/1``),
so ``tinytelem compare OUT`` compares runs from every host (analysis/fleet.py reads the
layout). Keys already on disk count as seen, so a restarted collector does not write a summary
twice. Files are written whole (temporary name, then rename).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.analysis.fleet import COLLECTED_META, COLLECTED_SUMMARY
from tinytelem.errors import TinyTelemError
from tinytelem.live.publish import payload_codec
from tinytelem.live.schema import decode

__all__ = ["CollectStatistics", "Collector"]

log = logging.getLogger("tinytelem.mqtt")


@dataclass(frozen=True, slots=True)
class CollectStatistics:
    """What the collector did (immutable snapshot)."""

    received: int
    sessions: int
    runs: int
    duplicates: int
    power_messages: int
    malformed: int


def _safe(level: str) -> bool:
    return bool(level) and level not in (".", "..") and "/" not in level and "\\" not in level


class Collector:
    """Sans-I/O on the broker side: :meth:`handle` takes one MQTT message (topic, payload)."""

    def __init__(self, out: Path, *, prefix: str, power: bool = False) -> None:
        self.out = out
        self.prefix = prefix
        self.power = power
        self._runs_seen: dict[Path, set[int]] = {}
        self._received = self._sessions = self._runs = self._dup = 0
        self._power = self._malformed = 0

    @property
    def subscriptions(self) -> tuple[tuple[str, int], ...]:
        """The topics to subscribe to (QoS 1 for summaries)."""
        subs = [(f"{self.prefix}/+/+/session_summary", 1), (f"{self.prefix}/+/+/run_summary", 1)]
        if self.power:
            subs.append((f"{self.prefix}/+/+/summary", 0))
        return tuple(subs)

    def statistics(self) -> CollectStatistics:
        return CollectStatistics(self._received, self._sessions, self._runs, self._dup,
                                 self._power, self._malformed)

    def handle(self, topic: str, payload: bytes) -> None:
        """Keep one message; anything malformed is counted and logged, never raised."""
        self._received += 1
        try:
            levels = topic[len(self.prefix) + 1:].split("/") \
                if topic.startswith(self.prefix + "/") else []
            if len(levels) != 3 or not all(_safe(x) for x in levels[:2]):
                raise ValueError(f"unexpected topic {topic!r}")
            host, device = levels[0], levels[1]
            m = decode(payload.decode() if payload_codec(payload) == "json" else payload)
            kind = m["type"]
            if kind == "summary":
                self._keep_power(host, device, m)
                return
            uid = str(m.get("run_uid", ""))
            if not _safe(uid):
                raise ValueError(f"{kind} without a usable run_uid")
            where = self.out / host / device / uid
            if kind == "session_summary":
                self._keep_session(where, m)
            elif kind == "run_summary":
                self._keep_run(where, m)
        except (TinyTelemError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self._malformed += 1
            log.warning("ignored a malformed message on %s: %s", topic, exc)

    def _keep_session(self, where: Path, m: dict[str, Any]) -> None:
        target = where / COLLECTED_META
        if target.exists():
            self._dup += 1
            return
        where.mkdir(parents=True, exist_ok=True)
        if isinstance(m.get("summary"), dict):
            _write(where / COLLECTED_SUMMARY, m["summary"])
        meta = {k: v for k, v in m.items() if k != "summary"}
        _write(target, meta)  # last: its presence means the session is complete
        self._sessions += 1

    def _keep_run(self, where: Path, m: dict[str, Any]) -> None:
        run_id = int(m["run_id"])
        seen = self._runs_seen.get(where)
        if seen is None:
            seen = self._runs_seen[where] = set()
            runs = where / "runs.jsonl"
            if runs.exists():
                seen.update(int(json.loads(line)["run_id"])
                            for line in runs.read_text().splitlines() if line.strip())
        if run_id in seen:
            self._dup += 1
            return
        seen.add(run_id)
        where.mkdir(parents=True, exist_ok=True)
        with (where / "runs.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(m, sort_keys=True) + "\n")
        self._runs += 1

    def _keep_power(self, host: str, device: str, m: dict[str, Any]) -> None:
        if not self.power:
            return
        where = self.out / host / device
        where.mkdir(parents=True, exist_ok=True)
        with (where / "power.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(m, sort_keys=True) + "\n")
        self._power += 1


def _write(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
