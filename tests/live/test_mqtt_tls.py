"""mqtts:// for real: a CA, a broker and a client certificate made with ``openssl``, a Mosquitto
with a TLS listener and one that requires client certificates; ``record --publish`` and
``collect`` through both, and the refusals (typed, naming the remedy, before anything is
recorded). Key and certificate contents never reach the output or the logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.live.mqtt import BrokerTLSError, MqttConnection, parse_broker_url

from .broker import Broker, Certs, free_port, make_certs, tls_listener

CLI = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]
RECORD = ["record", "--device", "emu:rp2040", "--run", "--tokens", "4", "--trace-level",
          "tokens"]


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Certs, int, int]]:
    """A broker with a TLS listener and a client-certificate one: (broker, certs, tls port,
    mutual-TLS port)."""
    certs = make_certs(tmp_path / "certs")
    tls, mtls = free_port(), free_port()
    broker = Broker(tmp_path / "broker", extra=[
        *tls_listener(tls, certs), *tls_listener(mtls, certs, require_certificate=True)])
    broker.start()
    yield broker, certs, tls, mtls
    broker.stop()


def _secrets(certs: Certs) -> list[str]:
    """Lines of the key files (their contents must never be shown)."""
    return [line for key in (certs.client_key, certs.server_key)
            for line in key.read_text().splitlines() if "-----" not in line and line]


def _collect(url: str, out: Path, *mqtt: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "collect", "--broker", url, "--out", str(out), "--sessions",
                             "1", "--duration", "60", "--json", *mqtt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})


def _collected(collect: subprocess.Popen[str], out: Path, secrets: list[str]) -> None:
    stdout, stderr = collect.communicate(timeout=90)
    assert collect.returncode == 0, stderr
    assert json.loads(stdout)["sessions"] == 1
    (meta,) = out.glob("tls-host/a/*/meta.json")  # the device id: the trace's name
    assert json.loads(meta.read_text())["ok"] is True
    assert json.loads((meta.parent / "summary.json").read_text())["platform"] == "rp2040"
    assert not any(s in stdout + stderr for s in secrets)


@pytest.mark.slow
def test_mqtts_with_a_ca_publishes_and_collect_receives(
        tls_broker: tuple[Broker, Certs, int, int], tmp_path: Path) -> None:
    _, certs, tls, _ = tls_broker
    url = f"mqtts://127.0.0.1:{tls}/fleet"
    collect = _collect(url, tmp_path / "fleet", "--mqtt-ca", str(certs.ca))
    record = subprocess.run([*CLI, *RECORD, "--out", str(tmp_path / "a.h5"), "--publish", url,
                             "--mqtt-ca", str(certs.ca), "--host", "tls-host"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert record.returncode == 0, record.stderr
    assert "not delivered" not in record.stderr
    _collected(collect, tmp_path / "fleet", _secrets(certs))


def test_a_wrong_ca_is_refused_before_anything_is_recorded(
        tls_broker: tuple[Broker, Certs, int, int], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _, certs, tls, _ = tls_broker
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "a.h5"
    result = CliRunner().invoke(cli, [*RECORD, "--out", str(out), "--publish",
                                      f"mqtts://127.0.0.1:{tls}/fleet", "--mqtt-ca",
                                      str(certs.other_ca)])
    assert isinstance(result.exception, BrokerTLSError), result.output
    assert "not trusted" in str(result.exception) and "--mqtt-ca" in str(result.exception)
    assert not out.exists() and not out.with_suffix(".ttraw.zst").exists()
    collect = CliRunner().invoke(cli, ["collect", "--broker", f"mqtts://127.0.0.1:{tls}/fleet",
                                       "--out", str(tmp_path / "fleet"), "--duration", "10"])
    # Without --mqtt-ca the system CAs are used, which never signed the test CA.
    assert isinstance(collect.exception, BrokerTLSError) and "--mqtt-ca" in str(
        collect.exception)


@pytest.mark.slow
def test_client_certificates_are_presented_and_their_absence_is_refused(
        tls_broker: tuple[Broker, Certs, int, int], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _, certs, _, mtls = tls_broker
    caplog.set_level(logging.DEBUG)
    url = f"mqtts://127.0.0.1:{mtls}/fleet"
    client = ["--mqtt-ca", str(certs.ca), "--mqtt-cert", str(certs.client), "--mqtt-key",
              str(certs.client_key)]
    out = tmp_path / "bare.h5"
    refused = CliRunner().invoke(cli, [*RECORD, "--out", str(out), "--publish", url,
                                       "--mqtt-ca", str(certs.ca)])
    assert isinstance(refused.exception, BrokerTLSError), refused.output
    assert "requires a client certificate" in str(refused.exception)
    assert "--mqtt-cert" in str(refused.exception) and not out.exists()
    # The broker's reason, read without writing first (what a connection that met a bare EOF
    # where the alert was asks it, before it gives up).
    probe = MqttConnection(parse_broker_url(url, cafile=certs.ca))._probe_tls()
    assert probe is not None and "certificate required" in probe
    collect = _collect(url, tmp_path / "fleet", *client)
    record = CliRunner().invoke(cli, [*RECORD, "--out", str(tmp_path / "a.h5"), "--publish",
                                      url, "--host", "tls-host", *client])
    assert record.exit_code == 0, record.output
    secrets = _secrets(certs)
    _collected(collect, tmp_path / "fleet", secrets)
    shown = refused.output + record.output + caplog.text
    for command in ("record", "collect"):
        shown += CliRunner().invoke(cli, [command, "--help"]).output
    assert secrets and not any(s in shown for s in secrets)
