"""CurveZMQ: encryption and authentication with ZeroMQ's CURVE mechanism.

Keys are ZeroMQ certificate files, as `zmq.auth.create_certificates` writes
them (`trizmq keys generate`). A service holds its secret key and a directory
of the client public keys it allows; a client holds its own key pair and the
services' public key. The ring file does not change.

Allowed client keys are checked by pyzmq's ZAP authenticator, one per process
for all its services, started with the first CURVE service and stopped with
the last.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ._errors import TrizmqError


@attrs.frozen
class Curve:
    """The CURVE keys of one side of a connection.

    Build it with `Curve.server` or `Curve.client`; pass it as `curve=` to
    `serve`, `open_client` and the monitor.

    Attributes:
        public_key: This side's public key (Z85).
        secret_key: This side's secret key (Z85).
        server_key: For a client: the services' public key.
        allowed_clients: For a service: the directory of allowed client public keys.
    """

    public_key: bytes = attrs.field(repr=False)
    secret_key: bytes = attrs.field(repr=False)
    server_key: bytes | None = attrs.field(default=None, repr=False)
    allowed_clients: Path | None = None

    @classmethod
    def server(
        cls, secret_key_file: str | os.PathLike[str], allowed_clients: str | os.PathLike[str]
    ) -> Curve:
        """The keys of a service.

        Args:
            secret_key_file: The service's `.key_secret` certificate.
            allowed_clients: A directory of the `.key` files of allowed clients.

        Raises:
            TrizmqError: A file or the directory cannot be read.
        """
        public, secret = _load_pair(secret_key_file)
        directory = Path(allowed_clients)
        if not directory.is_dir():
            raise TrizmqError(f"{directory}: not a directory of allowed client keys")
        return cls(public, secret, allowed_clients=directory)

    @classmethod
    def client(
        cls, secret_key_file: str | os.PathLike[str], server_key_file: str | os.PathLike[str]
    ) -> Curve:
        """The keys of a client.

        Args:
            secret_key_file: The client's `.key_secret` certificate.
            server_key_file: The services' public `.key` certificate.

        Raises:
            TrizmqError: A file cannot be read.
        """
        public, secret = _load_pair(secret_key_file)
        server, _ = _load(server_key_file)
        return cls(public, secret, server_key=server)

    def apply(self, sock: zmq.Socket[bytes], domain: str = "") -> None:
        """Set the socket's CURVE options: server side if there is no server key."""
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        if self.server_key is None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)


def generate_keys(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write a key pair, `NAME.key` and `NAME.key_secret`, into `directory`.

    Returns:
        The paths of the public and the secret key file.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TrizmqError(f"{path}: cannot load a CURVE key: {exc}") from None


def _load_pair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    public, secret = _load(path)
    if secret is None:
        raise TrizmqError(f"{path}: holds no secret key (use the .key_secret file)")
    return public, secret


class Authenticator:
    """The process's ZAP handler, shared by its CURVE services (reference counted)."""

    _auth: ThreadAuthenticator | None = None
    _users = 0

    @classmethod
    def acquire(cls, domain: str, allowed_clients: Path) -> None:
        """Allow the client keys in `allowed_clients` on sockets of ZAP `domain`."""
        if cls._auth is None:
            cls._auth = ThreadAuthenticator(zmq.Context.instance())
            cls._auth.start()
        cls._users += 1
        cls._auth.configure_curve(domain=domain, location=allowed_clients)

    @classmethod
    def release(cls) -> None:
        """One service stopped; the last one stops the handler."""
        cls._users -= 1
        if cls._users == 0 and cls._auth is not None:
            cls._auth.stop()
            cls._auth = None
