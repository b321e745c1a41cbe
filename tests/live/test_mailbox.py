"""Per-client mailboxes: droppable classes make room for each other only, told per class."""

from __future__ import annotations

from typing import Any

from tinytelem.live.mailbox import LAG_BACKLOG, Mailbox, Prepared, stream_class


def _m(kind: str, i: int = 0, **extra: Any) -> Prepared:
    return Prepared({"type": kind, "i": i, **extra})


def _drain(box: Mailbox) -> list[tuple[str, int]]:
    out = []
    while (item := box.pop()) is not None:
        out.append((item.map["type"], item.map["i"]))
    return out


def test_classes() -> None:
    assert stream_class("token") == "token" and stream_class("layers") == "span"
    assert stream_class("raw") == "raw" and stream_class("bye") == "control"
    assert stream_class("something_newer") == "run"  # unknown types are kept


def test_spans_never_push_out_tokens_and_losses_are_told_per_class() -> None:
    box = Mailbox(bulk_max=4, kept_max=1000)
    for i in range(100):
        box.offer(_m("span", i))
        if i % 10 == 0:
            box.offer(_m("token", i))
    notice = box.drop_notice()
    assert notice == {"type": "dropped", "count": 96, "total": 96, "classes": {"span": 96},
                      "totals": {"span": 96}, "server": False}
    assert box.drop_notice() is None  # told once
    got = _drain(box)
    assert [i for kind, i in got if kind == "token"] == list(range(0, 100, 10))
    assert [i for kind, i in got if kind == "span"] == [96, 97, 98, 99]
    assert got == sorted(got, key=lambda x: x[1])  # in order (no backlog to overtake)


def test_kept_overflow_is_counted_too() -> None:
    box = Mailbox(bulk_max=4, kept_max=3)
    for i in range(5):
        box.offer(_m("token", i))
    assert box.dropped_by_class == {"token": 2} and [i for _, i in _drain(box)] == [2, 3, 4]


def test_byte_bound_for_raw_power() -> None:
    box = Mailbox(bulk_max=1000, kept_max=1000, bulk_bytes=10_000)
    for i in range(10):
        box.offer(_m("raw", i, current_a=bytes(4000)))
    assert box.dropped_by_class == {"raw": 8} and [i for _, i in _drain(box)] == [8, 9]


def test_tokens_overtake_a_span_backlog_and_bye_leaves_last() -> None:
    box = Mailbox(bulk_max=10_000, kept_max=1000)
    for i in range(LAG_BACKLOG + 10):
        box.offer(_m("span", i))
    box.offer(_m("token", 1))
    box.offer(_m("bye", 2))
    got = _drain(box)
    assert got[0] == ("token", 1)  # not behind 266 spans
    assert got[-1] == ("bye", 2) and len(got) == LAG_BACKLOG + 12
    assert box.dropped == 0
