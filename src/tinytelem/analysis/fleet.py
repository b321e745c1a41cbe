"""Where a fleet's runs are: a lab directory and a collect directory, as ``compare`` and
``report`` read them.

Two layouts hold many devices' runs (docs/lab.md)::

    OUT/                          record --session / profile --session (one host)
      lab.json                    {"host": ..., "devices": [{"id", "trace", "ok", ...}]}
      <device id>.h5              the traces themselves (and .ttraw.zst, .summary.json)

    OUT/<host>/<device>/<run_uid>/    collect (many hosts, over MQTT)
      summary.json                the recording's summary (tinytelem.summary/1)
      meta.json                   host, device_id, url, trace (on the recording host), ok, error

A lab directory has traces, so everything reads it; a collect directory has summaries only:
``compare`` reads them, and a report that needs the trace itself is refused with
:class:`TracesNeeded`, which names where the trace is and what to pass instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.errors import ConfigError

__all__ = ["COLLECTED_META", "COLLECTED_SUMMARY", "LAB_REPORT", "FleetRun", "TracesNeeded",
           "fleet_runs", "report_traces"]

LAB_REPORT = "lab.json"
COLLECTED_SUMMARY = "summary.json"
COLLECTED_META = "meta.json"
"""Written last by the collector: its presence means the run's files are complete."""


class TracesNeeded(ConfigError):
    """A directory holds only collected summaries where the traces themselves are needed;
    the message names where the traces are and what to pass instead."""


@dataclass(frozen=True)
class FleetRun:
    """One run to compare: what :func:`~tinytelem.analysis.compare.load_run_summary` reads
    (a trace, a summary.json or a run directory), and whose run it is when known."""

    path: Path
    host: str | None = None
    device: str | None = None
    trace: Path | None = None
    """The trace on this machine; None: a summary only (collected from another host)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return doc


def _lab_runs(lab_dir: Path) -> list[FleetRun]:
    """The traces of a lab's devices that succeeded (lab.json says why the others did not).

    A rotated recording (``--rotate``) is compared by its last segment, whose summary covers
    them all, and reported by its name (the segments read as one)."""
    from tinytelem.trace.reader import segment_paths

    doc = _read_json(lab_dir / LAB_REPORT)
    host = doc.get("host")
    runs = []
    for entry in doc.get("devices", []):
        trace = lab_dir / str(entry.get("trace", ""))
        if not entry.get("ok"):
            continue
        if trace.is_file():
            runs.append(FleetRun(trace, host, str(entry.get("id")), trace))
        elif segments := segment_paths(trace):
            runs.append(FleetRun(segments[-1], host, str(entry.get("id")), trace))
    if not runs:
        raise ConfigError(f"{lab_dir}: no device of this lab has a trace (see "
                          f"{lab_dir / LAB_REPORT} for each device's error)")
    return runs


def _collected_metas(root: Path) -> list[Path]:
    """``meta.json`` of every collected run at or below ``root`` (a collect --out directory,
    one host's or one device's folder of it, or one run's)."""
    found: set[Path] = set()
    for pattern in ("", "*/", "*/*/", "*/*/*/"):
        found.update(root.glob(pattern + COLLECTED_META))
    return sorted(m for m in found if (m.parent / COLLECTED_SUMMARY).is_file())


def _collected_runs(metas: Iterable[Path]) -> list[FleetRun]:
    runs = []
    for meta in metas:
        doc = _read_json(meta)
        host, device = doc.get("host"), doc.get("device_id")
        runs.append(FleetRun(meta.parent, str(host) if host else None,
                             str(device) if device else None))
    return runs


def fleet_runs(paths: Iterable[str | Path]) -> list[FleetRun]:
    """Every run the paths name: a lab directory stands for its devices' traces, a collect
    directory (or any folder of it) for the summaries collected there; anything else (a
    trace, a summary.json, a profile directory) for itself."""
    runs: list[FleetRun] = []
    for item in paths:
        p = Path(item)
        if p.is_dir() and (p / LAB_REPORT).is_file():
            runs.extend(_lab_runs(p))
        elif p.is_dir() and not (p / "trace.h5").is_file() and (metas := _collected_metas(p)):
            runs.extend(_collected_runs(metas))
        else:
            trace = p / "trace.h5" if p.is_dir() else p
            runs.append(FleetRun(p, trace=trace if trace.suffix == ".h5" else None))
    return runs


def report_traces(path: Path, fmt: str) -> list[Path] | None:
    """The traces a report of ``path`` covers when it is a fleet directory (a lab's traces),
    None when it is not one.

    Raises:
        TracesNeeded: ``path`` holds collected summaries only.
    """
    if not path.is_dir():
        return None
    if (path / LAB_REPORT).is_file():
        return [r.trace for r in _lab_runs(path) if r.trace is not None]
    if (path / "trace.h5").is_file():
        return None
    metas = _collected_metas(path)
    if not metas:
        return None
    first = _read_json(metas[0])
    where = (f" (the first, {first.get('device_id')}, is {first.get('trace')} on host "
             f"{first.get('host')})" if first.get("trace") else "")
    raise TracesNeeded(
        f"{path} holds {len(metas)} run summaries collected over MQTT, not traces: a {fmt} "
        "report needs the trace itself (tokens, spans, power samples), which stays on the "
        f"recording host{where}. Run 'tinytelem report' on that host's trace (or copy it "
        f"here), or compare the summaries: tinytelem compare {path} --csv summaries.csv")
