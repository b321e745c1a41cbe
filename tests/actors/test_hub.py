"""Hub fan-out: lossless order, drop-oldest live mailboxes, shutdown, statistics."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tinytelem.actors.hub import Hub, HubStatistics, LiveSubscription, SubscriberStatistics
from tinytelem.errors import ConfigError
from tinytelem.records import PowerGap, Record


def rec(i: int) -> PowerGap:
    """A tiny distinguishable record: index in first_index."""
    return PowerGap(host_s=float(i), first_index=i, n_missing=1)


def by_name(stats: HubStatistics) -> dict[str, SubscriberStatistics]:
    return {s.name: s for s in stats.per_subscriber}


async def feed(send: trio.MemorySendChannel[Record], n: int) -> None:
    async with send:
        for i in range(n):
            await send.send(rec(i))


async def test_lossless_receives_everything_in_order_and_ends() -> None:
    hub = Hub()
    lossless = hub.subscribe_lossless("recorder", 4)
    send, receive = trio.open_memory_channel[Record](8)
    got: list[int] = []

    async def recorder() -> None:
        async with lossless:
            async for batch in lossless:
                (r,) = batch  # single records enter the hub as batches of one
                assert isinstance(r, PowerGap)
                got.append(r.first_index)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            nursery.start_soon(recorder)
            await feed(send, 1000)
    assert got == list(range(1000))
    stats = hub.statistics()
    assert stats.records_in == 1000
    (rec_stats,) = stats.per_subscriber
    assert rec_stats == SubscriberStatistics("recorder", "lossless", 1000, 0, rec_stats.high_water)
    assert 0 <= rec_stats.high_water <= 4


async def test_slow_live_subscriber_never_slows_hub_or_fast_live() -> None:
    n = 5000
    hub = Hub()
    slow = hub.subscribe_live("slow", 16)  # never read
    fast = hub.subscribe_live("fast", 16)
    lossless = hub.subscribe_lossless("recorder", 64)
    send, receive = trio.open_memory_channel[Record](64)
    fast_got: list[int] = []
    fast_lost = 0

    async def fast_reader() -> None:
        nonlocal fast_lost
        async for r, lost in fast:
            assert isinstance(r, PowerGap)
            fast_got.append(r.first_index)
            fast_lost += lost

    async def recorder() -> None:
        async with lossless:
            async for _ in lossless:
                pass

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            nursery.start_soon(fast_reader)
            nursery.start_soon(recorder)
            async with send:
                for i in range(n):
                    await send.send(rec(i))
                    # Give the fast consumer a chance every few records (it is "fast", not
                    # infinitely fast); the slow one never gets to read.
                    if i % 8 == 7:
                        await trio.testing.wait_all_tasks_blocked()
    assert fast_got == list(range(n))
    assert fast_lost == 0
    s = by_name(hub.statistics())
    assert s["fast"].delivered == n and s["fast"].dropped == 0
    assert s["slow"].delivered + s["slow"].dropped == n
    assert s["slow"].dropped == n - 16
    assert s["slow"].high_water == 16
    assert slow.dropped == n - 16 and slow.pending == 16
    # The slow one can still drain what is left: the newest 16, then the end.
    items = [item async for item in slow]
    assert [r.first_index for r, _ in items] == list(range(n - 16, n))  # type: ignore[union-attr]
    assert items[0][1] == n - 16 and all(lost == 0 for _, lost in items[1:])


async def test_hub_rate_independent_of_stalled_live_subscriber() -> None:
    """The hub moves all records through even while a live consumer is stuck forever."""
    hub = Hub()
    stuck = hub.subscribe_live("stuck", 1)
    send, receive = trio.open_memory_channel[Record](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            await feed(send, 10_000)
    assert hub.statistics().records_in == 10_000
    assert stuck.delivered == 1 and stuck.dropped == 9_999


async def test_live_receive_nowait_and_wait() -> None:
    hub = Hub()
    live = hub.subscribe_live("view", 2)
    send, receive = trio.open_memory_channel[Record](10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            for i in range(5):
                send.send_nowait(rec(i))
            await trio.testing.wait_all_tasks_blocked()
            r, lost = await live.receive()
            assert (r.first_index, lost) == (3, 3)  # type: ignore[union-attr]
            r, lost = live.receive_nowait()
            assert (r.first_index, lost) == (4, 0)  # type: ignore[union-attr]
            with pytest.raises(trio.WouldBlock):
                live.receive_nowait()

            async def later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                send.send_nowait(rec(5))
                await send.aclose()

            nursery.start_soon(later)
            r, lost = await live.receive()  # parks until the hub delivers
            assert (r.first_index, lost) == (5, 0)  # type: ignore[union-attr]
            with pytest.raises(trio.EndOfChannel):
                await live.receive()
    assert live.statistics() == SubscriberStatistics("view", "live", 3, 3, 2)


async def test_closing_input_closes_every_subscriber() -> None:
    hub = Hub()
    lossless_a = hub.subscribe_lossless("a", 8)
    lossless_b = hub.subscribe_lossless("b", 8)
    live = hub.subscribe_live("live", 8)
    send, receive = trio.open_memory_channel[Record](8)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            await feed(send, 3)
    for ch in (lossless_a, lossless_b):
        got = [ch.receive_nowait()[0] for _ in range(3)]
        assert [r.first_index for r in got] == [0, 1, 2]  # type: ignore[union-attr]
        with pytest.raises(trio.EndOfChannel):
            await ch.receive()
    assert live.pending == 3
    assert [r.first_index async for r, _ in live] == [0, 1, 2]  # type: ignore[union-attr]
    with pytest.raises(trio.EndOfChannel):
        live.receive_nowait()
    # Subscribing after the end gives an already finished subscription.
    late = hub.subscribe_live("late", 1)
    with pytest.raises(trio.EndOfChannel):
        await late.receive()
    late_lossless = hub.subscribe_lossless("late-lossless", 1)
    with pytest.raises(trio.EndOfChannel):
        await late_lossless.receive()


async def test_consumers_that_close_are_unsubscribed() -> None:
    hub = Hub()
    quitter = hub.subscribe_lossless("quitter", 1)
    live = hub.subscribe_live("live", 4)
    keeper = hub.subscribe_live("keeper", 100)
    send, receive = trio.open_memory_channel[Record](8)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            await send.send(rec(0))
            await trio.testing.wait_all_tasks_blocked()
            assert (await quitter.receive())[0].first_index == 0  # type: ignore[union-attr]
            await quitter.aclose()
            async with live:
                pass
            with pytest.raises(trio.ClosedResourceError):
                await live.receive()
            await feed(send, 10)  # must not block on the closed lossless subscriber
    s = by_name(hub.statistics())
    assert s["quitter"].delivered == 1
    assert s["live"].delivered == 1 and s["live"].dropped == 0
    assert s["keeper"].delivered == 11 and keeper.pending == 11
    assert hub.statistics().records_in == 11


async def test_cancelled_receive_leaves_items_in_place() -> None:
    hub = Hub()
    live = hub.subscribe_live("view", 4)
    with trio.move_on_after(0.01):
        await live.receive()
    live.put_nowait(rec(7))
    with trio.CancelScope() as scope:
        scope.cancel()
        await live.receive()
    assert live.pending == 1
    r, lost = live.receive_nowait()
    assert (r.first_index, lost) == (7, 0)  # type: ignore[union-attr]


def test_bad_subscriptions_are_config_errors() -> None:
    hub = Hub()
    hub.subscribe_live("x", 1)
    with pytest.raises(ConfigError, match="unique"):
        hub.subscribe_lossless("x", 1)
    with pytest.raises(ConfigError, match="max_items"):
        hub.subscribe_live("y", 0)
    with pytest.raises(ConfigError, match="max_buffer"):
        hub.subscribe_lossless("z", 0)
    assert isinstance(hub.subscribe_live("y", 1), LiveSubscription)  # name not burnt


async def test_run_twice_is_a_bug() -> None:
    hub = Hub()
    send, receive = trio.open_memory_channel[Record](1)
    send.close()
    await hub.run(receive)
    with pytest.raises(RuntimeError, match="once"):
        await hub.run(receive)


async def test_stalled_lossless_subscriber_stalls_the_hub() -> None:
    """Back-pressure is the documented contract for lossless subscribers."""
    hub = Hub()
    stalled = hub.subscribe_lossless("recorder", 2)
    send, receive = trio.open_memory_channel[Record](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            for i in range(3):  # 2 buffered + 1 held by the hub's pending send
                await send.send(rec(i))
            with pytest.raises(trio.WouldBlock):
                send.send_nowait(rec(3))
            await trio.testing.wait_all_tasks_blocked()
            assert hub.statistics().records_in == 3
            assert by_name(hub.statistics())["recorder"].high_water == 2
            async with stalled:
                got = [(await stalled.receive())[0] for _ in range(3)]
            assert [r.first_index for r in got] == [0, 1, 2]  # type: ignore[union-attr]
            await send.aclose()


async def test_batches_are_forwarded_whole_and_counted_by_record() -> None:
    hub = Hub()
    lossless = hub.subscribe_lossless("recorder", 4)
    live = hub.subscribe_live("live", 100)
    send, receive = trio.open_memory_channel[object](8)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            await send.send((rec(0), rec(1), rec(2)))
            await send.send(rec(3))
            await send.aclose()
    batches = [b async for b in lossless]
    assert [len(b) for b in batches] == [3, 1]
    assert [r.first_index async for r, _ in live] == [0, 1, 2, 3]  # type: ignore[union-attr]
    stats = by_name(hub.statistics())
    assert hub.statistics().records_in == 4 and stats["recorder"].delivered == 4


async def test_kept_records_are_never_pushed_out_by_droppable_ones() -> None:
    """A live subscriber with ``keep``: every 10th record is kept; the rest make room for each
    other only. Batches come out in the order the records went in."""
    hub = Hub()
    live = hub.subscribe_live("view", 8, keep=lambda r: r.first_index % 10 == 0,  # type: ignore[union-attr]
                              max_kept=200)
    plain = hub.subscribe_live("plain", 8)
    send, receive = trio.open_memory_channel[Record](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, receive)
            await feed(send, 1000)
    records, lost = await live.receive_batch(10_000)
    got = [r.first_index for r in records]  # type: ignore[union-attr]
    kept = list(range(0, 1000, 10))
    assert [i for i in got if i % 10 == 0] == kept  # all 100 kept records survived
    assert got == sorted(got) and len(got) == 100 + 8  # plus the 8 newest droppable ones
    assert lost == 1000 - len(got) == live.dropped and live.kept_dropped == 0
    assert [r.first_index async for r, _ in plain] == list(range(992, 1000))  # type: ignore[union-attr]
    # The kept mailbox is bounded too: beyond max_kept even kept records go, counted apart.
    small = LiveSubscription("small", 2, keep=lambda r: True, max_kept=4)
    for i in range(10):
        small.put_nowait(rec(i))
    assert small.pending == 4 and small.kept_dropped == small.dropped == 6
