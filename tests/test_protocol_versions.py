"""Namespaces, versions and allowed exceptions on the protocol cores alone:
which endpoint a request reaches (oslo's dispatcher's rules), how the service
refuses the others, and which remote exceptions a caller raises as themselves.
No sockets; the same rules run between processes in tests/test_versions.py."""

from __future__ import annotations

import sys
from typing import Any

import msgpack
import pytest
import version_errors

import trizmq
from trizmq._dispatch import Endpoints
from trizmq._known import KnownExceptions
from trizmq._protocol.caller import CallerCore
from trizmq._protocol.service import Job, Limits, ServiceCore
from trizmq._stats import ServiceStats
from trizmq._wire import Envelope, Error, ErrorCode, Kind, Reply, decode

TOPIC = "compute"


class V50:
    target = trizmq.Target(version="5.0")

    async def boot(self, ctx: trizmq.Context) -> str:
        return "5.0"


class V53:
    target = trizmq.Target(version="5.3")

    async def boot(self, ctx: trizmq.Context) -> str:
        return "5.3"

    async def resize(self, ctx: trizmq.Context) -> str:
        return "5.3"


class V61:
    target = trizmq.Target(version="6.1")

    async def boot(self, ctx: trizmq.Context) -> str:
        return "6.1"


class Base:
    target = trizmq.Target(namespace="baseapi", version="1.1")

    async def boot(self, ctx: trizmq.Context) -> str:
        return "baseapi"


class Plain:
    async def boot(self, ctx: trizmq.Context) -> str:
        return "1.0"


class Port:
    """A service port's core over `endpoints`, with what it sent recorded."""

    def __init__(self, *endpoints: object) -> None:
        self.sent: list[Envelope] = []
        table = Endpoints(list(endpoints))
        self.stats = ServiceStats("node", TOPIC, 9601, table.methods)
        self.core = ServiceCore(
            TOPIC,
            "node",
            table,
            self.stats,
            Limits(100, 10, 1_000_000, 10_000),
            send=lambda identity, frame, *counts: self.sent.append(decode(frame)),
            cancel=lambda job: None,
            wake=lambda: None,
            subscribed=lambda: None,
            clock=lambda: 0.0,
        )

    def send(self, frame: bytes) -> list[Job]:
        self.core.receive([[b"alice", frame]])
        jobs = []
        while self.core.ready:
            job = self.core.take()
            if job is not None:
                jobs.append(job)
        return jobs

    async def call(self, method: str, *extra: Any) -> Any:
        """The handler's result, or the error the call is answered with."""
        frame = msgpack.packb([1, Kind.CALL, 1, TOPIC, method, {}, {}, None, *extra])
        jobs = self.send(frame)
        if not jobs:
            [error] = self.sent
            self.sent.clear()
            return error
        [job] = jobs
        result = await job.method.func(job.ctx)
        self.core.succeeded(job, result)
        [reply] = self.sent
        self.sent.clear()
        assert isinstance(reply, Reply)
        return reply.result


def refusal(answer: Any) -> tuple[str, str]:
    assert isinstance(answer, Error), answer
    return answer.code, answer.type_name


UNSUPPORTED = (ErrorCode.UNSUPPORTED_VERSION, "trizmq.UnsupportedVersion")
NO_SUCH_METHOD = (ErrorCode.NO_SUCH_METHOD, "trizmq.NoSuchMethod")


async def test_a_request_naming_no_version_reaches_the_first_endpoint_with_the_method() -> None:
    port = Port(V50(), V53())
    assert await port.call("boot") == "5.0"
    assert await port.call("resize") == "5.3"


@pytest.mark.parametrize(
    ("asked", "served"), [("5.0", "5.0"), ("5.1", "5.3"), ("5.3", "5.3"), ("6.0", "6.1")]
)
async def test_a_versioned_request_reaches_the_first_endpoint_of_a_compatible_version(
    asked: str, served: str
) -> None:
    port = Port(V50(), V53(), V61())
    assert await port.call("boot", None, asked) == served


@pytest.mark.parametrize("asked", ["5.4", "4.0", "6.2", "7.0"])
async def test_a_version_no_endpoint_is_compatible_with_is_refused_naming_what_it_has(
    asked: str,
) -> None:
    port = Port(V50(), V53(), V61())
    answer = await port.call("boot", None, asked)
    assert refusal(answer) == UNSUPPORTED
    assert answer.message == (
        f"compute has no endpoint compatible with version {asked} for 'boot' (it has 5.0, 5.3, 6.1)"
    )
    assert port.stats.rejected["unsupported_version"] == 1


async def test_a_method_only_an_incompatible_endpoint_has_is_an_unsupported_version() -> None:
    answer = await Port(V50(), V53()).call("resize", None, "5.0")
    assert answer == "5.3"  # 5.3 serves 5.0 callers
    answer = await Port(V50(), V61()).call("boot", None, "6.2")
    assert refusal(answer) == UNSUPPORTED


async def test_a_method_no_endpoint_has_is_no_such_method_when_a_version_fits() -> None:
    answer = await Port(V50(), V53()).call("migrate", None, "5.1")
    assert refusal(answer) == NO_SUCH_METHOD
    assert answer.message == "compute has no method 'migrate'"


async def test_namespaces_keep_the_same_method_name_apart() -> None:
    port = Port(V53(), Base())
    assert await port.call("boot") == "5.3"
    assert await port.call("boot", "baseapi", None) == "baseapi"
    assert await port.call("boot", "baseapi", "1.0") == "baseapi"
    assert refusal(await port.call("boot", "baseapi", "1.2")) == UNSUPPORTED
    answer = await port.call("resize", "baseapi", None)
    assert refusal(answer) == NO_SUCH_METHOD
    assert answer.message == "compute (namespace 'baseapi') has no method 'resize'"


async def test_an_unknown_namespace_is_no_such_method() -> None:
    answer = await Port(V53(), Base()).call("boot", "cells", "1.0")
    assert refusal(answer) == NO_SUCH_METHOD
    assert answer.message == "compute has no namespace 'cells'"


async def test_an_endpoint_without_a_target_is_version_1_0_of_the_default_namespace() -> None:
    port = Port(Plain())
    assert await port.call("boot", None, "1.0") == "1.0"
    assert refusal(await port.call("boot", None, "1.1")) == UNSUPPORTED


@pytest.mark.parametrize("version", ["5", "5.3.1", "x.y", "-1.0", "05.1", ""])
async def test_a_malformed_version_on_the_wire_is_a_protocol_error_under_the_call_s_id(
    version: str,
) -> None:
    answer = await Port(V53()).call("boot", None, version)
    assert (answer.id, *refusal(answer)) == (1, ErrorCode.PROTOCOL, "trizmq.ProtocolError")
    assert "is 'MAJOR.MINOR'" in answer.message


async def test_a_namespaced_method_s_stats_are_kept_as_namespace_dot_method() -> None:
    port = Port(V53(), Base())
    await port.call("boot", "baseapi", None)
    await port.call("boot")
    assert set(port.stats.methods) == {"boot", "resize", "baseapi.boot"}
    assert port.stats.methods["baseapi.boot"].received["call"] == 1
    assert port.stats.methods["boot"].received["call"] == 1


async def test_each_cast_of_a_casts_carries_its_namespace_and_version() -> None:
    port = Port(V50(), V53(), Base())
    batch = msgpack.packb([1, Kind.CASTS, 1, TOPIC, "boot", [{}, {}], {}, "baseapi", "1.1"])
    jobs = port.send(batch)
    assert [job.method.name for job in jobs] == ["baseapi.boot", "baseapi.boot"]
    refused = msgpack.packb([1, Kind.CASTS, 9, TOPIC, "boot", [{}, {}], {}, None, "5.4"])
    assert port.send(refused) == []
    assert port.stats.rejected["unsupported_version"] == 2


def test_an_endpoint_s_target_must_be_a_trizmq_target() -> None:
    class Wrong:
        target = "5.3"

    with pytest.raises(TypeError, match=r"Wrong\.target must be a trizmq\.Target"):
        Endpoints([Wrong()])


# -- the caller's side: allowed exceptions ------------------------------------------


def outcome(known: KnownExceptions, type_name: str, message: str = "boom") -> BaseException:
    core: CallerCore[None] = CallerCore(TOPIC, "node", known)
    error = Error(1, ErrorCode.EXCEPTION, type_name, message, "Traceback: ...")
    with pytest.raises(BaseException) as caught:
        core.outcome(error, "boot", 1.0, None)
    return caught.value


def test_an_allowed_class_is_raised_with_the_remote_attributes() -> None:
    exc = outcome(KnownExceptions([version_errors.NoValidHost]), "version_errors.NoValidHost")
    assert type(exc) is version_errors.NoValidHost
    assert str(exc) == "boom"
    attributes = ("type_name", "message", "remote_traceback", "host", "topic")
    assert [getattr(exc, name) for name in attributes] == [
        "version_errors.NoValidHost",
        "boom",
        "Traceback: ...",
        "node",
        TOPIC,
    ]


def test_a_builtin_is_allowed_by_class_or_by_the_builtins_module() -> None:
    assert type(outcome(KnownExceptions([ValueError]), "ValueError")) is ValueError
    assert type(outcome(KnownExceptions(["builtins"]), "LookupError")) is LookupError


@pytest.mark.parametrize(
    "type_name",
    [
        "version_errors.Interrupt",  # a BaseException, not an Exception
        "version_errors.helper",  # not a class
        "version_errors.NoSuchClass",
        "version_errors.NoValidHost.__class__",  # the metaclass, by attribute walk
        "KeyboardInterrupt",
    ],
)
def test_a_name_that_is_not_an_exception_class_of_an_allowed_module_is_a_remote_error(
    type_name: str,
) -> None:
    exc = outcome(KnownExceptions(["version_errors", "builtins"]), type_name)
    assert type(exc) is trizmq.RemoteError


def test_a_class_is_allowed_only_under_its_own_name_not_a_module_that_imports_it() -> None:
    # version_app imports version_errors: NoValidHost is an attribute of it too.
    exc = outcome(KnownExceptions(["version_app"]), "version_app.version_errors.NoValidHost")
    assert type(exc) is trizmq.RemoteError


@pytest.mark.parametrize("module", ["this", "antigravity"])
def test_a_module_not_allowed_is_never_imported(module: str) -> None:
    # Importing either has side effects (printing the Zen, opening a browser).
    assert module not in sys.modules
    known = KnownExceptions([version_errors.NoValidHost, "version_errors"])
    for type_name in (f"{module}.Error", f"version_errors.{module}.Error", f"{module}"):
        assert type(outcome(known, type_name)) is trizmq.RemoteError
    assert module not in sys.modules


def test_an_error_that_is_not_a_handler_s_exception_is_never_converted() -> None:
    core: CallerCore[None] = CallerCore(TOPIC, "node", KnownExceptions(["builtins"]))
    error = Error(1, ErrorCode.NO_SUCH_METHOD, "ValueError", "boom", "")
    with pytest.raises(trizmq.NoSuchMethod):
        core.outcome(error, "boot", 1.0, None)
