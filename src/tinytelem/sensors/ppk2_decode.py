"""PPK2 sample decoding, sans-I/O: bytes -> current samples, gaps and metadata events.

Right after a range switch the shunt settles for a few samples; the spike filter replaces
those samples with exponential rolling averages (alpha 0.18, and 0.06 for range 4). It is
stateful and per sample, which is why the block kernel is compiled with numba (see
bench/ppk2.py: a few ns per sample against hundreds in Python).

:class:`PPK2Decoder` turns bytes into :class:`PPK2Samples` and :class:`PPK2Gap` events and
never does I/O, so the live driver, the emulator tests and the benchmark share it. The wire
format it reads is :mod:`tinytelem.sensors.ppk2_protocol`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tinytelem.errors import SensorError
from tinytelem.sensors.ppk2_protocol import (
    COUNTER_MASK,
    METADATA_LIMIT,
    PPK2Metadata,
    convert_reference,
    parse_metadata,
)

__all__ = [
    "PPK2Decoder",
    "PPK2Event",
    "PPK2Gap",
    "PPK2MetadataEvent",
    "PPK2Samples",
    "SpikeFilterConfig",
    "decode_words",
    "default_backend",
]


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


def _convert_core(words: Any, mods: Any, vdd_v: float, istate: Any, out_current: Any,
                  out_logic: Any, out_range: Any, gap_pos: Any, gap_n: Any) -> int:
    """Convert and counter-check one block of words, sample by sample; return the gap count.

    Plain Python that numba compiles (``_kernel``); run as is it is the pure-Python baseline.
    """
    n_gaps = 0
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
        out_current[k] = mods[6, rng] * (x * (mods[1, rng] * x + mods[2, rng])
                                         + (mods[4, rng] * vdd_v + mods[5, rng]))
        out_range[k] = rng
        out_logic[k] = (w >> 24) & 0xFF
    return n_gaps


def _filter_core(current: Any, ranges: Any, filt: Any, istate: Any, fstate: Any) -> None:
    """The spike filter, in place, sample by sample (stateful across blocks).

    Every backend runs this one loop: numba compiled, or as plain Python (``numpy`` and
    ``python`` backends). ``filt`` = (enabled, alpha, alpha5, samples).
    """
    alpha = filt[1]
    alpha5 = filt[2]
    n_spike = int(filt[3])
    for k in range(current.shape[0]):
        value = current[k]
        rng = ranges[k]
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
        current[k] = value


def _decode_core(words: Any, mods: Any, vdd_v: float, filt: Any, istate: Any, fstate: Any,
                 out_current: Any, out_logic: Any, gap_pos: Any, gap_n: Any,
                 convert: Callable[..., int] = _convert_core,
                 spike_filter: Callable[..., None] = _filter_core) -> int:
    """Convert, counter-check and spike-filter one block; return the gap count."""
    ranges = np.empty(words.shape[0], dtype=np.int64)
    n_gaps = convert(words, mods, vdd_v, istate, out_current, out_logic, ranges, gap_pos, gap_n)
    if filt[0] != 0.0:
        spike_filter(out_current, ranges, filt, istate, fstate)
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

        _KERNEL["numba"] = functools.partial(
            _decode_core, convert=numba.njit(cache=True, nogil=True)(_convert_core),
            spike_filter=numba.njit(cache=True, nogil=True)(_filter_core))
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
    """Vectorised conversion and counter check; the spike filter is the Python loop."""
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
        ranges = np.minimum((words >> 14) & 7, 4).astype(np.int64)
        filt = np.array([1.0, spike.alpha, spike.alpha5, float(spike.samples)])
        _filter_core(current, ranges, filt, state.istate, state.fstate)
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
                if len(self._text) > METADATA_LIMIT:
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
