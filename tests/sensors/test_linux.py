"""Linux power sources against fake sysfs trees."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tinytelem.errors import SensorError
from tinytelem.records import PowerBlock, Record
from tinytelem.sensors.linux import (
    LinuxPowerSensor,
    discover,
    parse_pmic_adc,
    read_channel,
    select,
)

PMIC = """\
   3V7_WL_SW_A current(0)=0.00390372A
     3V3_SYS_A current(1)=0.05660616A
    VDD_CORE_A current(7)=1.50000000A
    VDD_CORE_V volt(15)=0.80000000V
     3V3_SYS_V volt(9)=3.30000000V
   garbage line
"""


def _w(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def no_pmic(args: list[str]) -> str:
    raise SensorError("vcgencmd not found")


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    rapl = tmp_path / "sys/class/powercap/intel-rapl:0"
    _w(rapl / "name", "package-0")
    _w(rapl / "energy_uj", "1000000")
    _w(rapl / "max_energy_range_uj", "262143328850")
    _w(tmp_path / "sys/class/powercap/intel-rapl:0:0/name", "core")
    _w(tmp_path / "sys/class/powercap/intel-rapl:0:0/energy_uj", "5")
    hw = tmp_path / "sys/class/hwmon/hwmon0"
    _w(hw / "name", "ina226")
    _w(hw / "power1_input", "1250000")
    hw1 = tmp_path / "sys/class/hwmon/hwmon1"
    _w(hw1 / "name", "ina3221")
    _w(hw1 / "curr1_input", "500")
    _w(hw1 / "in1_input", "5000")
    _w(hw1 / "in1_label", "VDD_IN")
    _w(hw1 / "curr2_input", "100")  # no voltage: skipped
    iio = tmp_path / "sys/bus/i2c/drivers/ina3221x/0-0040/iio:device0"
    _w(iio / "in_power0_input", "2345")
    _w(iio / "rail_name_0", "VDD_SYS_GPU")
    return tmp_path


def test_sensors_linux_pmic_parse() -> None:
    rails = parse_pmic_adc(PMIC)
    assert rails == pytest.approx({"3V3_SYS": 0.05660616 * 3.3, "VDD_CORE": 1.2})


def test_sensors_linux_discover_and_read(fake_root: Path) -> None:
    chans = discover(fake_root, runner=lambda a: PMIC)
    specs = [c.spec for c in chans]
    assert specs == ["rapl:0-package-0", "rapl:0:0-core", "hwmon:ina226/power1",
                     "jetson:ina3221/VDD_IN", "jetson:VDD_SYS_GPU", "rpi5-pmic:total",
                     "rpi5-pmic:3V3_SYS", "rpi5-pmic:VDD_CORE"]
    by = {c.spec: c for c in chans}
    assert read_channel(by["hwmon:ina226/power1"]) == pytest.approx(1.25)
    assert read_channel(by["jetson:ina3221/VDD_IN"]) == pytest.approx(2.5)
    assert read_channel(by["jetson:VDD_SYS_GPU"]) == pytest.approx(2.345)
    assert read_channel(by["rapl:0-package-0"]) == 1_000_000
    assert read_channel(by["rpi5-pmic:total"], lambda a: PMIC) == pytest.approx(1.2 + 0.1868,
                                                                                abs=1e-3)
    assert read_channel(by["rpi5-pmic:VDD_CORE"], lambda a: PMIC) == pytest.approx(1.2)
    assert select("rapl", fake_root, no_pmic).name == "0-package-0"
    assert select("jetson:VDD_IN", fake_root, no_pmic).kind == "hwmon-iv"
    with pytest.raises(SensorError, match="not available here"):
        select("rpi5-pmic", fake_root, no_pmic)
    with pytest.raises(SensorError, match=r"not available here.*present: none"):
        select("rapl", fake_root / "empty", no_pmic)


def test_sensors_linux_rapl_wrap(fake_root: Path) -> None:
    ch = select("rapl", fake_root, no_pmic)
    s = LinuxPowerSensor(ch)
    assert s.power_from(ch.max_uj - 1_000_000, 10.0) is None
    # wrapped: 1 J before the wrap + 2 J after, in 0.5 s -> 6 W
    assert s.power_from(2_000_000, 10.5) == pytest.approx(6.0)
    assert s.statistics().wraps == 1


async def test_sensors_linux_sensor_actor(fake_root: Path) -> None:
    energy = fake_root / "sys/class/powercap/intel-rapl:0/energy_uj"
    ch = select("rapl", fake_root, no_pmic)
    t = [0.0]
    counter = [0]

    def runner(a: list[str]) -> str:
        return PMIC

    sensor = LinuxPowerSensor(ch, rate_hz=200.0, batch=5, runner=runner)
    send, recv = trio.open_memory_channel[Record](10)
    got: list[PowerBlock] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await n.start(sensor.run, send)
            async with recv:
                while len(got) < 3:
                    counter[0] += 1
                    energy.write_text(f"{1_000_000 + counter[0] * 10_000}\n")
                    try:
                        r = recv.receive_nowait()
                        assert isinstance(r, PowerBlock)
                        got.append(r)
                    except trio.WouldBlock:
                        await trio.sleep(0.002)
            n.cancel_scope.cancel()
    assert [b.first_index for b in got] == [0, 5, 10]
    assert all(b.voltage_v == 1.0 and (b.current_a >= 0).all() for b in got)
    assert sensor.statistics().samples >= 15
    del t
