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

Right after a range switch the shunt settles for a few samples; the spike filter replaces
those samples with exponential rolling averages (alpha 0.18, and 0.06 for range 4). It is
stateful and per sample, which is why the block kernel is compiled with numba (see
bench/ppk2.py: a few ns per sample against hundreds in Python).

:class:`PPK2Decoder` turns bytes into :class:`PPK2Samples` and :class:`PPK2Gap` events and
never does I/O, so the live driver, the emulator tests and the benchmark share it.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.errors import SensorError

__all__ = [
    "ADC_MULT",
    "COMMAND_LENGTHS",
    "N_RANGES",
    "SAMPLE_RATE_HZ",
    "Cmd",
    "PPK2Decoder",
    "PPK2Gap",
    "PPK2Metadata",
    "PPK2Samples",
    "SpikeFilterConfig",
    "convert_reference",
    "decode_words",
    "default_backend",
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
_METADATA_LIMIT = 8192


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


@dataclass(frozen=True)
class SpikeFilterConfig:
    """Rolling-average filter applied for ``samples`` samples after a range switch."""

    enabled: bool = True
    alpha: float = 0.18
    alpha5: float = 0.06
    samples: int = 3


# Integer state: prev_range (-1 none), consecutive, after_spike, expected counter (-1 none),
# has_average. Float state: rolling average, rolling average for range 4.
_ISTATE = 5
_FSTATE = 2


def _decode_core(words: Any, mods: Any, vdd_v: float, filt: Any, istate: Any, fstate: Any,
                 out_current: Any, out_logic: Any, gap_pos: Any, gap_n: Any) -> int:
    """Convert, spike-filter and counter-check one block of words; return the gap count.

    Plain Python that numba compiles (``_kernel``); run as is it is the pure-Python baseline.
    ``filt`` = (enabled, alpha, alpha5, samples).
    """
    n_gaps = 0
    enabled = filt[0] != 0.0
    alpha = filt[1]
    alpha5 = filt[2]
    n_spike = int(filt[3])
    for k in range(words.shape[0]):
        w = int(words[k])
        rng = (w >> 14) & 7
        rng = min(rng, 4)
        counter = (w >> 18) & 0x3F
        expected = istate[3]
        if expected >= 0 and counter != expected:
            gap_pos[n_gaps] = k
            gap_n[n_gaps] = (counter - expected) & 0x3F
            n_gaps += 1
        istate[3] = (counter + 1) & 0x3F
        x = ((w & 0x3FFF) * 4.0 - mods[3, rng]) * (1.8 / 163840.0 / mods[0, rng])
        value = mods[6, rng] * (x * (mods[1, rng] * x + mods[2, rng])
                                + (mods[4, rng] * vdd_v + mods[5, rng]))
        if enabled:
            prev_avg = fstate[0]
            prev_avg4 = fstate[1]
            if istate[4] == 0:
                fstate[0] = value
                fstate[1] = value
                istate[4] = 1
            else:
                fstate[0] = alpha * value + (1.0 - alpha) * fstate[0]
                fstate[1] = alpha5 * value + (1.0 - alpha5) * fstate[1]
            if istate[0] < 0:
                istate[0] = rng
            if istate[0] != rng or istate[2] > 0:
                if istate[0] != rng:
                    istate[1] = 0
                    istate[2] = n_spike
                else:
                    istate[1] += 1
                if rng == 4:
                    if istate[1] < 2:
                        fstate[0] = prev_avg
                        fstate[1] = prev_avg4
                    value = fstate[1]
                else:
                    value = fstate[0]
                istate[2] -= 1
            istate[0] = rng
        out_current[k] = value
        out_logic[k] = (w >> 24) & 0xFF
    return n_gaps


_KERNEL: dict[str, Callable[..., int]] = {}


def default_backend() -> str:
    """``numba`` when it is installed (the optional ``tinytelem[numba]`` extra), else ``numpy``
    (vectorised conversion, spike filter in Python: fine for the PPK2's 100 kS/s)."""
    try:
        found = importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        found = False
    return "numba" if found else "numpy"


def _kernel() -> Callable[..., int]:
    """The numba-compiled block kernel (compiled on first use, cached on disk)."""
    if "numba" not in _KERNEL:
        try:
            import numba
        except ImportError as exc:
            raise SensorError("the numba PPK2 decoder needs numba: pip install "
                              "'tinytelem[numba]', or use backend 'numpy'") from exc

        _KERNEL["numba"] = numba.njit(cache=True, nogil=True)(_decode_core)
    return _KERNEL["numba"]


@dataclass
class _FilterState:
    istate: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.array([-1, 0, 0, -1, 0], dtype=np.int64))
    fstate: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(_FSTATE))

    def reset_filter(self) -> None:
        self.istate[[0, 1, 2, 4]] = (-1, 0, 0, 0)

    def reset_counter(self) -> None:
        self.istate[3] = -1


def decode_words(
    words: npt.NDArray[np.uint32],
    meta: PPK2Metadata,
    vdd_mv: float,
    spike: SpikeFilterConfig,
    state: _FilterState,
    backend: str = "auto",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], npt.NDArray[np.int64],
           npt.NDArray[np.int64]]:
    """Decode a block: (current A float32, logic u8, gap positions, gap sizes).

    ``backend``: ``numba`` (the live path when numba is installed), ``numpy`` (vectorised
    conversion, Python spike filter: the live path without numba), ``python`` (everything per
    sample in Python: benchmark baseline and cross-check), or ``auto`` (:func:`default_backend`).
    """
    if backend == "auto":
        backend = default_backend()
    n = words.shape[0]
    current = np.empty(n, dtype=np.float64)
    logic = np.empty(n, dtype=np.uint8)
    gap_pos = np.empty(n, dtype=np.int64)
    gap_n = np.empty(n, dtype=np.int64)
    filt = np.array([1.0 if spike.enabled else 0.0, spike.alpha, spike.alpha5,
                     float(spike.samples)])
    mods = meta.arrays()
    if backend == "numba":
        n_gaps = _kernel()(words, mods, vdd_mv / 1000.0, filt, state.istate, state.fstate,
                           current, logic, gap_pos, gap_n)
    elif backend == "python":
        n_gaps = _decode_core(words, mods, vdd_mv / 1000.0, filt, state.istate, state.fstate,
                              current, logic, gap_pos, gap_n)
    elif backend == "numpy":
        n_gaps = _decode_numpy(words, meta, vdd_mv, spike, state, current, logic, gap_pos, gap_n)
    else:
        raise SensorError(f"unknown PPK2 decode backend {backend!r}; use numba, numpy or python")
    return (current.astype(np.float32), logic, gap_pos[:n_gaps].copy(), gap_n[:n_gaps].copy())


def _decode_numpy(words: npt.NDArray[np.uint32], meta: PPK2Metadata, vdd_mv: float,
                  spike: SpikeFilterConfig, state: _FilterState, current: Any, logic: Any,
                  gap_pos: Any, gap_n: Any) -> int:
    """Vectorised conversion and counter check; the spike filter stays a Python loop."""
    if words.size == 0:
        return 0
    current[:] = convert_reference(words, meta, vdd_mv)
    logic[:] = (words >> 24).astype(np.uint8)
    counter = ((words >> 18) & COUNTER_MASK).astype(np.int64)
    expected = np.empty_like(counter)
    expected[0] = state.istate[3] if state.istate[3] >= 0 else counter[0]
    expected[1:] = (counter[:-1] + 1) & COUNTER_MASK
    bad = np.flatnonzero(counter != expected)
    gap_pos[: bad.size] = bad
    gap_n[: bad.size] = (counter[bad] - expected[bad]) & COUNTER_MASK
    state.istate[3] = (int(counter[-1]) + 1) & COUNTER_MASK
    if spike.enabled:
        rng = np.minimum((words >> 14) & 7, 4).astype(np.int64)
        ist, fst = state.istate, state.fstate
        a, a5 = spike.alpha, spike.alpha5
        for k in range(words.size):
            v = float(current[k])
            r = int(rng[k])
            pa, pa4 = fst[0], fst[1]
            if ist[4] == 0:
                fst[0] = fst[1] = v
                ist[4] = 1
            else:
                fst[0] = a * v + (1.0 - a) * fst[0]
                fst[1] = a5 * v + (1.0 - a5) * fst[1]
            if ist[0] < 0:
                ist[0] = r
            if ist[0] != r or ist[2] > 0:
                if ist[0] != r:
                    ist[1] = 0
                    ist[2] = spike.samples
                else:
                    ist[1] += 1
                if r == 4:
                    if ist[1] < 2:
                        fst[0], fst[1] = pa, pa4
                    v = fst[1]
                else:
                    v = fst[0]
                ist[2] -= 1
            ist[0] = r
            current[k] = v
    return int(bad.size)


@dataclass(frozen=True, slots=True)
class PPK2Samples:
    """Contiguous samples: sensor indices ``first_index ..`` (+len)."""

    first_index: int
    current_a: npt.NDArray[np.float32]
    logic: npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class PPK2Gap:
    """``n_missing`` samples lost before ``first_index + n_missing`` (counter jump).

    The 6-bit counter sees losses modulo 64: a loss of 64k + m samples looks like m. USB
    transfers lose whole packets of 16 samples or more rarely, so ``n_missing`` is exact for
    losses under 64 samples; longer outages (a sensor unplugged) are measured by the driver
    from host time instead.
    """

    first_index: int
    n_missing: int


@dataclass(frozen=True, slots=True)
class PPK2MetadataEvent:
    """The metadata answer arrived and was parsed."""

    metadata: PPK2Metadata


PPK2Event = PPK2Samples | PPK2Gap | PPK2MetadataEvent


class PPK2Decoder:
    """Bytes from a PPK2 in, events out; no I/O (h11 style).

    Call :meth:`expect_metadata` before writing GET_META_DATA: bytes are then collected as text
    until ``END``. Otherwise bytes are sample words; a partial word waits for the next call.
    """

    def __init__(self, metadata: PPK2Metadata | None = None, *, vdd_mv: float = 3300.0,
                 spike: SpikeFilterConfig | None = None, backend: str = "auto") -> None:
        self.metadata = metadata or PPK2Metadata()
        self.vdd_mv = float(vdd_mv)
        self.spike = spike or SpikeFilterConfig()
        self.backend = default_backend() if backend == "auto" else backend
        self.next_index = 0
        """Sensor index the next decoded sample gets (gaps advance it too)."""
        self.samples = 0
        self.missing = 0
        self.gaps = 0
        self._state = _FilterState()
        self._remainder = b""
        self._text: bytearray | None = None

    def warm_up(self) -> None:
        """Compile (or load from cache) the numba kernel now, not on the first samples
        (for the read-only word arrays that np.frombuffer gives, the live path's type)."""
        if self.backend == "numba":
            _kernel()(np.frombuffer(b"", dtype="<u4"), self.metadata.arrays(), 3.3,
                      np.zeros(4), np.array([-1, 0, 0, -1, 0], dtype=np.int64), np.zeros(2),
                      np.zeros(0), np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64),
                      np.zeros(0, dtype=np.int64))

    @property
    def awaiting_metadata(self) -> bool:
        """True between :meth:`expect_metadata` and the END of the metadata text."""
        return self._text is not None

    def expect_metadata(self) -> None:
        """The next bytes are the metadata text (sent after GET_META_DATA)."""
        self._text = bytearray()
        self._remainder = b""

    def start(self) -> None:
        """A new AVERAGE_START: restart the spike filter and the counter check."""
        self._state.reset_filter()
        self._state.reset_counter()
        self._remainder = b""

    def skip(self, n_missing: int) -> PPK2Gap:
        """Account for samples lost outside the counter's view (sensor gone for a while)."""
        gap = PPK2Gap(self.next_index, n_missing)
        self.next_index += n_missing
        self.missing += n_missing
        self.gaps += 1
        self._state.reset_counter()
        self._remainder = b""
        return gap

    def receive_data(self, data: bytes) -> list[PPK2Event]:
        """Feed bytes; return the events they complete, in order."""
        events: list[PPK2Event] = []
        if self._text is not None:
            self._text += data
            end = self._text.find(b"END")
            if end < 0:
                if len(self._text) > _METADATA_LIMIT:
                    self._text = None
                    raise SensorError("PPK2 metadata longer than 8 KiB without END; replug it")
                return events
            stop = end + 3
            while stop < len(self._text) and self._text[stop] in b"\r\n":
                stop += 1
            text = self._text[:stop].decode("ascii", "replace")
            rest = bytes(self._text[stop:])
            self._text = None
            self.metadata = parse_metadata(text)
            events.append(PPK2MetadataEvent(self.metadata))
            data = rest
        buf = self._remainder + data if self._remainder else data
        usable = len(buf) - len(buf) % 4
        self._remainder = bytes(buf[usable:])
        if usable == 0:
            return events
        words = np.frombuffer(buf, dtype="<u4", count=usable // 4)
        current, logic, gap_pos, gap_n = decode_words(
            words, self.metadata, self.vdd_mv, self.spike, self._state, self.backend)
        start = 0
        for pos, n_missing in zip(gap_pos.tolist(), gap_n.tolist(), strict=True):
            if pos > start:
                events.append(self._samples(current[start:pos], logic[start:pos]))
            events.append(PPK2Gap(self.next_index, n_missing))
            self.next_index += n_missing
            self.missing += n_missing
            self.gaps += 1
            start = pos
        if start < current.size:
            events.append(self._samples(current[start:], logic[start:]))
        return events

    def _samples(self, current: npt.NDArray[np.float32],
                 logic: npt.NDArray[np.uint8]) -> PPK2Samples:
        ev = PPK2Samples(self.next_index, current, logic)
        self.next_index += current.size
        self.samples += current.size
        return ev
