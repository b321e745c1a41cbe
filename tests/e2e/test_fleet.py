"""A fleet on one machine: recorder processes publish to one Mosquitto, ``collect`` keeps every
run summary exactly once; a broker outage loses nothing locally and delays the summaries only;
credentials stay out of logs, ``--help`` and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinytelem.trace.reader import open_trace

from ..live.broker import Broker, mosquitto_binary

CLI = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]
SECRET = "fleet-Secret-9d7c-never-shown"


def _tt(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, **kw)  # type: ignore


def _collect(broker: Broker, out: Path, *extra: str) -> subprocess.Popen[str]:
    proc = _tt("collect", "--broker", f"{broker.url}/fleet", "--out", str(out), "--json",
               *extra)
    time.sleep(2.0)  # it subscribes (a persistent session) before the recorders publish
    return proc


def _stop(proc: subprocess.Popen[str]) -> dict:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return dict(json.loads(out))


def _wait_for(check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _trace_runs(trace: Path) -> list[int]:
    with open_trace(trace) as tr:
        return sorted(int(r["run_id"]) for r in tr.runs)


@pytest.mark.slow
def test_three_hosts_publish_and_collect_keeps_every_summary_once(tmp_path: Path) -> None:
    mosquitto_binary()
    with Broker(tmp_path / "broker") as broker:
        collect = _collect(broker, tmp_path / "collected")
        recorders = [_tt("record", "--device", "emu:esp32s3", "--out",
                         str(tmp_path / f"host{i}.h5"), "--run", "--tokens", "8", "--repeat",
                         "3", "--trace-level", "tokens", "--publish", f"{broker.url}/fleet",
                         "--host", f"host{i}") for i in range(3)]
        for proc in recorders:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        metas = lambda: list((tmp_path / "collected").glob("*/*/*/meta.json"))  # noqa: E731
        _wait_for(lambda: len(metas()) == 3, 20)
        counts = _stop(collect)
    assert counts["sessions"] == 3 and counts["runs"] == 9 and counts["malformed"] == 0
    for i in range(3):
        (where,) = (tmp_path / "collected" / f"host{i}" / f"host{i}").iterdir()
        runs = [json.loads(x) for x in (where / "runs.jsonl").read_text().splitlines()]
        assert sorted(r["run_id"] for r in runs) == _trace_runs(tmp_path / f"host{i}.h5")
        with open_trace(tmp_path / f"host{i}.h5") as tr:
            local = tr.summary
        remote = json.loads((where / "summary.json").read_text())
        # What the recorder printed: the trace's summary, plus the rolling summary of --repeat.
        assert json.dumps({k: remote[k] for k in local}, sort_keys=True) == json.dumps(
            local, sort_keys=True)
        assert len(remote["runs"]) == 3 and "rolling" in remote
    compare = subprocess.run([*CLI, "compare", "--json",
                              *map(str, (tmp_path / "collected").glob("*/*/*"))],
                             check=False, capture_output=True, text=True, timeout=60)
    assert compare.returncode == 0, compare.stderr


@pytest.mark.slow
def test_a_20_s_broker_outage_loses_nothing_and_delays_the_summaries(tmp_path: Path) -> None:
    mosquitto_binary()
    with Broker(tmp_path / "broker") as broker:
        collect = _collect(broker, tmp_path / "collected")
        trace = tmp_path / "host0.h5"
        rec = _tt("record", "--device", "emu:esp32s3", "--out", str(trace), "--run",
                  "--tokens", "8", "--repeat", "forever", "--interval", "1", "--duration",
                  "28", "--trace-level", "tokens", "--sensor", "sim", "--publish",
                  f"{broker.url}/fleet", "--host", "host0", "--json")
        time.sleep(5)
        broker.stop()
        outage_began = time.monotonic()
        time.sleep(20)
        broker.start()
        _out, err = rec.communicate(timeout=90)
        assert rec.returncode == 0, err
        assert time.monotonic() - outage_began >= 20
        runs_file = lambda: list((tmp_path / "collected").glob("host0/host0/*/runs.jsonl"))  # noqa: E731
        _wait_for(lambda: list((tmp_path / "collected").glob("host0/host0/*/meta.json")), 30)
        counts = _stop(collect)
    local_runs = _trace_runs(trace)
    assert len(local_runs) >= 15  # runs went on through the outage
    (runs_path,) = runs_file()
    remote = sorted(json.loads(x)["run_id"] for x in runs_path.read_text().splitlines())
    assert remote == local_runs, "every run's summary, the outage's too, exactly once"
    assert counts["sessions"] == 1
    with open_trace(trace) as tr:
        assert len(tr.link_gaps) == 0 and len(tr.power_gaps) == 0
        assert tr.group_attrs("power").get("dropped_samples", 0) == 0
        assert tr.group_attrs("link")["lost_frames"] == 0
        assert tr.n_power_samples > 0


def test_credentials_stay_out_of_help_logs_and_errors(tmp_path: Path) -> None:
    help_text = subprocess.run([*CLI, "record", "--help"], check=True, capture_output=True,
                               text=True,
                               env={**os.environ, "TINYTELEM_MQTT_PASSWORD": SECRET},
                               timeout=60).stdout
    assert "--publish" in help_text and SECRET not in help_text
    with Broker(tmp_path / "broker", users={"alice": "the-right-one"}) as broker:
        url = f"mqtt://alice@127.0.0.1:{broker.port}/fleet"
        for args, env in (
            (["--publish", url], {"TINYTELEM_MQTT_PASSWORD": SECRET}),
            (["--publish", f"mqtt://alice:{SECRET}@127.0.0.1:{broker.port}/fleet"], {}),
        ):
            proc = _tt("record", "--device", "emu:esp32s3", "--out",
                       str(tmp_path / "r.h5"), "--run", "--tokens", "4", "--overwrite", *args,
                       env=env)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode != 0
            assert "refused user 'alice'" in err and "password" in err, err
            assert SECRET not in out + err
        collect = _tt("collect", "--broker", url, "--out", str(tmp_path / "c"),
                      env={"TINYTELEM_MQTT_PASSWORD": SECRET})
        out, err = collect.communicate(timeout=60)
        assert collect.returncode != 0 and "refused user 'alice'" in err
        assert SECRET not in out + err
