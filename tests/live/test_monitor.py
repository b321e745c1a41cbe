"""The monitor never says "ok" over missing tokens, shows losses by class, and has --json."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.live.monitor import MonitorState
from tinytelem.live.schema import DroppedMessage, RunMessage, StatsMessage, TokenMessage


def _run(state: MonitorState, indices: list[int], n_prompt: int, n_generated: int) -> None:
    state.update(RunMessage("begin", 0.0, 1.0, 3, n_prompt, n_generated, 0, -1))
    for i in indices:
        state.update(TokenMessage(0.0, 1.0 + i * 1e-3, i, 7, 0 if i < n_prompt else 1))
    state.update(RunMessage("end", 0.0, 2.0, 3, 0, 0, n_generated, 0))


def test_complete_run_reads_ok() -> None:
    s = MonitorState()
    _run(s, list(range(10)), 2, 8)
    assert s.tokens_missing == 0 and s.status == "run 3 ended (ok)"
    assert "LOST" not in s.line(1.0) and s.summary(1.0)["complete"] is True


def test_missing_tokens_are_never_ok_and_losses_are_named() -> None:
    s = MonitorState()
    _run(s, [0, 1, 2, 5, 9], 2, 8)  # 5 of 10 arrived
    s.update(DroppedMessage(120, 120, {"span": 120}, {"span": 120}, server=False))
    s.update(DroppedMessage(40, 40, {"span": 40}, {"span": 40}, server=True))
    assert s.tokens_expected == 10 and s.tokens_missing == 5
    line = s.line(1.0)
    assert "(ok)" not in line
    assert "INCOMPLETE here: 5 of 10 tokens missing" in line
    assert "LOST: 5 tokens, span 120, server span 40" in line
    assert s.dropped == 120 and s.server_dropped == 40
    summary = s.summary(1.0)
    assert summary["complete"] is False
    assert summary["tokens"] == {"prompt": 2, "decode": 3, "expected": 10, "missing": 5}
    assert summary["dropped"] == {"client": 120, "client_by_class": {"span": 120},
                                  "server": 40, "server_by_class": {"span": 40}}
    # A stats message with smaller (older) totals never lowers what was shown.
    s.update(StatsMessage(0.0, 10, 0, 5, 4, 1, True, 0, 0, 0, 0, 0, {"span": 3}))
    assert s.dropped == 120 and s.dropped_by_class["span"] == 120
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(s.renderable(1.0, 120))
    assert "LOST in this view: 5 tokens" in console.export_text()


def test_missing_tokens_show_while_the_run_goes_on() -> None:
    s = MonitorState()
    s.update(RunMessage("begin", 0.0, 1.0, 1, 1, 50, 0, -1))
    for i in (0, 1, 2, 6):
        s.update(TokenMessage(0.0, 1.0 + i * 1e-3, i, 7, 0 if i < 1 else 1))
    assert s.tokens_missing == 3 and "LOST: 3 tokens" in s.line(0.5)


@pytest.mark.slow
def test_monitor_400_tokens_with_spans_gets_every_token_and_json_summary() -> None:
    """Issue 18 §1: with span tracing on, 400 tokens used to arrive as ~182, with "ok"."""
    result = CliRunner().invoke(cli, ["monitor", "--device", "emu:esp32s3", "--run",
                                      "--tokens", "400", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["run"]["ended"] and summary["run"]["device_status"] == 0
    tokens = summary["tokens"]
    assert tokens["decode"] == 400 and tokens["missing"] == 0
    assert tokens["expected"] == tokens["prompt"] + 400
    assert summary["complete"] is True and summary["run"]["status"].endswith("(ok)")
    # Spans are droppable, tokens are not: whatever the streamer had to drop was spans.
    assert set(summary["dropped"]["server_by_class"]) <= {"span"}


def test_a_lab_stream_is_shown_per_device() -> None:
    from tinytelem.live.monitor import FleetMonitorState
    from tinytelem.live.schema import parse_message

    s = FleetMonitorState()
    s.update(parse_message({"type": "hello", "schema": "tinytelem.stream/1", "session": {},
                            "levels": [], "level_seconds": [], "sample_rate_hz": None}))
    for device_id, n in (("esp", 3), ("rp", 2)):
        s.update(parse_message({"type": "run", "event": "begin", "host_s": 0.0,
                                "device_s": 0.0, "run_id": 1, "n_prompt": 0, "n_tokens": n,
                                "device_id": device_id}))
        for i in range(n):
            s.update(parse_message({"type": "token", "host_s": 0.0, "device_s": 0.1 * (i + 1),
                                    "index": i, "token_id": 5, "phase": 1,
                                    "device_id": device_id}))
        s.update(parse_message({"type": "run", "event": "end", "host_s": 1.0, "device_s": 1.0,
                                "run_id": 1, "n_generated": n, "status": 0,
                                "device_id": device_id}))
    s.update(parse_message({"type": "bye", "reason": "done"}))
    summary = s.summary(1.0)
    devices = summary["devices"]
    assert isinstance(devices, dict) and set(devices) == {"esp", "rp"}
    assert devices["esp"]["tokens"]["decode"] == 3 and devices["rp"]["tokens"]["decode"] == 2
    assert devices["esp"]["complete"] is True and summary["bye"] is True
    lines = s.line(1.0).splitlines()
    assert [x.split()[0] for x in lines] == ["[esp]", "[rp]"] and "ended (ok)" in lines[0]
    single = FleetMonitorState()
    single.update(parse_message({"type": "bye", "reason": "done"}))
    assert single.summary(1.0)["schema"] == "tinytelem.monitor/1" and "devices" not in \
        single.summary(1.0)
