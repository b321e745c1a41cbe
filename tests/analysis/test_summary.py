"""The summary contract: stable keys, no NaN, validation, human table."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

from tests.analysis.helpers import TICK_HZ, run_row, schedule, tokens_for_run
from tests.analysis.test_metrics import powered_run
from tinytelem.analysis import build_summary, compute_metrics, render_table, validate_summary
from tinytelem.analysis.rundata import RunData
from tinytelem.analysis.summary import REQUIRED, SUMMARY_SCHEMA, _fmt
from tinytelem.errors import TraceError
from tinytelem.trace.schema import MEMORY_DTYPE, POWER_GAP_DTYPE

ATTRS = {
    "tick_hz": TICK_HZ,
    "platform": "stm32h7",
    "device": "emu:stm32h7",
    "model_name": "stories260K",
    "model_sha256": bytes(range(32)),
    "model_params": 260_000,
    "sensor": "simulated",
}


def full_summary() -> dict:
    data, *_ = powered_run(drop_blocks=(10,))
    mem = np.zeros(1, dtype=MEMORY_DTYPE)
    mem["device_s"] = 5.1
    mem["heap_peak"], mem["arena_bytes"], mem["kv_bytes"], mem["stack_peak"] = 4096, 8192, 1024, 512
    gaps = np.zeros(1, dtype=POWER_GAP_DTYPE)
    gaps["first_index"], gaps["n_missing"] = 10_000, 1000
    data = RunData(
        **{
            **data.__dict__,
            "attrs": ATTRS,
            "memory": mem,
            "power_gaps": gaps,
            "link": {"frames": 500, "crc_errors": 1, "gaps": 2},
        }
    )
    return build_summary(compute_metrics(data))


def test_full_summary_is_strict_json_and_validates() -> None:
    d = full_summary()
    text = json.dumps(d, allow_nan=False)  # raises on NaN / inf
    back = json.loads(text)
    validate_summary(back)
    assert back["schema"] == SUMMARY_SCHEMA
    assert back["model"] == {
        "name": "stories260K",
        "sha256": bytes(range(32)).hex(),
        "params": 260_000,
    }
    assert back["tokens"] == {"prompt": 5, "generated": 20}
    assert back["latency"]["ttft_s"] == pytest.approx(0.022)
    assert back["memory"]["peak_heap_bytes"] == 4096
    assert back["link"] == {
        "frames": 500,
        "crc_errors": 1,
        "gaps": 2,
        "reconnects": 0,
        "dropped_samples": 1000,
    }
    assert 0 < back["power"]["coverage"] < 1  # the dropped block is visible
    assert back["power"]["sample_rate_hz"] == 10_000.0
    assert back["clock"]["device"]["method"] == "bracket-hull"
    assert back["runs"][0]["run_id"] == 1


def test_empty_trace_gives_valid_summary_of_nulls() -> None:
    d = build_summary(RunData())
    json.dumps(d, allow_nan=False)
    validate_summary(d)
    assert d["latency"]["ttft_s"] is None and d["power"]["energy_j"] is None
    assert d["clock"]["device"]["error_bound_s"] is None  # inf becomes null
    assert d["platform"] is None


def test_build_summary_from_run_data_with_run_id() -> None:
    p1, d1, e1 = schedule(begin=1.0)
    p2, d2, e2 = schedule(begin=3.0, first_decode=0.05)
    data = RunData(
        attrs={"tick_hz": TICK_HZ},
        tokens=np.concatenate([tokens_for_run(1, 1.0, p1, d1), tokens_for_run(2, 3.0, p2, d2)]),
        runs=np.concatenate([run_row(1, 1.0, e1, 5, 20), run_row(2, 3.0, e2, 5, 20)]),
    )
    assert build_summary(data, run_id=2)["latency"]["ttft_s"] == pytest.approx(0.06)
    assert len(build_summary(data)["runs"]) == 2


@pytest.mark.parametrize("path", sorted(REQUIRED))
def test_validate_names_each_missing_key(path: str) -> None:
    d = full_summary()
    node = d
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    del node[parts[-1]]
    with pytest.raises(TraceError, match=re.escape(f"missing '{path}'")):
        validate_summary(d)


def test_validate_rejects_wrong_types_nan_and_schema() -> None:
    d = full_summary()
    bad = copy.deepcopy(d)
    bad["latency"]["ttft_s"] = "fast"
    with pytest.raises(TraceError, match=r"latency\.ttft_s.*number"):
        validate_summary(bad)
    bad = copy.deepcopy(d)
    bad["power"]["avg_w"] = math.nan
    with pytest.raises(TraceError, match="use null"):
        validate_summary(bad)
    bad = copy.deepcopy(d)
    bad["tokens"]["prompt"] = True
    with pytest.raises(TraceError, match=r"tokens\.prompt"):
        validate_summary(bad)
    bad = copy.deepcopy(d)
    bad["schema"] = "tinytelem.summary/0"
    with pytest.raises(TraceError, match=re.escape("expected 'tinytelem.summary/1'")):
        validate_summary(bad)
    bad = copy.deepcopy(d)
    bad["schema"] = None
    with pytest.raises(TraceError, match="schema"):
        validate_summary(bad)
    bad = copy.deepcopy(d)
    bad["latency"] = 3
    with pytest.raises(TraceError, match=re.escape("missing 'latency.ttft_s'")):
        validate_summary(bad)


def test_render_table_has_units() -> None:
    table = render_table(full_summary())
    console = Console(width=100, record=True)
    console.print(table)
    text = console.export_text()
    assert "TTFT" in text and "22 ms" in text
    assert "mJ" in text  # energy/token
    assert "tok/s" in text and "KiB" in text
    empty = Console(width=100, record=True)
    empty.print(render_table(build_summary(RunData())))
    assert "—" in empty.export_text()


def test_fmt_units() -> None:
    assert _fmt(0.0123, "s") == "12.3 ms"
    assert _fmt(0.00123, "J") == "1.23 mJ"
    assert _fmt(2.5e-6, "s") == "2.5 µs"
    assert _fmt(1.5, "W") == "1.5 W"
    assert _fmt(0, "J") == "0 J"
    assert _fmt(5e-12, "J") == "5e-12 J"
    assert _fmt(3 * 1024 * 1024, "B") == "3.0 MiB"
    assert _fmt(100, "B") == "100 B"
    assert _fmt(42.0, "") == "42"
    assert _fmt(None, "s") == "—"


def test_gap_phases_are_null_not_zero() -> None:
    d = full_summary()  # block 10 (sensor 1.0-1.1 s) covers the whole prefill phase
    assert d["power"]["prefill_energy_j"] is None
    assert d["power"]["decode_energy_j"] > 0
    assert d["power"]["per_token_j"]["mean"] > 0
