"""The publisher: what an MQTT subscriber gets is what a websocket client gets, per device;
the per-run summary from device time."""

from __future__ import annotations

from pathlib import Path

import trio

from tinytelem.client import RunMessage, TokenMessage, connect
from tinytelem.live.mqtt import MqttConnection, parse_broker_url
from tinytelem.live.publish import Publisher, RunFold, payload_codec
from tinytelem.live.schema import decode
from tinytelem.protocol.enums import TraceLevel
from tinytelem.session.lab import run_lab
from tinytelem.session.options import RecordOptions
from tinytelem.session.serve import make_streamer
from tinytelem.trace.reader import open_trace

from .broker import Broker


def test_run_fold_measures_the_run_in_device_time() -> None:
    fold = RunFold()
    assert fold.take({"type": "run", "event": "begin", "run_id": 3, "n_prompt": 2,
                      "device_s": 1.0, "host_s": 10.0}) is None
    for i, t in enumerate((1.1, 1.2, 1.5, 1.6, 1.7)):
        fold.take({"type": "token", "phase": 0 if i < 2 else 1, "device_s": t})
    done = fold.take({"type": "run", "event": "end", "run_id": 3, "n_generated": 3,
                      "status": 0, "device_s": 1.8, "host_s": 11.0})
    assert done is not None
    assert done["run_id"] == 3 and abs(done["ttft_s"] - 0.5) < 1e-9
    assert abs(done["decode_tok_s"] - 2 / 0.2) < 1e-6
    assert done["tokens_received"] == {"prompt": 2, "decode": 3}


async def test_websocket_and_mqtt_see_the_same_run(tmp_path: Path) -> None:
    mqtt_got: list[dict] = []
    with Broker(tmp_path / "b") as broker, trio.fail_after(60):
        config = parse_broker_url(f"{broker.url}/fleet", env={})
        sub = MqttConnection(config, subscriptions=(("fleet/#", 1),),
                             on_message=lambda t, p: mqtt_got.append(
                                 {**decode(p.decode() if payload_codec(p) == "json" else p),
                                  "_topic": t}))
        publisher = Publisher(config, host="hostA", codec="json")
        streamer = make_streamer("ws://127.0.0.1:0", None, None, None)
        options = RecordOptions(device="emu:esp32s3", out=tmp_path / "esp.h5", run=True,
                                n_tokens=24, trace_level=TraceLevel.TOKENS, sensor="sim",
                                sensor_rate_hz=10_000.0)
        ws_got: list[object] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(sub.run)
            await sub.connected_event.wait()
            await nursery.start(streamer.listen)
            ready = trio.Event()

            async def watch() -> None:
                assert streamer.url is not None
                async with connect(streamer.url) as stream:
                    await stream.subscribe()
                    ready.set()
                    async for message in stream:
                        ws_got.append(message)

            nursery.start_soon(watch)
            await ready.wait()
            await streamer.wait_subscribed(1)
            await trio.sleep(0.3)  # the SUBSCRIBE reached the broker long ago; be generous
            results = await run_lab([("esp", options)], trio.Event(),
                                    outlets=[streamer, publisher], host="hostA")
            assert results[0].ok
            while not any(m["type"] == "session_summary" for m in mqtt_got):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    ws_tokens = [(m.index, m.token_id, m.device_s) for m in ws_got
                 if isinstance(m, TokenMessage)]
    mq_tokens = [(m["index"], m["token_id"], m["device_s"]) for m in mqtt_got
                 if m["type"] == "token"]
    with open_trace(tmp_path / "esp.h5") as tr:
        n_trace = len(tr.tokens)
    assert ws_tokens == mq_tokens and len(ws_tokens) == n_trace > 24
    ws_runs = [(m.event, m.run_id) for m in ws_got if isinstance(m, RunMessage)]
    mq_runs = [(m["event"], m["run_id"]) for m in mqtt_got if m["type"] == "run"]
    assert ws_runs == mq_runs == [("begin", 1), ("end", 1)]
    assert {m["_topic"] for m in mqtt_got if m["type"] == "token"} == {
        "fleet/hostA/esp/token"}
    assert all(m["device_id"] == "esp" and m["host"] == "hostA" for m in mqtt_got)
    run_summary = next(m for m in mqtt_got if m["type"] == "run_summary")
    session = next(m for m in mqtt_got if m["type"] == "session_summary")
    assert run_summary["run_uid"] == session["run_uid"] == results[0].run_uid
    assert run_summary["n_generated"] == 24
    assert session["summary"]["schema"] == "tinytelem.summary/1"
    assert any(m["type"] == "summary" and m["level"] == "100ms" for m in mqtt_got)
