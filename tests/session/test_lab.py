"""Lab sessions: the session file, one trace per device, a failing device as a bulkhead, and
one websocket server for all devices with the device id in every message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tinytelem.client import ByeMessage, HelloMessage, connect
from tinytelem.errors import ConfigError
from tinytelem.protocol.enums import TraceLevel
from tinytelem.session.lab import lab_devices, load_lab, parse_lab, run_lab
from tinytelem.session.options import RecordOptions
from tinytelem.session.serve import make_streamer
from tinytelem.trace.reader import open_trace

LAB = """
name = "bench-a"
[devices.esp]
url = "emu:esp32s3"
[devices.rp]
url = "emu:rp2040"
[devices.dead]
url = "tcp://127.0.0.1:9"
[sensors.esp-power]
spec = "sim"
measures = "esp"
rate = 20000
"""


def test_session_file_names_devices_sensors_and_what_measures_what(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(LAB)
    lab = load_lab(path)
    assert lab.name == "bench-a"
    by_id = {d.id: d for d in lab.devices}
    assert by_id["esp"].sensor == "sim" and by_id["esp"].sensor_rate_hz == 20000
    assert by_id["rp"].sensor == "none" and by_id["dead"].url == "tcp://127.0.0.1:9"
    base = RecordOptions(device="", out=tmp_path / "x.h5", sensor_rate_hz=1000.0)
    options = dict(lab_devices(lab, base, tmp_path / "runs"))
    assert options["esp"].out == tmp_path / "runs" / "esp.h5"
    assert options["rp"].sensor_rate_hz == 1000.0 and options["esp"].sensor_rate_hz == 20000


@pytest.mark.parametrize(("doc", "says"), [
    ({}, "no devices"),
    ({"devices": {"a b": {"url": "emu:esp32s3"}}}, "not a usable name"),
    ({"devices": {"a": {}}}, "needs url"),
    ({"devices": {"a": {"url": "emu:esp32s3", "baud": 1}}}, "unknown key"),
    ({"devices": {"a": {"url": "emu:esp32s3"}},
      "sensors": {"s": {"spec": "sim", "measures": "b"}}}, "no device of this file"),
    ({"devices": {"a": {"url": "tcp://h:1"}},
      "sensors": {"s": {"spec": "sim", "measures": "a"}}}, "emu: devices only"),
    ({"devices": {"a": {"url": "emu:esp32s3"}},
      "sensors": {"s": {"spec": "sim", "measures": "a"},
                  "t": {"spec": "sim", "measures": "a"}}}, "one power channel"),
    ({"devices": {"a": {"url": "emu:esp32s3"}},
      "sensors": {"s": {"spec": "sim", "measures": "a", "rate": True}}}, "rate must be"),
    ({"device": {}}, "unknown key"),
])
def test_session_file_mistakes_are_config_errors_naming_the_entry(doc: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_lab(doc, "lab.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text("[devices.a\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_lab(path)


async def test_lab_records_each_device_streams_all_and_survives_a_dead_one(
        tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(LAB)
    base = RecordOptions(device="", out=tmp_path / "unused.h5", run=True, n_tokens=12,
                         trace_level=TraceLevel.TOKENS)
    devices = lab_devices(load_lab(path), base, tmp_path / "runs")
    urls: list[str] = []
    streamer = make_streamer("ws://127.0.0.1:0", None, None, None,
                             on_listening=urls.append)
    stop = trio.Event()
    got: list[object] = []

    async def watch(ready: trio.Event) -> None:
        while not urls:
            await trio.sleep(0.01)
        async with connect(urls[0]) as stream:
            await stream.subscribe(level="100ms", rate_hz=20)
            ready.set()
            async for message in stream:
                got.append(message)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(streamer.listen)  # the lab's serve() then only waits
            ready = trio.Event()
            nursery.start_soon(watch, ready)
            await ready.wait()
            await streamer.wait_subscribed(1)  # so the client sees every device from the start
            results = await run_lab(devices, stop, outlets=[streamer],
                                    report=tmp_path / "runs" / "lab.json", host="hostA")
            assert [r.ok for r in results] == [True, True, False]
            while not got or not isinstance(got[-1], ByeMessage):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    report = json.loads((tmp_path / "runs" / "lab.json").read_text())
    assert report["host"] == "hostA"
    assert {d["id"]: d["ok"] for d in report["devices"]} == {"esp": True, "rp": True,
                                                              "dead": False}
    assert "connection refused" in report["devices"][2]["error"]
    for device_id, platform in (("esp", "esp32s3"), ("rp", "rp2040")):
        with open_trace(tmp_path / "runs" / f"{device_id}.h5") as tr:
            assert tr.attrs["platform"] == platform
            assert len(tr.tokens) >= 12
    with open_trace(tmp_path / "runs" / "esp.h5") as tr:
        assert tr.n_power_samples > 0  # the sim sensor measured esp, and only esp
    with open_trace(tmp_path / "runs" / "rp.h5") as tr:
        assert tr.n_power_samples == 0
    hello = got[0]
    assert isinstance(hello, HelloMessage)
    assert isinstance(got[-1], ByeMessage)
    tokens: dict[str, int] = {}
    for message in got[1:-1]:
        device_id = getattr(message, "device_id", None)
        assert device_id in ("esp", "rp"), message  # every message says whose it is
        if type(message).__name__ == "TokenMessage":
            tokens[device_id] = tokens.get(device_id, 0) + 1
    assert tokens.get("esp", 0) >= 12 and tokens.get("rp", 0) >= 12
