"""Nordic Power Profiler Kit II (PPK2) wire protocol, sans-I/O.

The PPK2 is a USB CDC-ACM device. The host writes short binary commands (an opcode byte and
fixed-length arguments); the PPK2 answers ``GET_META_DATA`` with a text block of calibration
values ending in ``END``, and after ``AVERAGE_START`` streams 100 000 little-endian 32-bit
sample words per second::

    bits  0-13  ADC value (14 bits; the conversion uses it times 4)
    bits 14-16  measurement range 0..4 (one shunt resistor per range)
    bits 18-23  6-bit sample counter (+1 per sample, wraps at 64): loss detection
    bits 24-31  the eight digital (logic) inputs

Current in amperes for range ``r`` and ADC value ``adc`` (the published conversion, with the
per-unit modifiers R, GS, GI, O, S, I, UG from the metadata and the supply voltage ``vdd``)::

    x = (adc * 4 - O[r]) * (1.8 / 163840 / R[r])
    I = UG[r] * (x * (GS[r] * x + GI[r]) + S[r] * vdd_V + I[r])

This module holds the wire format: commands, the metadata block, the sample word layout and
the reference conversion. Turning a byte stream into filtered current samples is
:mod:`tinytelem.sensors.ppk2_decode`.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinytelem.errors import SensorError

__all__ = [
    "ADC_MULT",
    "COMMAND_LENGTHS",
    "COUNTER_MASK",
    "METADATA_LIMIT",
    "N_RANGES",
    "SAMPLE_RATE_HZ",
    "Cmd",
    "PPK2Metadata",
    "convert_reference",
    "format_metadata",
    "pack_words",
    "parse_metadata",
    "regulator_command",
    "regulator_mv",
]

SAMPLE_RATE_HZ = 100_000.0
ADC_MULT = 1.8 / 163840.0
N_RANGES = 5
COUNTER_MASK = 0x3F
VDD_MIN_MV = 800
VDD_MAX_MV = 5000
METADATA_LIMIT = 8192


class Cmd(enum.IntEnum):
    """Command opcodes (first byte of every host -> PPK2 write)."""

    NO_OP = 0x00
    TRIGGER_SET = 0x01
    AVG_NUM_SET = 0x02
    TRIGGER_WINDOW_SET = 0x03
    TRIGGER_INTERVAL_SET = 0x04
    TRIGGER_SINGLE_SET = 0x05
    AVERAGE_START = 0x06
    AVERAGE_STOP = 0x07
    RANGE_SET = 0x08
    LCD_SET = 0x09
    TRIGGER_STOP = 0x0A
    DEVICE_RUNNING_SET = 0x0C
    REGULATOR_SET = 0x0D
    SWITCH_POINT_DOWN = 0x0E
    SWITCH_POINT_UP = 0x0F
    SET_POWER_MODE = 0x11
    RES_USER_SET = 0x12
    SPIKE_FILTERING_ON = 0x15
    SPIKE_FILTERING_OFF = 0x16
    GET_META_DATA = 0x19
    RESET = 0x20
    SET_USER_GAINS = 0x25


COMMAND_LENGTHS: dict[int, int] = {
    Cmd.NO_OP: 1, Cmd.TRIGGER_SET: 3, Cmd.AVG_NUM_SET: 2, Cmd.TRIGGER_WINDOW_SET: 3,
    Cmd.TRIGGER_INTERVAL_SET: 3, Cmd.TRIGGER_SINGLE_SET: 1, Cmd.AVERAGE_START: 1,
    Cmd.AVERAGE_STOP: 1, Cmd.RANGE_SET: 2, Cmd.LCD_SET: 2, Cmd.TRIGGER_STOP: 1,
    Cmd.DEVICE_RUNNING_SET: 2, Cmd.REGULATOR_SET: 3, Cmd.SWITCH_POINT_DOWN: 2,
    Cmd.SWITCH_POINT_UP: 2, Cmd.SET_POWER_MODE: 2, Cmd.RES_USER_SET: 2,
    Cmd.SPIKE_FILTERING_ON: 1, Cmd.SPIKE_FILTERING_OFF: 1, Cmd.GET_META_DATA: 1,
    Cmd.RESET: 1, Cmd.SET_USER_GAINS: 6,
}
"""Total bytes of each command (opcode included): how a receiver splits the command stream."""

POWER_MODE_AMPERE = 1
POWER_MODE_SOURCE = 2


def regulator_command(mv: int) -> bytes:
    """REGULATOR_SET for ``mv`` millivolts (800..5000): two bytes holding ``mv - 800 + 32``
    as a big-endian number whose high byte starts at 3."""
    if not VDD_MIN_MV <= mv <= VDD_MAX_MV:
        raise SensorError(f"PPK2 regulator voltage must be 800..5000 mV, got {mv} mV")
    value = mv - VDD_MIN_MV + 32
    return bytes([Cmd.REGULATOR_SET, 3 + value // 256, value % 256])


def regulator_mv(b1: int, b2: int) -> int:
    """Inverse of :func:`regulator_command` (the emulator uses it)."""
    return (b1 - 3) * 256 + b2 + VDD_MIN_MV - 32


@dataclass(frozen=True)
class PPK2Metadata:
    """What GET_META_DATA told us: calibration modifiers per range and unit facts."""

    r: tuple[float, ...] = (1031.64, 101.65, 10.15, 0.94, 0.043)
    gs: tuple[float, ...] = (1.0,) * N_RANGES
    gi: tuple[float, ...] = (1.0,) * N_RANGES
    o: tuple[float, ...] = (0.0,) * N_RANGES
    s: tuple[float, ...] = (0.0,) * N_RANGES
    i: tuple[float, ...] = (0.0,) * N_RANGES
    ug: tuple[float, ...] = (1.0,) * N_RANGES
    calibrated: bool = False
    values: dict[str, str] = field(default_factory=dict)
    """Every ``key: value`` line as sent (VERSION, HW, IA, mode...)."""

    @property
    def hw(self) -> str:
        """Hardware id (serves as the unit's serial number)."""
        return self.values.get("hw", "")

    def arrays(self) -> npt.NDArray[np.float64]:
        """The modifiers as a (7, 5) float64 array: R, GS, GI, O, S, I, UG rows."""
        return np.array([self.r, self.gs, self.gi, self.o, self.s, self.i, self.ug],
                        dtype=np.float64)


_MODIFIER_KEYS = ("r", "gs", "gi", "o", "s", "i", "ug")
_LINE = re.compile(r"^\s*([A-Za-z_]+?)(\d?)\s*:\s*(.*?)\s*$")


def parse_metadata(text: str) -> PPK2Metadata:
    """Parse the GET_META_DATA answer (``KEY: value`` lines, ``END`` last).

    Values the unit reports as ``-nan`` or that do not parse keep the defaults, as do
    resistances of 0 (some units ship them; dividing by them would give infinite current).

    Raises:
        SensorError: the text has no ``END`` or no modifier line at all (not a PPK2 answer).
    """
    if "END" not in text:
        raise SensorError("PPK2 metadata ends without END; the answer was cut off -- replug it")
    mods: dict[str, list[float]] = {}
    default = PPK2Metadata()
    for key in _MODIFIER_KEYS:
        mods[key] = list(getattr(default, key))
    values: dict[str, str] = {}
    seen = 0
    for line in text.split("END", 1)[0].splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        key, idx, raw = m.group(1).lower(), m.group(2), m.group(3)
        if idx and key in mods:
            try:
                value = float(raw)
            except ValueError:
                continue
            if not math.isfinite(value) or (key == "r" and value == 0.0):
                continue
            mods[key][int(idx) % N_RANGES] = value
            seen += 1
        else:
            values[key + idx] = raw
    if seen == 0:
        raise SensorError(
            "PPK2 metadata has no calibration values (R0..R4, GS/GI/O/S/I/UG); is this port "
            "really a PPK2? list ports with `tinytelem sensors list`"
        )
    calibrated = values.get("calibrated", "0").strip() not in ("0", "")
    return PPK2Metadata(r=tuple(mods["r"]), gs=tuple(mods["gs"]), gi=tuple(mods["gi"]),
                        o=tuple(mods["o"]), s=tuple(mods["s"]), i=tuple(mods["i"]),
                        ug=tuple(mods["ug"]), calibrated=calibrated, values=values)


def format_metadata(meta: PPK2Metadata) -> str:
    """The metadata text block a PPK2 sends (used by the emulator)."""
    lines = [f"Calibrated: {int(meta.calibrated)}"]
    for key in _MODIFIER_KEYS:
        name = key.upper()
        lines += [f"{name}{k}: {v:.6g}" for k, v in enumerate(getattr(meta, key))]
    lines += [f"{k.upper() if len(k) <= 3 else k}: {v}" for k, v in meta.values.items()
              if k != "calibrated"]
    return "\n".join(lines) + "\nEND\n"


def pack_words(adc: npt.ArrayLike, rng: npt.ArrayLike, counter: npt.ArrayLike,
               logic: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """Build sample words from fields (vectorised; the emulator's encoder)."""
    a = np.asarray(adc, dtype=np.uint32) & 0x3FFF
    r = (np.asarray(rng, dtype=np.uint32) & 0x7) << 14
    c = (np.asarray(counter, dtype=np.uint32) & COUNTER_MASK) << 18
    g = (np.asarray(logic, dtype=np.uint32) & 0xFF) << 24
    return np.asarray(a | r | c | g, dtype=np.uint32)


def convert_reference(words: npt.ArrayLike, meta: PPK2Metadata,
                      vdd_mv: float) -> npt.NDArray[np.float64]:
    """The published conversion, vectorised, with no spike filter: the test oracle."""
    w = np.asarray(words, dtype=np.uint32)
    rng = np.minimum((w >> 14) & 7, N_RANGES - 1).astype(np.intp)
    adc = (w & 0x3FFF).astype(np.float64) * 4.0
    m = meta.arrays()
    x = (adc - m[3][rng]) * (ADC_MULT / m[0][rng])
    out: npt.NDArray[np.float64] = m[6][rng] * (
        x * (m[1][rng] * x + m[2][rng]) + (m[4][rng] * (vdd_mv / 1000.0) + m[5][rng]))
    return out
