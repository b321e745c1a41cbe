"""PPK2 wire format: the metadata block and the regulator command."""

from __future__ import annotations

import pytest

from tinytelem.errors import SensorError
from tinytelem.sensors.ppk2_emulator import EXAMPLE_METADATA
from tinytelem.sensors.ppk2_protocol import (
    Cmd,
    format_metadata,
    parse_metadata,
    regulator_command,
    regulator_mv,
)

REAL_METADATA = (
    "Calibrated: 0\nR0: 1031.64\nR1: 101.65\nR2: 10.15\nR3: 0.94\nR4: 0.043\n"
    "GS0: 0.0001\nGS1: 0\nGS2: 0\nGS3: 0\nGS4: 0\nGI0: 1\nGI1: 1\nGI2: 1\nGI3: 1\nGI4: 1\n"
    "O0: 112.7\nO1: 73.1\nO2: 71.9\nO3: 81.5\nO4: 94.0\nS0: 0\nS1: 0\nS2: 0\nS3: 0\nS4: 0\n"
    "I0: 0\nI1: 0\nI2: 0\nI3: 0\nI4: 0\nUG0: 1\nUG1: 1\nUG2: 1\nUG3: 1\nUG4: -nan\n"
    "HW: 9173\nmode: 2\nIA: 56\nEND\n"
)


def test_sensors_ppk2_metadata_parse() -> None:
    meta = parse_metadata(REAL_METADATA)
    assert meta.r == (1031.64, 101.65, 10.15, 0.94, 0.043)
    assert meta.gs[0] == pytest.approx(1e-4)
    assert meta.o == (112.7, 73.1, 71.9, 81.5, 94.0)
    assert meta.ug[4] == 1.0  # -nan keeps the default
    assert meta.hw == "9173" and not meta.calibrated
    again = parse_metadata(format_metadata(EXAMPLE_METADATA))
    assert again.arrays() == pytest.approx(EXAMPLE_METADATA.arrays(), rel=1e-5)
    assert again.hw == "13371337" and again.calibrated
    with pytest.raises(SensorError, match="END"):
        parse_metadata("R0: 1\n")
    with pytest.raises(SensorError, match="really a PPK2"):
        parse_metadata("hello\nEND")


def test_sensors_ppk2_regulator_roundtrip() -> None:
    for mv in (800, 1800, 3300, 5000):
        cmd = regulator_command(mv)
        assert cmd[0] == Cmd.REGULATOR_SET
        assert regulator_mv(cmd[1], cmd[2]) == mv
    assert regulator_command(800) == bytes([0x0D, 3, 32])
    with pytest.raises(SensorError):
        regulator_command(6000)
