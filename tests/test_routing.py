"""Round-robin: each client turns through the hosts of a topic on its own."""

from __future__ import annotations

from trizmq._routing import RoundRobin

HOSTS = ("controller", "computenodex")


def test_round_robin_alternates() -> None:
    rr = RoundRobin()
    picks = [rr.next("compute", HOSTS) for _ in range(4)]
    assert picks == ["controller", "computenodex", "controller", "computenodex"]


def test_round_robin_with_one_host_always_returns_it() -> None:
    rr = RoundRobin()
    assert {rr.next("scheduler", ("controller",)) for _ in range(3)} == {"controller"}


def test_each_topic_has_its_own_cursor() -> None:
    rr = RoundRobin()
    assert [rr.next("compute", HOSTS), rr.next("network", HOSTS)] == ["controller"] * 2
    assert [rr.next("compute", HOSTS), rr.next("network", HOSTS)] == ["computenodex"] * 2


def test_each_client_has_its_own_cursors() -> None:
    first, second = RoundRobin(), RoundRobin()
    assert first.next("compute", HOSTS) == second.next("compute", HOSTS) == "controller"


def test_round_robin_skips_hosts_known_down() -> None:
    rr = RoundRobin()
    picks = [rr.next("compute", HOSTS, skip={"controller"}) for _ in range(3)]
    assert picks == ["computenodex"] * 3


def test_round_robin_goes_on_in_turn_when_every_host_is_down() -> None:
    rr = RoundRobin()
    picks = [rr.next("compute", HOSTS, skip=set(HOSTS)) for _ in range(3)]
    assert picks == ["controller", "computenodex", "controller"]


def test_round_robin_resumes_its_rotation_after_skipping() -> None:
    rr = RoundRobin()
    hosts = ("a", "b", "c")
    assert [rr.next("t", hosts, skip={"a"}), rr.next("t", hosts), rr.next("t", hosts)] == [
        "b",
        "c",
        "a",
    ]
