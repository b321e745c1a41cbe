"""Calibration fit, files, CLI; sensor specs; the Joulescope actor against a fake driver."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from click.testing import CliRunner

from tinytelem.cli.calibrate import calibrate
from tinytelem.cli.sensors import sensors
from tinytelem.errors import ConfigError, SensorError
from tinytelem.records import PowerBlock, PowerGap, Record
from tinytelem.sensors.calibration import Calibration, fit_linear, load_reference_csv
from tinytelem.sensors.ina import InaBridgeSensor
from tinytelem.sensors.joulescope import JoulescopeSensor, driver_available
from tinytelem.sensors.linux import LinuxPowerSensor
from tinytelem.sensors.open import open_sensor, parse_sensor_spec
from tinytelem.sensors.ppk2 import PPK2Sensor

ROOT = Path(__file__).resolve().parents[2]


def test_sensors_calibration_fit_recovers_gain_offset() -> None:
    rng = np.random.default_rng(11)
    ref = np.linspace(0, 0.5, 40)
    gain, offset = 1.0173, -2.5e-4
    measured = (ref - offset) / gain + rng.normal(0, 1e-7, ref.size)
    fit = fit_linear(measured, ref)
    assert fit.gain == pytest.approx(gain, rel=1e-3)
    assert fit.offset == pytest.approx(offset, rel=1e-3)
    assert abs(fit.gain - gain) < 5 * fit.gain_u and fit.residual_rms < 3e-7
    weighted = fit_linear(measured, ref, np.full(ref.size, 1e-7))
    assert weighted.gain == pytest.approx(gain, rel=1e-3)
    assert fit.uncertainty_at(0.1) > 0
    with pytest.raises(ConfigError, match="two or more"):
        fit_linear([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="readings but"):
        fit_linear([1.0], [1.0, 2.0])


def test_sensors_calibration_file_roundtrip_and_apply(tmp_path: Path) -> None:
    m, r, u = load_reference_csv(ROOT / "calibration/examples/ppk2-reference.csv")
    cal = Calibration("ppk2", "42", "2025-02-01", fit_linear(m, r, u), notes='a "q"')
    p = tmp_path / "c.toml"
    cal.save(p)
    back = Calibration.load(p)
    assert back.id == "ppk2-42-2025-02-01" and back.current == cal.current
    x = np.array([0.0, 0.1], dtype=np.float32)
    np.testing.assert_allclose(back.apply_current(x), cal.current.gain * x + cal.current.offset,
                               rtol=1e-6)
    assert back.apply_voltage(3.3) == 3.3 and back.gain_rel_u > 0
    attrs = back.trace_attrs()
    assert attrs["id"] == back.id and attrs["current_gain"] == cal.current.gain
    ex = Calibration.load(ROOT / "calibration/examples/ppk2-13371337.toml")
    assert ex.id == "ppk2-13371337-2025-01-31"
    bad = tmp_path / "bad.toml"
    bad.write_text("[calibration]\nsensor = 'x'\n")
    with pytest.raises(ConfigError, match="needs sensor, serial and date"):
        Calibration.load(bad)
    bad.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Calibration.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Calibration.load(tmp_path / "missing.toml")


def test_sensors_calibrate_cli(tmp_path: Path) -> None:
    csv = tmp_path / "ref.csv"
    ref = np.linspace(0.0, 0.2, 8)
    csv.write_text("measured_a,reference_a\n" + "\n".join(
        f"{float((x + 1e-4) / 0.995)!r},{float(x)!r}" for x in ref) + "\n")
    out = tmp_path / "sub" / "cal.toml"
    res = CliRunner().invoke(calibrate, ["--sensor", "ina:/dev/ttyUSB0", "--serial", "7",
                                         "--reference", str(csv), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["current"]["gain"] == pytest.approx(0.995, rel=1e-9)
    assert data["current"]["offset"] == pytest.approx(-1e-4 * 1, abs=1e-9)
    assert Calibration.load(out).sensor == "ina"
    res = CliRunner().invoke(calibrate, ["--sensor", "ina", "--reference", str(csv),
                                         "--quantity", "voltage", "-o", str(out)])
    assert res.exit_code == 0 and "wrote" in res.output
    assert Calibration.load(out).voltage.gain == pytest.approx(0.995)
    csv.write_text("a,b\n1,2\n")
    res = CliRunner().invoke(calibrate, ["--sensor", "ina", "--reference", str(csv),
                                         "-o", str(out)])
    assert res.exit_code != 0


def test_sensors_cli_list_and_read(tmp_path: Path) -> None:
    hw = tmp_path / "sys/class/hwmon/hwmon0"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina226\n")
    (hw / "power1_input").write_text("500000\n")
    res = CliRunner().invoke(sensors, ["list", "--json", "--sysfs-root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["linux"] == [{"spec": "hwmon:ina226/power1", "source": "hwmon",
                              "kind": "hwmon-power"}]
    res = CliRunner().invoke(sensors, ["list", "--sysfs-root", str(tmp_path / "none")])
    assert res.exit_code == 0 and "not available here" in res.output
    res = CliRunner().invoke(sensors, ["read", "ppk2", "--emulate", "--seconds", "0.6",
                                       "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["samples"] > 10_000 and data["sample_rate_hz"] == 100_000.0
    assert data["gaps"] == 0 and 0 < data["mean_current_a"] < 0.1
    res = CliRunner().invoke(sensors, ["read", "rapl", "--emulate"])
    assert res.exit_code != 0


def test_sensors_open_sensor_specs(tmp_path: Path) -> None:
    assert parse_sensor_spec("ppk2:/dev/x?mode=ampere") == ("ppk2", "/dev/x", {"mode": "ampere"})
    s = open_sensor("ppk2:/dev/x?mode=ampere&voltage_mv=1800")
    assert isinstance(s, PPK2Sensor) and s.mode == "ampere" and s.voltage_v == 1.8
    ina = open_sensor("ina:/dev/ttyUSB0?shunt_ohm=0.05")
    assert isinstance(ina, InaBridgeSensor) and ina.shunt_ohm == 0.05
    assert ina.url == "serial:///dev/ttyUSB0?baud=1000000"
    assert isinstance(open_sensor("joulescope"), JoulescopeSensor)
    with pytest.raises(ConfigError, match="unknown sensor"):
        open_sensor("fluke:1")
    with pytest.raises(ConfigError, match="needs a port"):
        open_sensor("ppk2")
    with pytest.raises(ConfigError, match="needs a port"):
        open_sensor("ina")
    with pytest.raises(ConfigError, match="not a number"):
        open_sensor("ina:/dev/x?shunt_ohm=abc")
    with pytest.raises(SensorError, match="not available here"):
        open_sensor("rapl", sysfs_root=str(tmp_path))
    rapl = tmp_path / "sys/class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("1\n")
    assert isinstance(open_sensor("rapl?rate_hz=10", sysfs_root=str(tmp_path)),
                      LinuxPowerSensor)
    with pytest.raises(ConfigError):
        PPK2Sensor("/dev/x", mode="turbo")


class FakeJoulescope:
    """The slice of pyjoulescope_driver.Driver the actor uses; data comes from a thread."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.subs: dict[str, Any] = {}
        self.published: list[tuple[str, int]] = []
        self.closed: list[str] = []

    def device_paths(self) -> list[str]:
        return self.paths

    def open(self, path: str, mode: str) -> None:
        assert mode == "restore"

    def subscribe(self, topic: str, flags: list[str], fn: Any) -> None:
        self.subs[topic] = fn

    def unsubscribe(self, topic: str, fn: Any) -> None:
        self.subs.pop(topic, None)

    def publish(self, topic: str, value: int, timeout: float = 0) -> None:
        self.published.append((topic, value))
        if topic.endswith("s/i/ctrl") and value == 1:
            threading.Thread(target=self._stream, daemon=True).start()

    def close(self, path: str = "") -> None:
        self.closed.append(path)

    def _stream(self) -> None:
        dev = self.paths[0]
        self.subs[f"{dev}/s/v/!data"](f"{dev}/s/v/!data", {"data": np.full(10, 3.3)})
        sid = 0
        for k in range(6):
            if k == 3:
                sid += 2000  # driver overflow: samples lost
            self.subs[f"{dev}/s/i/!data"](f"{dev}/s/i/!data", {
                "sample_id": sid * 2, "decimate_factor": 2, "sample_rate": 2_000_000,
                "data": np.full(1000, 0.01 * (k + 1), dtype=np.float32)})
            sid += 1000


async def test_sensors_joulescope_against_fake() -> None:
    fake = FakeJoulescope(["u/js220/000415"])
    sensor = JoulescopeSensor("000415", driver_factory=lambda: fake)
    send, recv = trio.open_memory_channel[Record](100)
    got: list[Record] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await n.start(sensor.run, send)
            async with recv:
                async for r in recv:
                    got.append(r)
                    if sum(isinstance(x, PowerBlock) for x in got) == 6:
                        break
            n.cancel_scope.cancel()
    blocks = [r for r in got if isinstance(r, PowerBlock)]
    gaps = [r for r in got if isinstance(r, PowerGap)]
    assert [b.first_index for b in blocks] == [0, 1000, 2000, 5000, 6000, 7000]
    assert [(g.first_index, g.n_missing) for g in gaps] == [(3000, 2000)]
    assert blocks[0].sample_rate_hz == 1_000_000 and blocks[0].voltage_v == pytest.approx(3.3)
    assert ("u/js220/000415/s/i/ctrl", 0) in fake.published and fake.closed
    assert sensor.statistics().missing == 2000
    with pytest.raises(SensorError, match="no Joulescope found"):
        await JoulescopeSensor(driver_factory=lambda: FakeJoulescope([])).run(
            trio.open_memory_channel[Record](1)[0])


def test_sensors_joulescope_real_driver_api() -> None:
    if not driver_available():
        pytest.skip("pyjoulescope_driver not installed: pip install 'tinytelem[joulescope]'")
    from pyjoulescope_driver import Driver

    for name in ("device_paths", "open", "publish", "subscribe", "unsubscribe", "close"):
        assert callable(getattr(Driver, name))
