"""Every exception trizmq raises, in one place.

```
TrizmqError
├── RingError            the ring file, or a target, is not valid
├── ProtocolError        bytes that are not a valid trizmq envelope
├── CallTimeout          no reply before the call's deadline (also a TimeoutError)
├── MessageTooLarge      a message over the size limit was not sent (also a ValueError)
├── AuthenticationFailed the service refused this client's CURVE handshake
├── VersionCapError      a version above the prepared target's cap (nothing sent)
├── HostUnreachable      no connection to the host: nothing was sent (also a ConnectionError)
└── RemoteError          the service answered with an error
    ├── NoSuchMethod     the method is not exposed by the endpoint
    ├── BadArguments     missing, unexpected or wrongly typed arguments
    ├── UnsupportedVersion no endpoint of a compatible version has the method
    ├── ServiceShutdown  the service stopped before the handler finished
    └── PeerLost         the service stopped answering heartbeats mid-call
```

A remote exception of a type the client allows (`open_client(allowed_exceptions=)`)
is raised as that type instead of `RemoteError`, with the same attributes.
"""

from __future__ import annotations


class TrizmqError(Exception):
    """Base class of every error trizmq raises."""


class RingError(TrizmqError):
    """A ring file, or a target looked up in a ring, is not valid.

    The message names the file, the key and the problem.
    """


class ProtocolError(TrizmqError):
    """Bytes received on a socket are not a valid trizmq envelope."""


class CallTimeout(TrizmqError, TimeoutError):
    """No reply arrived before the call's deadline.

    Attributes:
        topic: The topic the call was sent to.
        host: The host the call was sent to.
        method: The method called.
        timeout: The timeout of the call, in seconds.
    """

    def __init__(self, topic: str, host: str, method: str, timeout: float) -> None:
        super().__init__(f"{topic}.{host}: no reply to {method!r} within {timeout:g} s")
        self.topic = topic
        self.host = host
        self.method = method
        self.timeout = timeout


class MessageTooLarge(TrizmqError, ValueError):
    """A message is larger than the configured maximum size; it was not sent."""


class AuthenticationFailed(TrizmqError):
    """The service refused the connection's security handshake.

    Its key is not allowed, or one side uses CURVE and the other does not.
    Nothing is sent to that service until a handshake succeeds.
    """


class VersionCapError(TrizmqError):
    """A target was prepared with a version above its `version_cap`.

    oslo.messaging's `RPCVersionCapError`: raised by `prepare`, so nothing is
    sent. Check first with `BoundTarget.can_send_version`.
    """


class HostUnreachable(TrizmqError, ConnectionError):
    """No connection to the service could be made: the message was not sent.

    Raised by a call, cast or fanout that does not wait for its host
    (`wait_for_ready`): at once when the last attempt to connect failed
    (nothing listening, the host's name does not resolve), else once the
    client's connect timeout passed without a connection. The message was
    never handed to ZeroMQ, so the service never runs it, now or later.

    Attributes:
        topic: The topic of the target.
        host: The host that could not be reached.
        address: The ZeroMQ endpoint tried (``tcp://127.0.0.2:9501``), or ""
            when the host's name did not resolve.
        reason: Why, in words.
    """

    def __init__(self, topic: str, host: str, address: str, reason: str) -> None:
        at = f" at {address}" if address else ""
        super().__init__(f"{topic}.{host}{at}: {reason}")
        self.topic = topic
        self.host = host
        self.address = address
        self.reason = reason


class RemoteError(TrizmqError):
    """The service answered a call with an error.

    Attributes:
        type_name: The qualified name of the exception type raised remotely.
        message: The text of the remote exception.
        remote_traceback: The formatted traceback from the service, or "".
        host: The host that answered.
        topic: The topic that was called.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        remote_traceback: str = "",
        *,
        host: str = "",
        topic: str = "",
    ) -> None:
        where = f"{topic}.{host}: " if topic or host else ""
        super().__init__(f"{where}{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.host = host
        self.topic = topic


class NoSuchMethod(RemoteError):
    """The method called is not exposed by the service's endpoint."""


class BadArguments(RemoteError):
    """The arguments of a call do not fit the handler's signature.

    The message names the argument: missing, unexpected, or of the wrong type.
    """


class UnsupportedVersion(RemoteError):
    """No endpoint of the service serves the version (and namespace) the call asked for.

    The service has endpoints with the method, or of the namespace, but none
    whose version is compatible: the same major version and a minor at least
    the one asked for. The message names the versions it has.
    """


class ServiceShutdown(RemoteError):
    """The service shut down before the handler finished."""


class PeerLost(RemoteError):
    """The service stopped answering heartbeats while the call was in flight."""
