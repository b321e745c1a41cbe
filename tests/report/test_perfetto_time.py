"""Perfetto export: no negative timestamps, and the file loads in Perfetto's trace processor.

Before: power is sampled before the first run starts, and those counter events had negative
``ts`` (about a third of them in a twin profile); Perfetto does not support that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.report.helpers import profile_twin
from tests.report.schema_check import schema_errors
from tinytelem.report.data import load_report_data
from tinytelem.report.perfetto import PERFETTO_SCHEMA, check_nesting, perfetto_json


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    root = tmp_path_factory.mktemp("perfetto")
    reports = [load_report_data(profile_twin(p, root / p, n))
               for p, n in (("esp32s3", 6), ("rp2040", 3))]
    doc = json.loads(json.dumps(perfetto_json(reports), allow_nan=False))
    path = root / "trace.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return doc, path


def test_every_timestamp_is_non_negative(export: tuple[dict[str, object], Path]) -> None:
    doc, _ = export
    assert schema_errors(doc, PERFETTO_SCHEMA) == []  # the schema says ts >= 0 now
    events = doc["traceEvents"]
    assert isinstance(events, list)
    timed = [e for e in events if "ts" in e]
    assert timed and min(e["ts"] for e in timed) == 0.0
    assert all(e["ts"] >= 0 for e in timed)
    assert check_nesting(events) == []
    # The power counters really did start before the run: the shift is not zero, and each
    # trace's first run starts exactly at the shift (the runs stay aligned).
    other = doc["otherData"]
    assert isinstance(other, dict) and other["run_start_us"] > 0
    power = [e for e in timed if e["ph"] == "C" and e["name"] == "power (W)"]
    assert min(e["ts"] for e in power) < other["run_start_us"]
    runs = [e for e in timed if e["ph"] == "X" and e["cat"] == "run"]
    for pid in (1, 2):
        first = min(e["ts"] for e in runs if e["pid"] == pid)
        assert first == pytest.approx(other["run_start_us"], abs=1e-3)


def _trace_processor() -> str | None:
    """Perfetto's trace_processor_shell, if this machine has one (never downloaded here)."""
    env = os.environ.get("TINYTELEM_TRACE_PROCESSOR")
    if env and Path(env).is_file():
        return env
    for name in ("trace_processor_shell", "trace_processor"):
        found = shutil.which(name)
        if found:
            return found
    cache = Path.home() / ".local" / "share" / "perfetto" / "prebuilts"  # the perfetto package's
    hits = sorted(p for p in cache.glob("trace_processor_shell*") if not p.name.endswith(".tmp"))
    return str(hits[-1]) if hits else None


def test_trace_processor_loads_the_export(export: tuple[dict[str, object], Path],
                                          tmp_path: Path) -> None:
    shell = _trace_processor()
    if shell is None:
        pytest.skip("Perfetto's trace_processor_shell is not installed: the `perfetto` PyPI "
                    "package downloads it on first use, which needs network access; put it on "
                    "PATH or set TINYTELEM_TRACE_PROCESSOR to run this check")
    doc, path = export
    query = tmp_path / "q.sql"
    query.write_text("select (select count(*) from slice) as slices, "
                     "(select count(*) from counter) as counters, "
                     "(select count(*) from counter where ts < 0) as negative;\n")
    proc = subprocess.run([shell, "--query-file", str(query), str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    header = [c.strip('"') for c in lines[-2].split(",")]
    values = dict(zip(header, (int(v.strip('"')) for v in lines[-1].split(",")), strict=True))
    events = doc["traceEvents"]
    assert isinstance(events, list)
    assert values["slices"] >= sum(1 for e in events if e["ph"] == "X")
    assert values["counters"] > 0 and values["negative"] == 0
