"""Tests for trizmq._ring: loading, validation, queries and host resolution."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trizmq import RingError
from trizmq._ring import REPLIES_TOPIC, Ring, Service, parse_resolve, resolve_address, tcp_url

SEED_RING = Path(__file__).resolve().parents[1] / "trizmq" / "demo" / "seed_ring.json"
# The project's shared copy of the seed ring, outside the repository.
SHARED_SEED_RING = Path(__file__).resolve().parents[2] / "shared" / "rings" / "seed_ring.json"

SEED_PORTS = {
    "cert": 9507,
    "cinder-scheduler": 9508,
    "cinder-volume": 9509,
    "compute": 9501,
    "conductor": 9502,
    "consoleauth": 9503,
    "network": 9504,
    "scheduler": 9506,
    "zmq_replies": 9510,
}


@pytest.fixture
def seed() -> Ring:
    return Ring.load(SEED_RING)


def write_ring(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ring.json"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: object) -> tuple[str, str]:
    """Write ``data`` as JSON, load it, and return (path, error message)."""
    path = write_ring(tmp_path, json.dumps(data))
    with pytest.raises(RingError) as info:
        Ring.load(path)
    return str(path), str(info.value)


# -- the seed ring ------------------------------------------------------------


def test_seed_ring_has_all_nine_topics_sorted(seed: Ring) -> None:
    assert seed.topics == tuple(sorted(SEED_PORTS))


def test_seed_ring_ports(seed: Ring) -> None:
    assert {topic: seed.port(topic) for topic in seed.topics} == SEED_PORTS


def test_seed_ring_hosts_of_keep_file_order(seed: Ring) -> None:
    assert seed.hosts_of("compute") == ("controller", "computenodex")
    assert seed.hosts_of("network") == ("controller", "computenodex")
    assert seed.hosts_of("cinder-volume") == ("controller",)


def test_seed_ring_hosts_are_sorted(seed: Ring) -> None:
    assert seed.hosts == ("computenodex", "controller")


def test_seed_ring_source_is_the_path(seed: Ring) -> None:
    assert seed.source == str(SEED_RING)


def test_seed_copy_is_byte_identical_to_shared_seed() -> None:
    if not SHARED_SEED_RING.exists():
        pytest.skip(f"{SHARED_SEED_RING} is not present")
    assert SEED_RING.read_bytes() == SHARED_SEED_RING.read_bytes()


# -- file-level errors --------------------------------------------------------


def test_invalid_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_ring(tmp_path, '{\n  "compute:9501": ["controller",]\n}\n')
    with pytest.raises(RingError) as info:
        Ring.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "invalid JSON at line 2 column 33: Expecting value" in message


def test_json_nested_too_deeply_is_a_ring_error(tmp_path: Path) -> None:
    path = write_ring(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(RingError) as info:
        Ring.load(path)
    assert str(info.value) == f"{path}: invalid JSON: nested too deeply"


def test_a_number_too_long_for_python_is_a_ring_error(tmp_path: Path) -> None:
    path = write_ring(tmp_path, '{"compute:9501": [' + "1" * 5_000 + "]}")
    with pytest.raises(RingError) as info:
        Ring.load(path)
    assert (
        str(info.value)
        == f"{path}: invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(RingError, match="ring file not found") as info:
        Ring.load(path)
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (unlike chmod 000).
    with pytest.raises(RingError, match="cannot read ring file") as info:
        Ring.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    path.write_bytes(b'{"compute:9501": ["contr\xffoller"]}')
    with pytest.raises(RingError, match="not UTF-8") as info:
        Ring.load(path)
    assert str(path) in str(info.value)


def test_top_level_not_an_object(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [["compute:9501", ["controller"]]])
    assert message.startswith(f"{path}: ")
    assert "must be a JSON object" in message
    assert "not an array" in message


def test_empty_ring(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {})
    assert message == f"{path}: the ring has no topics"


def test_duplicate_key(tmp_path: Path) -> None:
    path = write_ring(
        tmp_path, '{"compute:9501": ["controller"], "compute:9501": ["computenodex"]}'
    )
    with pytest.raises(RingError) as info:
        Ring.load(path)
    assert str(info.value) == (
        f"{path}: key 'compute:9501': the key appears twice in the JSON object"
    )


# -- keys: topic and port -----------------------------------------------------


def test_key_without_port(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute": ["controller"]})
    assert message.startswith(f"{path}: key 'compute': no port")


def test_key_with_empty_port(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:": ["controller"]})
    assert message == f"{path}: key 'compute:': the port after ':' is empty"


@pytest.mark.parametrize(
    "port", ["abc", "95.1", "+9501", " 9501", "9501 ", "-1", "1e4", "0x2525", "\u0669\u0665"]
)
def test_port_not_digits_only(tmp_path: Path, port: str) -> None:
    key = f"compute:{port}"
    path, message = load_error(tmp_path, {key: ["controller"]})
    assert message == f"{path}: key {key!r}: port {port!r} is not a number: use digits only"


def test_port_with_leading_zero(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:09501": ["controller"]})
    assert message == f"{path}: key 'compute:09501': port '09501' has a leading zero"


@pytest.mark.parametrize("port", ["0", "65536", "70000"])
def test_port_out_of_range(tmp_path: Path, port: str) -> None:
    path, message = load_error(tmp_path, {f"compute:{port}": ["controller"]})
    assert message == f"{path}: key 'compute:{port}': port {port} is out of range 1-65535"


def test_port_range_bounds_are_accepted() -> None:
    ring = Ring.from_mapping({"low:1": ["a"], "high:65535": ["a"]})
    assert (ring.port("low"), ring.port("high")) == (1, 65535)


def test_empty_topic_name(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {":9501": ["controller"]})
    assert message == f"{path}: key ':9501': the topic name before ':' is empty"


@pytest.mark.parametrize(
    ("topic", "char"),
    [
        ("nova.compute", "."),
        ("nova compute", " "),
        ("nova/compute", "/"),
        ("nova:compute", ":"),
        ("nova\tcompute", "\t"),
        ("c\u00f6mpute", "\u00f6"),
    ],
)
def test_topic_with_forbidden_character(tmp_path: Path, topic: str, char: str) -> None:
    key = f"{topic}:9501"
    path, message = load_error(tmp_path, {key: ["controller"]})
    assert message.startswith(f"{path}: key {key!r}: topic {topic!r} contains {char!r};")


def test_topic_names_may_use_dash_and_underscore() -> None:
    ring = Ring.from_mapping({"cinder-volume:9509": ["controller"], "my_topic-2:9511": ["h_1-b"]})
    assert ring.topics == ("cinder-volume", "my_topic-2")


def test_topic_listed_with_two_ports(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, {"compute:9501": ["controller"], "compute:9502": ["computenodex"]}
    )
    assert message == (
        f"{path}: key 'compute:9502': topic 'compute' is already listed with port 9501 "
        "(key 'compute:9501'); a topic has exactly one port"
    )


def test_two_topics_on_one_port_of_one_host(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        {"compute:9501": ["controller", "computenodex"], "network:9501": ["computenodex"]},
    )
    assert message.startswith(
        f"{path}: key 'network:9501': port 9501 on host 'computenodex' is claimed by both "
        "topic 'compute' and topic 'network';"
    )


def test_two_topics_may_share_a_port_on_disjoint_hosts() -> None:
    ring = Ring.from_mapping({"compute:9501": ["computenodex"], "scheduler:9501": ["controller"]})
    assert ring.port("compute") == ring.port("scheduler") == 9501


# -- host lists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "kind"),
    [("controller", "a string"), (5, "a number"), (None, "null")],
)
def test_hosts_not_a_list(tmp_path: Path, hosts: object, kind: str) -> None:
    path, message = load_error(tmp_path, {"compute:9501": hosts})
    assert message == (
        f"{path}: key 'compute:9501': hosts must be a list of host names or an object of pools, "
        f"not {kind}"
    )


def test_empty_host_list(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:9501": []})
    assert message.startswith(f"{path}: key 'compute:9501': the host list is empty")


def test_host_not_a_string(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:9501": ["controller", 7]})
    assert message == f"{path}: key 'compute:9501': host at index 1 is a number 7, not a string"


def test_empty_host_name(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:9501": [""]})
    assert message == f"{path}: key 'compute:9501': host at index 0 is an empty string"


def test_duplicate_host(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:9501": ["controller", "controller"]})
    assert message == f"{path}: key 'compute:9501': host 'controller' is listed twice"


@pytest.mark.parametrize(
    ("host", "char"),
    [("control ler", " "), ("a/b", "/"), ("a:b", ":"), ("node1.exa mple.com", " ")],
)
def test_host_with_forbidden_character(tmp_path: Path, host: str, char: str) -> None:
    path, message = load_error(tmp_path, {"compute:9501": [host]})
    assert message.startswith(f"{path}: key 'compute:9501': host {host!r} contains {char!r};")


# -- pools --------------------------------------------------------------------

POOLED = {
    "compute:9501": ["controller", "computenodex"],
    "notifications:9700": {"scheduler": ["controller"], "audit": ["computenodex", "controller2"]},
}


@pytest.fixture
def pooled() -> Ring:
    return Ring.from_mapping(POOLED)


def test_pools_of_a_topic_of_pools_keep_file_order(pooled: Ring) -> None:
    assert list(pooled.pools_of("notifications").items()) == [
        ("scheduler", ("controller",)),
        ("audit", ("computenodex", "controller2")),
    ]


def test_pools_of_a_plain_host_list_is_one_pool_named_default(pooled: Ring) -> None:
    assert pooled.pools_of("compute") == {"default": ("controller", "computenodex")}


def test_hosts_of_a_topic_of_pools_is_every_pool_s_hosts_in_order(pooled: Ring) -> None:
    assert pooled.hosts_of("notifications") == ("controller", "computenodex", "controller2")


def test_a_topic_of_pools_is_served_and_targeted_like_any_topic(pooled: Ring) -> None:
    assert pooled.serves("notifications", "controller2")
    assert pooled.resolve_target("notifications.computenodex") == ("notifications", "computenodex")
    assert Service("controller2", "notifications", 9700) in pooled.services_of("controller2")


def test_pools_of_an_unknown_topic(pooled: Ring) -> None:
    with pytest.raises(RingError, match="unknown topic 'volume'"):
        pooled.pools_of("volume")


def test_to_json_gives_the_pools_of_a_topic_of_pools_only(pooled: Ring) -> None:
    topics = {t["topic"]: t for t in pooled.to_json()["topics"]}
    assert topics["notifications"] == {
        "topic": "notifications",
        "port": 9700,
        "hosts": ["controller", "computenodex", "controller2"],
        "pools": {"scheduler": ["controller"], "audit": ["computenodex", "controller2"]},
    }
    assert "pools" not in topics["compute"]


def test_to_json_round_trips_pools(pooled: Ring) -> None:
    data = json.loads(json.dumps(pooled.to_json()))
    mapping = {f"{t['topic']}:{t['port']}": t.get("pools", t["hosts"]) for t in data["topics"]}
    again = Ring.from_mapping(mapping)
    assert again == pooled
    assert again.pools_of("notifications") == pooled.pools_of("notifications")


def test_a_ring_file_with_pools_loads(tmp_path: Path) -> None:
    ring = Ring.load(write_ring(tmp_path, json.dumps(POOLED)))
    assert ring.pools_of("notifications")["audit"] == ("computenodex", "controller2")


def test_a_host_in_two_pools_of_one_topic(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"a": ["x", "y"], "b": ["z", "y"]}})
    assert message == (
        f"{path}: key 'n:9700': host 'y' is in both pool 'a' and pool 'b'; "
        "a host serves a topic on one port, so it belongs to one pool"
    )


def test_a_host_may_be_in_pools_of_two_topics() -> None:
    ring = Ring.from_mapping({"n:9700": {"a": ["x"]}, "m:9701": {"a": ["x"]}})
    assert ring.services_of("x") == (Service("x", "n", 9700), Service("x", "m", 9701))


def test_an_empty_pool_object(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {}})
    assert message == (
        f"{path}: key 'n:9700': the pool object is empty; a topic needs at least one pool"
    )


def test_an_empty_pool(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"a": ["x"], "b": []}})
    assert message == (
        f"{path}: key 'n:9700': pool 'b': the host list is empty; a pool needs at least one host"
    )


@pytest.mark.parametrize(
    ("hosts", "kind"), [("x", "a string"), ({"x": ["y"]}, "an object"), (None, "null")]
)
def test_a_pool_s_hosts_not_a_list(tmp_path: Path, hosts: object, kind: str) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"a": hosts}})
    assert (
        message == f"{path}: key 'n:9700': pool 'a': hosts must be a list of host names, not {kind}"
    )


def test_a_pool_s_host_not_a_string(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"a": ["x", 7]}})
    assert message == f"{path}: key 'n:9700': pool 'a': host at index 1 is a number 7, not a string"


def test_a_host_listed_twice_in_one_pool(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"a": ["x", "x"]}})
    assert message == f"{path}: key 'n:9700': pool 'a': host 'x' is listed twice"


def test_an_empty_pool_name(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"n:9700": {"": ["x"]}})
    assert message == f"{path}: key 'n:9700': a pool name is an empty string"


@pytest.mark.parametrize(("name", "char"), [("a.b", "."), ("a b", " "), ("a:b", ":")])
def test_a_pool_name_with_a_forbidden_character(tmp_path: Path, name: str, char: str) -> None:
    path, message = load_error(tmp_path, {"n:9700": {name: ["x"]}})
    assert message == (
        f"{path}: key 'n:9700': pool {name!r} contains {char!r}; "
        "names use only letters, digits, '_' and '-'"
    )


def test_a_pool_name_not_a_string() -> None:
    with pytest.raises(RingError) as info:
        Ring.from_mapping({"n:9700": {1: ["x"]}})
    assert str(info.value) == "<mapping>: key 'n:9700': pool name 1 is a number, not a string"


def test_a_pooled_host_still_claims_its_port(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"compute:9700": ["x"], "n:9700": {"a": ["y", "x"]}})
    assert message.startswith(
        f"{path}: key 'n:9700': port 9700 on host 'x' is claimed by both topic 'compute'"
    )


def test_hosts_may_be_fully_qualified_domain_names(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    hosts = ["node1.example.com", "node-2.rack_3.example.org", "10.0.0.5"]
    path.write_text(json.dumps({"compute:9501": hosts}), encoding="utf-8")
    ring = Ring.load(path)
    assert ring.hosts_of("compute") == tuple(hosts)
    assert ring.resolve_target("compute.node1.example.com") == ("compute", "node1.example.com")


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (".node1", "has an empty label: '.' at its start or end, or '..'"),
        ("node1.", "has an empty label: '.' at its start or end, or '..'"),
        ("node1..example.com", "has an empty label: '.' at its start or end, or '..'"),
        ("-node1.example.com", "has a label '-node1' that starts or ends with '-'"),
        ("node1.example-.com", "has a label 'example-' that starts or ends with '-'"),
        (f"{'a' * 64}.example.com", "has a label of 64 characters, over 63"),
    ],
)
def test_host_names_follow_rfc_1123(tmp_path: Path, host: str, problem: str) -> None:
    path, message = load_error(tmp_path, {"compute:9501": [host]})
    assert message == f"{path}: key 'compute:9501': host {host!r} {problem}"


def test_a_host_name_over_253_characters_is_refused(tmp_path: Path) -> None:
    host = ".".join(["a" * 60] * 5)
    path, message = load_error(tmp_path, {"compute:9501": [host]})
    assert message.startswith(f"{path}: key 'compute:9501': host {host[:20]!r}...")
    assert message.endswith(f"is {len(host)} characters, over 253")


def test_a_topic_with_a_dot_is_refused(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {"com.pute:9501": ["node1"]})
    assert message.startswith(f"{path}: key 'com.pute:9501': topic 'com.pute' contains '.';")


# -- from_mapping -------------------------------------------------------------


def test_from_mapping_builds_a_ring() -> None:
    ring = Ring.from_mapping({"compute:9501": ["a", "b"], "scheduler:9506": ["a"]})
    assert ring.source == "<mapping>"
    assert ring.topics == ("compute", "scheduler")
    assert ring.hosts_of("compute") == ("a", "b")


def test_from_mapping_equals_loaded_seed(seed: Ring) -> None:
    data = json.loads(SEED_RING.read_text(encoding="utf-8"))
    assert Ring.from_mapping(data, source=seed.source) == seed


def test_from_mapping_errors_name_the_mapping() -> None:
    with pytest.raises(RingError) as info:
        Ring.from_mapping({"compute:0": ["a"]})
    assert str(info.value).startswith("<mapping>: key 'compute:0': port 0")


def test_from_mapping_uses_the_given_source_in_errors() -> None:
    with pytest.raises(RingError, match=r"^settings\.py: key 'compute'"):
        Ring.from_mapping({"compute": ["a"]}, source="settings.py")


def test_from_mapping_accepts_tuples_of_hosts() -> None:
    assert Ring.from_mapping({"compute:9501": ("a", "b")}).hosts_of("compute") == ("a", "b")


# -- queries ------------------------------------------------------------------


def test_port_of_unknown_topic(seed: Ring) -> None:
    with pytest.raises(RingError, match="unknown topic 'volume'") as info:
        seed.port("volume")
    assert str(SEED_RING) in str(info.value)


def test_hosts_of_unknown_topic(seed: Ring) -> None:
    with pytest.raises(RingError, match="unknown topic 'volume'"):
        seed.hosts_of("volume")


def test_serves(seed: Ring) -> None:
    assert seed.serves("compute", "computenodex")
    assert not seed.serves("scheduler", "computenodex")
    assert not seed.serves("volume", "controller")


def test_to_json(seed: Ring) -> None:
    data = seed.to_json()
    assert data["source"] == str(SEED_RING)
    assert [t["topic"] for t in data["topics"]] == list(seed.topics)
    assert data["topics"][3] == {
        "topic": "compute",
        "port": 9501,
        "hosts": ["controller", "computenodex"],
    }
    assert json.loads(json.dumps(data)) == data


def test_the_hosts_of_an_unknown_topic_is_a_ring_error(seed: Ring) -> None:
    with pytest.raises(RingError, match="unknown topic 'volume'"):
        seed.hosts_of("volume")


# -- targets ------------------------------------------------------------------


def test_resolve_target_topic(seed: Ring) -> None:
    assert seed.resolve_target("compute") == ("compute", None)


def test_resolve_target_topic_dot_host(seed: Ring) -> None:
    assert seed.resolve_target("compute.computenodex") == ("compute", "computenodex")


def test_resolve_target_topic_with_dash(seed: Ring) -> None:
    assert seed.resolve_target("cinder-volume.controller") == ("cinder-volume", "controller")


def test_resolve_target_unknown_topic(seed: Ring) -> None:
    with pytest.raises(RingError) as info:
        seed.resolve_target("volume.controller")
    message = str(info.value)
    assert message.startswith(f"{SEED_RING}: target 'volume.controller': unknown topic 'volume'")


def test_resolve_target_host_not_serving_topic(seed: Ring) -> None:
    with pytest.raises(RingError) as info:
        seed.resolve_target("scheduler.computenodex")
    assert "target 'scheduler.computenodex': host 'computenodex' does not serve topic" in str(
        info.value
    )


def test_resolve_target_splits_on_first_dot(seed: Ring) -> None:
    with pytest.raises(
        RingError, match=r"host 'controller\.example' does not serve topic 'compute'"
    ):
        seed.resolve_target("compute.controller.example")


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("", "the topic name is empty"),
        (".controller", "the topic name is empty"),
        ("compute.", "the host name after '.' is empty"),
    ],
)
def test_resolve_target_empty_parts(seed: Ring, target: str, problem: str) -> None:
    with pytest.raises(RingError) as info:
        seed.resolve_target(target)
    assert str(info.value) == f"{SEED_RING}: target {target!r}: {problem}"


def test_resolve_target_refuses_reserved_topic(seed: Ring) -> None:
    with pytest.raises(RingError, match="'zmq_replies' is reserved"):
        seed.resolve_target("zmq_replies.controller")


# -- zmq_replies and services -------------------------------------------------


def test_zmq_replies_is_a_listed_but_reserved_topic(seed: Ring) -> None:
    assert REPLIES_TOPIC == "zmq_replies"
    assert "zmq_replies" in seed.topics
    assert seed.port("zmq_replies") == 9510
    assert Ring.is_reserved("zmq_replies")
    assert not seed.is_reserved("compute")


def test_services_of_controller(seed: Ring) -> None:
    assert seed.services_of("controller") == (
        Service("controller", "compute", 9501),
        Service("controller", "conductor", 9502),
        Service("controller", "consoleauth", 9503),
        Service("controller", "network", 9504),
        Service("controller", "scheduler", 9506),
        Service("controller", "cert", 9507),
        Service("controller", "cinder-scheduler", 9508),
        Service("controller", "cinder-volume", 9509),
    )


def test_services_of_computenodex(seed: Ring) -> None:
    assert seed.services_of("computenodex") == (
        Service("computenodex", "compute", 9501),
        Service("computenodex", "network", 9504),
    )


def test_services_of_can_include_reserved(seed: Ring) -> None:
    services = seed.services_of("computenodex", include_reserved=True)
    assert services[-1] == Service("computenodex", "zmq_replies", 9510)


def test_services_of_unknown_host(seed: Ring) -> None:
    with pytest.raises(RingError, match="host 'controler' is not in the ring"):
        seed.services_of("controler")


def test_services_sorted_by_host_then_port_without_reserved(seed: Ring) -> None:
    services = seed.services()
    assert [s.host for s in services] == ["computenodex"] * 2 + ["controller"] * 8
    assert services == seed.services_of("computenodex") + seed.services_of("controller")
    assert all(s.topic != "zmq_replies" for s in services)


def test_services_can_include_reserved(seed: Ring) -> None:
    assert len(seed.services(include_reserved=True)) == len(seed.services()) + 2


def test_service_target() -> None:
    assert Service("computenodex", "compute", 9501).target == "compute.computenodex"


# -- host resolution ----------------------------------------------------------


def test_resolve_address_prefers_explicit_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(host: str) -> str:
        raise AssertionError("the system resolver must not be asked")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert resolve_address("controller", {"controller": "127.0.0.2"}) == "127.0.0.2"


def answers(*addresses: str) -> Callable[..., list[tuple[Any, ...]]]:
    """A stand-in for `socket.getaddrinfo` answering `addresses`, in order."""

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
            for a in addresses
        ]

    return getaddrinfo


def test_resolve_address_falls_back_to_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", answers("10.0.0.5"))
    assert resolve_address("controller", {"computenodex": "127.0.0.3"}) == "10.0.0.5"
    assert resolve_address("controller", None) == "10.0.0.5"


def test_a_name_with_ipv4_and_ipv6_addresses_resolves_to_its_ipv4_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", answers("2001:db8::5", "10.0.0.5"))
    assert resolve_address("node1.example.com", None) == "10.0.0.5"


def test_a_name_with_only_ipv6_addresses_resolves_to_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", answers("2001:db8::5", "2001:db8::6"))
    assert resolve_address("node6.example.com", None) == "2001:db8::5"


def test_resolve_address_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(host: str, *args: Any, **kwargs: Any) -> str:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(RingError, match="cannot resolve host 'nowhere'"):
        resolve_address("nowhere", None)


def test_parse_resolve() -> None:
    assert parse_resolve(["controller=127.0.0.2", "computenodex=127.0.0.3"]) == {
        "controller": "127.0.0.2",
        "computenodex": "127.0.0.3",
    }


def test_parse_resolve_of_nothing() -> None:
    assert parse_resolve([]) == {}


def test_parse_resolve_allows_repeating_the_same_pair() -> None:
    assert parse_resolve(["a=127.0.0.2", "a=127.0.0.2"]) == {"a": "127.0.0.2"}


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("controller", "expected NAME=ADDR"),
        ("=127.0.0.2", "the host name before '=' is empty"),
        ("controller=", "'' is not an IPv4 or IPv6 address"),
        ("controller=nowhere", "'nowhere' is not an IPv4 or IPv6 address"),
        ("controller=127.0.0.256", "'127.0.0.256' is not an IPv4 or IPv6 address"),
        ("controller=::1::2", "'::1::2' is not an IPv4 or IPv6 address"),
        ("controller=[::1", "'[::1' is not an IPv4 or IPv6 address"),
        ("controller=[127.0.0.2]x", "'[127.0.0.2]x' is not an IPv4 or IPv6 address"),
        ("con troller=127.0.0.2", "host 'con troller' contains ' '"),
        ("node1..example.com=127.0.0.2", "host 'node1..example.com' has an empty label"),
    ],
)
def test_parse_resolve_malformed(item: str, problem: str) -> None:
    with pytest.raises(RingError) as info:
        parse_resolve([item])
    assert str(info.value).startswith(f"--resolve {item!r}: {problem}")


def test_parse_resolve_takes_fully_qualified_names_and_ipv6_addresses() -> None:
    assert parse_resolve(
        ["node1.example.com=127.0.0.2", "node6=::1", "node7=[::1]", "node8=2001:DB8:0::8"]
    ) == {
        "node1.example.com": "127.0.0.2",
        "node6": "::1",
        "node7": "::1",
        "node8": "2001:db8::8",
    }


def test_tcp_urls_put_ipv6_addresses_in_brackets() -> None:
    assert tcp_url("127.0.0.2", 9501) == "tcp://127.0.0.2:9501"
    assert tcp_url("::1", 9501) == "tcp://[::1]:9501"
    assert tcp_url("2001:db8::8", 9501) == "tcp://[2001:db8::8]:9501"


def test_parse_resolve_one_name_two_addresses() -> None:
    with pytest.raises(RingError, match=r"host 'a' is already resolved to 127\.0\.0\.2"):
        parse_resolve(["a=127.0.0.2", "a=127.0.0.3"])
