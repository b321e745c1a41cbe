"""The collector keeps each summary exactly once, survives its own restart, and never raises
on a malformed message."""

from __future__ import annotations

import json
from pathlib import Path

from tinytelem.analysis.compare import load_run_summary
from tinytelem.live.collect import Collector
from tinytelem.live.schema import encode

SUMMARY = {"schema": "tinytelem.summary/1", "platform": "esp32s3", "ttft_s": 0.5}


def _msg(m: dict, codec: str = "msgpack") -> bytes:
    payload = encode(m, codec)  # type: ignore[arg-type]
    return payload.encode() if isinstance(payload, str) else payload


def test_duplicates_are_kept_once_and_compare_reads_the_result(tmp_path: Path) -> None:
    c = Collector(tmp_path, prefix="lab")
    session = {"type": "session_summary", "run_uid": "h1-esp-1", "ok": True,
               "summary": SUMMARY, "host": "h1", "device_id": "esp"}
    run = {"type": "run_summary", "run_uid": "h1-esp-1", "run_id": 1, "ttft_s": 0.5}
    for _ in range(3):  # QoS 1 may deliver each more than once
        c.handle("lab/h1/esp/session_summary", _msg(session))
        c.handle("lab/h1/esp/run_summary", _msg(run, "json"))
    c.handle("lab/h1/esp/run_summary", _msg({**run, "run_id": 2}))
    s = c.statistics()
    assert (s.sessions, s.runs, s.duplicates, s.malformed) == (1, 2, 4, 0)
    where = tmp_path / "h1" / "esp" / "h1-esp-1"
    summary, _ = load_run_summary(where)
    assert summary == SUMMARY
    assert [json.loads(x)["run_id"] for x in (where / "runs.jsonl").read_text().splitlines()] \
        == [1, 2]
    again = Collector(tmp_path, prefix="lab")  # a restarted collector knows what it kept
    again.handle("lab/h1/esp/session_summary", _msg(session))
    again.handle("lab/h1/esp/run_summary", _msg(run))
    assert again.statistics().duplicates == 2 and again.statistics().runs == 0


def test_malformed_messages_are_counted_not_raised(tmp_path: Path) -> None:
    c = Collector(tmp_path, prefix="lab", power=True)
    c.handle("lab/h1/esp/session_summary", b"\xc1garbage")
    c.handle("lab/../esp/session_summary", _msg({"type": "session_summary", "run_uid": "x"}))
    c.handle("lab/h1/esp/session_summary", _msg({"type": "session_summary",
                                                 "run_uid": "../../etc"}))
    c.handle("lab/h1/esp/run_summary", _msg({"type": "run_summary", "run_uid": "u"}))
    c.handle("other/h1/esp/summary", _msg({"type": "summary"}))
    assert c.statistics().malformed == 5
    assert not any(tmp_path.iterdir())
    c.handle("lab/h1/esp/summary", _msg({"type": "summary", "mean": [0.1]}))
    assert c.statistics().power_messages == 1
    assert (tmp_path / "h1" / "esp" / "power.jsonl").is_file()
