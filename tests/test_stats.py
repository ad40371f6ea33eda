"""Stats bookkeeping without sockets: subscriptions and the latency window."""

from __future__ import annotations

import math

from trizmq._stats import (
    MAX_LEASE,
    MAX_SUBSCRIBERS,
    MIN_INTERVAL,
    LatencyWindow,
    Subscriptions,
)


def test_a_new_subscriber_is_due_at_once_then_every_interval() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=0.5, lease=3, now=10.0)
    assert subs.due(10.0) == [(b"a", 1)]
    assert subs.due(10.4) == []
    assert subs.due(10.5) == [(b"a", 1)]


def test_a_renewal_extends_the_lease_without_an_early_push() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=0.5, lease=3, now=10.0)
    subs.due(10.0)
    subs.add(b"a", 1, interval=0.5, lease=3, now=10.2)
    assert subs.due(10.2) == []
    assert subs.due(12.9) == [(b"a", 1)]  # the first lease ended at 13.0; renewed to 13.2
    assert subs.due(13.1) == []
    assert subs.due(13.3) == []  # expired: forgotten
    assert subs.next_due() == math.inf


def test_a_new_interval_starts_a_new_schedule() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=0.5, lease=3, now=10.0)
    subs.due(10.0)
    subs.add(b"a", 1, interval=1.0, lease=3, now=10.2)
    assert subs.due(10.2) == [(b"a", 1)]


def test_intervals_and_leases_are_bounded() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=0.0, lease=10_000, now=0.0)
    subs.due(0.0)
    assert subs.next_due() == MIN_INTERVAL
    assert subs.due(MAX_LEASE + 1) == []


def test_a_nan_lease_expires_after_one_interval() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=0.5, lease=math.nan, now=0.0)
    assert subs.due(0.0) == [(b"a", 1)]
    assert subs.due(0.6) == []  # expired: forgotten
    assert subs.next_due() == math.inf


def test_an_infinite_interval_still_pushes_once_per_longest_lease() -> None:
    subs = Subscriptions()
    subs.add(b"a", 1, interval=math.inf, lease=math.inf, now=0.0)
    assert subs.due(0.0) == [(b"a", 1)]
    subs.add(b"a", 1, interval=math.inf, lease=math.inf, now=30.0)  # a renewal
    assert subs.due(MAX_LEASE) == [(b"a", 1)]


def subscribe_many(subs: Subscriptions, count: int) -> list[bool]:
    return [subs.add(b"%d" % n, 1, interval=1.0, lease=30, now=0.0) for n in range(count)]


def test_a_new_subscriber_past_the_cap_is_refused_and_never_pushed_to() -> None:
    subs = Subscriptions()
    assert all(subscribe_many(subs, MAX_SUBSCRIBERS))
    assert subs.add(b"late", 1, interval=1.0, lease=30, now=0.0) is False
    assert len(subs.due(0.0)) == MAX_SUBSCRIBERS
    assert b"late" not in {identity for identity, _ in subs.due(1.0)}


def test_a_full_port_still_accepts_renewals_and_resubscriptions() -> None:
    subs = Subscriptions()
    subscribe_many(subs, MAX_SUBSCRIBERS)
    assert subs.add(b"0", 1, interval=1.0, lease=30, now=5.0) is True  # a renewal
    assert subs.add(b"1", 2, interval=0.5, lease=30, now=5.0) is True  # a new schedule
    assert (b"1", 2) in subs.due(5.0)


def test_a_dropped_subscriber_frees_its_place() -> None:
    subs = Subscriptions()
    subscribe_many(subs, MAX_SUBSCRIBERS)
    subs.drop(b"0")
    assert subs.add(b"late", 1, interval=1.0, lease=30, now=0.0) is True


def test_latency_percentiles_cover_the_window_only() -> None:
    window = LatencyWindow()
    window.add(0.0, 5.0)  # long before the window
    for i in range(1, 101):
        window.add(100.0, i / 1000)
    summary = window.summary(100.0)
    assert summary["count"] == 100
    assert summary["max"] == 100.0
    assert summary["p50"] == 51.0
    assert summary["p99"] == 100.0
