"""TickUnwrapper: 32-bit device ticks to 64 bits, including wraps missed during silence."""

from __future__ import annotations

import pytest

from tinytelem.errors import ProtocolError
from tinytelem.protocol.codec import TickUnwrapper

W = 1 << 32


def test_monotonic_without_wrap() -> None:
    u = TickUnwrapper(1_000_000)
    assert [u.unwrap(t) for t in (5, 5, 100, 2_000_000)] == [5, 5, 100, 2_000_000]
    assert u.seconds(2_000_000) == 2.0


def test_wrap_detected_from_counter_going_back() -> None:
    u = TickUnwrapper(1_000_000)
    assert u.unwrap(W - 10) == W - 10
    assert u.unwrap(5) == W + 5
    assert u.unwrap(W // 3) == W + W // 3
    assert u.unwrap(2 * W // 3) == W + 2 * W // 3
    assert u.unwrap(W - 1) == 2 * W - 1
    assert u.unwrap(0) == 2 * W


def test_an_older_frame_is_not_a_wrap() -> None:
    """A PONG stamped now, then queued frames stamped earlier: steps back, no wrap."""
    u = TickUnwrapper(1_000_000)
    assert u.unwrap(5_000_000, host_time=10.0) == 5_000_000
    assert u.unwrap(4_990_000, host_time=10.001) == 4_990_000
    assert u.unwrap(4_995_000) == 4_995_000
    # The reference stayed at the newest frame: the next one continues from there.
    assert u.unwrap(5_001_000, host_time=10.002) == 5_001_000
    # Near a wrap, an older frame before it stays before it.
    v = TickUnwrapper(1_000_000)
    assert v.unwrap(100, host_time=1.0) == 100
    assert v.unwrap(W - 50, host_time=1.0) == 0  # 150 ticks before the first frame: clamped
    assert v.unwrap(200, host_time=1.0001) == 200


def test_first_value_is_taken_as_is() -> None:
    assert TickUnwrapper(10).unwrap(123, host_time=50.0) == 123


def test_missed_wraps_recovered_from_host_time() -> None:
    hz = 100_000_000  # wraps every 42.9 s
    period = W / hz
    u = TickUnwrapper(hz)
    assert u.unwrap(1000, host_time=0.0) == 1000
    # 3.5 wraps of silence: the counter shows +0.5 wrap, the host clock says 3.5.
    ticks = 1000 + W // 2
    assert u.unwrap(ticks, host_time=3.5 * period) == 1000 + 3 * W + W // 2
    # Normal traffic afterwards continues from there.
    assert u.unwrap(ticks + 10, host_time=3.5 * period + 1e-7) == 1000 + 3 * W + W // 2 + 10


def test_missed_wraps_with_backwards_counter() -> None:
    hz = 25_000_000
    period = W / hz
    u = TickUnwrapper(hz)
    u.unwrap(W - 100, host_time=10.0)
    # 2 full wraps + 200 ticks later: the counter reads 100 (went back), host says ~2 periods.
    assert u.unwrap(100, host_time=10.0 + 2 * period + 200 / hz) == (W - 100) + 2 * W + 200


def test_host_jitter_does_not_invent_wraps() -> None:
    hz = 1_000_000
    period = W / hz
    u = TickUnwrapper(hz)
    u.unwrap(0, host_time=0.0)
    # 0.9 wrap of device time, host clock 30% late: still no extra wrap (rounding, not floor).
    assert u.unwrap(int(0.9 * W), host_time=1.2 * period) == int(0.9 * W)
    # 1.45 wraps later by the host, counter shows +0.5: one missed wrap.
    t = u.unwrap(int(0.9 * W) + W // 2 - W, host_time=1.2 * period + 1.45 * period)
    assert t == int(0.9 * W) + W // 2 + W


def test_host_time_early_is_harmless() -> None:
    u = TickUnwrapper(1000)
    u.unwrap(1000, host_time=100.0)
    assert u.unwrap(3000, host_time=99.0) == 3000  # host clock stepped back: trust the counter


def test_frame_without_host_time_does_not_use_stale_host_time() -> None:
    hz = 1_000_000
    period = W / hz
    u = TickUnwrapper(hz)
    u.unwrap(0, host_time=0.0)
    u.unwrap(10, host_time=None)
    # Had the stale host time (0.0) been kept, 2 periods of host time would add wraps here.
    assert u.unwrap(20, host_time=2 * period) == 20


@pytest.mark.parametrize("bad", [-1, W])
def test_rejects_non_u32_ticks(bad: int) -> None:
    with pytest.raises(ProtocolError, match="is not a u32"):
        TickUnwrapper(1).unwrap(bad)


def test_rejects_zero_rate() -> None:
    with pytest.raises(ProtocolError, match="take it from HELLO"):
        TickUnwrapper(0)
