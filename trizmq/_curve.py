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

import datetime
import glob
import logging
import os
import secrets
import stat
import struct
from pathlib import Path

import attrs
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from ._errors import TrizmqError

logger = logging.getLogger("trizmq.security")


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

        A secret key file other users can read is logged as a warning on
        the `trizmq.security` logger.

        Args:
            secret_key_file: The service's `.key_secret` certificate.
            allowed_clients: A directory of the `.key` files of allowed clients.

        Raises:
            TrizmqError: A file or the directory cannot be read, or a key
                file in it is malformed.
        """
        public, secret = _load_pair(secret_key_file)
        _warn_if_exposed(Path(secret_key_file))
        directory = Path(allowed_clients)
        if not directory.is_dir():
            raise TrizmqError(f"{directory}: not a directory of allowed client keys")
        # The ZAP authenticator would log one bad file and then refuse every client.
        for path in sorted(glob.glob(os.path.join(directory, "*.key"))):  # its own pattern
            _load(path)
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


def generate_keys(
    directory: str | os.PathLike[str], name: str, *, force: bool = False
) -> tuple[Path, Path]:
    """Write a key pair, `NAME.key` and `NAME.key_secret`, into `directory`.

    The secret key file has mode 0600 from its creation on, and each file
    appears complete or not at all.

    Args:
        directory: Where to write the files (created if missing).
        name: The files' base name.
        force: Replace an existing key pair instead of refusing.

    Returns:
        The paths of the public and the secret key file.

    Raises:
        TrizmqError: A key file exists already and `force` is false.
    """
    root = Path(directory)
    public, secret = root / f"{name}.key", root / f"{name}.key_secret"
    if not force:
        for path in (public, secret):
            if path.exists():
                raise TrizmqError(f"{path}: already exists (pass --force to replace the key pair)")
    root.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = zmq.curve_keypair()
    # The certificate format of pyzmq's `zmq.auth.create_certificates`.
    header = f"#   Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by trizmq\n"
    curve = f'metadata\ncurve\n    public-key = "{public_key.decode()}"\n'
    _install(public, f"{header}#   ZeroMQ CURVE Public Certificate\n\n{curve}", 0o644, force)
    _install(
        secret,
        f"{header}#   ZeroMQ CURVE **Secret** Certificate: keep it to yourself, mode 0600\n\n"
        f'{curve}    secret-key = "{secret_key.decode()}"\n',
        0o600,
        force,
    )
    return public, secret


def _install(path: Path, text: str, mode: int, replace: bool) -> None:
    """Write `path` through a temporary file created with `mode`, so it never has looser bits."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if replace:
            os.replace(temporary, path)
        else:
            # A link, unlike a rename, fails if a file appeared there meanwhile.
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _warn_if_exposed(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "%s: the secret key file has mode %04o, so other users can read it; "
            "fix it with `chmod 600 %s`",
            path,
            mode,
            path,
        )


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise TrizmqError(f"{path}: cannot load a CURVE key: {exc}") from None
    except ValueError:
        raise TrizmqError(f"{path}: malformed CURVE key file: no public-key line") from None
    for label, key in (("public-key", public), ("secret-key", secret)):
        if key is not None and not _is_z85_key(key):
            raise TrizmqError(
                f"{path}: malformed CURVE key file: its {label} is not a key "
                "(40 Z85 characters expected)"
            )
    return public, secret


def _is_z85_key(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        z85.decode(key)
    except (KeyError, struct.error):  # a character outside Z85, or a group over 2**32
        return False
    return True


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
