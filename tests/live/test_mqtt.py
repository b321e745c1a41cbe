"""The trio-driven MQTT connection against a real Mosquitto: publish, subscribe, outages,
refused credentials; and the broker URL's credential rules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from tinytelem.errors import ConfigError, LinkError
from tinytelem.live.mqtt import BrokerRefused, MqttConnection, OutMessage, parse_broker_url

from .broker import Broker

SECRET = "s3cret-Pa55-never-logged"


def test_broker_url_credentials_from_url_env_and_file(tmp_path: Path) -> None:
    c = parse_broker_url("mqtt://alice:p%40ss@broker.lan/lab/a", env={})
    assert (c.host, c.port, c.prefix, c.username, c.password) == (
        "broker.lan", 1883, "lab/a", "alice", "p@ss")
    assert "p@ss" not in repr(c) and "p@ss" not in c.display()
    assert c.display() == "mqtt://alice@broker.lan:1883/lab/a"
    env = {"TINYTELEM_MQTT_USERNAME": "bob", "TINYTELEM_MQTT_PASSWORD": SECRET}
    c = parse_broker_url("mqtts://broker.lan", env=env)
    assert (c.port, c.prefix, c.username, c.password, c.tls) == (
        8883, "tinytelem", "bob", SECRET, True)
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    assert parse_broker_url("mqtt://bob@h/x", password_file=pw, env={}).password == "from-file"


@pytest.mark.parametrize(("url", "says"), [
    ("http://h/x", "mqtt://host"),
    ("mqtt:///x", "mqtt://host"),
    ("mqtt://h/a/+/b", "may not hold"),
    (f"mqtt://:{SECRET}@h/x", "needs a username"),
])
def test_bad_broker_urls_never_echo_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_broker_url(url, env={})
    assert SECRET not in str(info.value)


async def test_publish_and_subscribe_through_a_real_broker(tmp_path: Path) -> None:
    got: list[tuple[str, bytes]] = []
    with Broker(tmp_path / "b") as broker, trio.fail_after(30):
        config = parse_broker_url(f"{broker.url}/t", env={})
        sub = MqttConnection(config, subscriptions=(("t/#", 1),),
                             on_message=lambda t, p: got.append((t, p)))
        pub = MqttConnection(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(sub.run)
            await sub.connected_event.wait()
            await trio.sleep(0.2)  # the SUBSCRIBE reaches the broker
            await nursery.start(pub.run)
            for i in range(500):
                pub.offer(OutMessage(f"t/h/d/{'run' if i % 50 == 0 else 'token'}",
                                     str(i).encode(), 1 if i % 50 == 0 else 0, "x"))
            assert await pub.wait_drained(10)
            while len(got) < 500:
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    assert sorted(int(p) for _, p in got) == list(range(500))
    stats = pub.statistics()
    assert stats.acked == 10 and stats.dropped == 0 and stats.published == 500


async def test_qos1_waits_out_an_outage_and_qos0_is_dropped_and_counted(
        tmp_path: Path) -> None:
    got: list[bytes] = []
    with Broker(tmp_path / "b") as broker, trio.fail_after(40):
        config = parse_broker_url(f"{broker.url}/t", env={})
        pub = MqttConnection(config, bulk_queue=100)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run)
            await pub.connected_event.wait()
            broker.stop()
            while pub.connected:
                await trio.sleep(0.05)
            for i in range(20):
                pub.offer(OutMessage("t/h/d/run_summary", b"kept-%d" % i, 1, "run_summary"))
            for _ in range(1000):  # never blocks: the oldest QoS 0 messages go
                pub.offer(OutMessage("t/h/d/token", b"x", 0, "token"))
            assert pub.statistics().dropped_by_class == {"token": 900}
            broker.start()
            sub = MqttConnection(config, subscriptions=(("t/+/+/run_summary", 1),),
                                 on_message=lambda t, p: got.append(p))
            await nursery.start(sub.run)
            await sub.connected_event.wait()
            # The publisher may already have resent before the subscriber subscribed: what
            # matters here is that it drains once the broker is back.
            assert await pub.wait_drained(20)
            nursery.cancel_scope.cancel()
    stats = pub.statistics()
    assert stats.outages == 1 and stats.connects == 2 and stats.acked == 20


async def test_wrong_password_is_a_typed_error_without_the_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Broker(tmp_path / "b", users={"alice": "right-password"}) as broker:
        config = parse_broker_url(f"mqtt://alice@127.0.0.1:{broker.port}/t",
                                  env={"TINYTELEM_MQTT_PASSWORD": SECRET})
        with trio.fail_after(20), pytest.raises(BrokerRefused) as info:
            await MqttConnection(config).run()
        good = parse_broker_url(f"mqtt://alice@127.0.0.1:{broker.port}/t",
                                env={"TINYTELEM_MQTT_PASSWORD": "right-password"})
        conn = MqttConnection(good)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                await conn.connected_event.wait()
                nursery.cancel_scope.cancel()
    assert isinstance(info.value, LinkError)
    text = str(info.value)
    assert "alice" in text and "password" in text.lower() and SECRET not in text
    assert SECRET not in caplog.text and "right-password" not in caplog.text
