"""INA219/INA226 bridge: conversion, host driver through a pty emulator, firmware build."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trio

from tinytelem.errors import ProtocolError, SensorError
from tinytelem.protocol.messages import PowerChip, PowerSamples
from tinytelem.records import PowerBlock, PowerGap, Record
from tinytelem.sensors.ina import InaBridgeEmulator, InaBridgeSensor, convert_ina

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware" / "ina_bridge"


def test_sensors_ina_conversion_datasheet_lsbs() -> None:
    cur, volts = convert_ina(PowerChip.INA226, [1000, -40], [2640, 0], 0.1)
    assert cur == pytest.approx([1000 * 2.5e-6 / 0.1, -40 * 2.5e-6 / 0.1])
    assert volts == pytest.approx([3.3, 0.0])
    cur, volts = convert_ina(PowerChip.INA219, [1000], [(825 << 3) | 2], 0.1)
    assert cur == pytest.approx([0.1]) and volts == pytest.approx([3.3])
    with pytest.raises(SensorError, match="unknown power chip"):
        convert_ina(7, [1], [1], 0.1)


def test_sensors_ina_message_roundtrip_and_errors() -> None:
    m = PowerSamples(5, 280_000, 1, (1, -2), (3, 4))
    assert PowerSamples.unpack(m.pack()) == m
    with pytest.raises(ProtocolError):
        PowerSamples.unpack(m.pack()[:-1])
    with pytest.raises(ProtocolError):
        PowerSamples(0, 0, 0, (1,), ()).pack()
    with pytest.raises(ProtocolError):
        PowerSamples.unpack(b"\x00")


def _wave(idx: np.ndarray) -> np.ndarray:
    return np.where(idx % 400 < 100, 0.25, 0.02)


async def test_sensors_ina_driver_through_emulator() -> None:
    emu = InaBridgeEmulator(_wave, rate_hz=4000.0, per_frame=50, drop=((2000, 100),))
    sensor = InaBridgeSensor(emu.url, shunt_ohm=0.1)
    send, recv = trio.open_memory_channel[Record](1000)
    records: list[Record] = []
    with trio.fail_after(15):
        async with trio.open_nursery() as n:
            await n.start(emu.run)
            await n.start(sensor.run, send)
            while sensor.statistics().samples < 6000:
                await trio.sleep(0.05)
            n.cancel_scope.cancel()
    while True:
        try:
            records.append(recv.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    gaps = [(g.first_index, g.n_missing) for g in records if isinstance(g, PowerGap)]
    assert gaps == [(2000, 100)]
    blocks = [b for b in records if isinstance(b, PowerBlock)]
    idx = np.concatenate([np.arange(b.first_index, b.first_index + b.current_a.size)
                          for b in blocks])
    cur = np.concatenate([b.current_a for b in blocks])
    shunt, _bus = emu.raw(0, int(idx.max()) + 1)
    np.testing.assert_allclose(cur, shunt[idx] * 2.5e-6 / 0.1, rtol=1e-6)
    assert np.abs(cur - _wave(idx)).max() < 2.5e-5  # one LSB of quantisation
    assert blocks[0].sample_rate_hz == pytest.approx(4000.0, rel=1e-3)
    assert blocks[0].voltage_v == pytest.approx(3.3, abs=1.25e-3)
    assert sensor.statistics().missing == 100


async def test_sensors_ina_unreachable() -> None:
    sensor = InaBridgeSensor("serial:///nonexistent/ttyUSB9")
    send, _ = trio.open_memory_channel[Record](1)
    with trio.fail_after(5), pytest.raises(SensorError, match="INA bridge"):
        await sensor.run(send)


def _vector_wire() -> str:
    vec = json.loads((ROOT / "tests/vectors/protocol_v1.json").read_text())
    return next(f["wire"] for f in vec["frames"] if f["name"] == "power_samples")


def test_sensors_ina_firmware_encoder_matches_golden_vector(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no host C compiler: install it with `bash scripts/setup-system.sh`")
    out = subprocess.run(["make", "-s", "-C", str(FW), f"BUILD={tmp_path}", "host-test"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == _vector_wire()


def test_sensors_ina_firmware_builds_for_stm32(tmp_path: Path) -> None:
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc missing: install it with `bash scripts/setup-system.sh`")
    for chip in ("TT_CHIP_INA226", "TT_CHIP_INA219"):
        build = tmp_path / chip
        subprocess.run(["make", "-s", "-C", str(FW), f"BUILD={build}", f"CHIP={chip}"],
                       capture_output=True, text=True, check=True, timeout=120)
        elf = (build / "ina_bridge.elf").read_bytes()
        assert elf[:4] == b"\x7fELF" and elf[18] == 40  # e_machine EM_ARM
        assert 1000 < (build / "ina_bridge.bin").stat().st_size < 64 * 1024
