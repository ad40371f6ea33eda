# --8<-- [start:program]
"""CurveZMQ: an encrypted service that only lets in the clients it knows.

Run it with `python curve.py`. It writes throw-away keys into a temporary
directory (as `trizmq keys generate` does) and prints:

    alice -> 3
    mallory: AuthenticationFailed: compute.controller at tcp://ADDRESS:9501 refused this client's key
    plaintext: AuthenticationFailed: compute.controller at tcp://ADDRESS:9501 refused the security handshake (CURVE on one side only, or a key it does not allow?)
"""

import functools
import tempfile
from pathlib import Path

import trio
import zmq.auth

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


class Compute:
    async def add(self, ctx: trizmq.Context, x: int, y: int) -> int:
        return x + y


def generate(directory: Path, name: str) -> None:
    """NAME.key and NAME.key_secret in `directory`, like `trizmq keys generate`."""
    directory.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(directory, name)
    # Only its owner may read a secret key: a service warns about any other mode.
    (directory / f"{name}.key_secret").chmod(0o600)


async def try_call(name: str, client: trizmq.Client) -> None:
    try:
        print(f"{name} ->", await client.call("compute", "add", x=1, y=2))
    except trizmq.AuthenticationFailed as exc:
        message = str(exc).replace(resolve["controller"], "ADDRESS")  # the same on every run
        print(f"{name}: AuthenticationFailed: {message}")


async def main(keys: Path) -> None:
    generate(keys / "service", "compute")  # the service's key pair
    generate(keys / "alice", "alice")  # a client's key pair...
    generate(keys / "mallory", "mallory")  # ...and a stranger's
    allowed = keys / "allowed"  # the public keys the service lets in: only alice's
    allowed.mkdir()
    (allowed / "alice.key").write_bytes((keys / "alice" / "alice.key").read_bytes())

    # --8<-- [start:curve]
    # The service: its secret key, and the directory of client public keys it allows.
    service_keys = trizmq.Curve.server(keys / "service" / "compute.key_secret", allowed)
    # A client: its own secret key, and the service's public key.
    alice_keys = trizmq.Curve.client(
        keys / "alice" / "alice.key_secret", keys / "service" / "compute.key"
    )
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trizmq.serve, curve=service_keys)
        await nursery.start(serve, ring, "compute", Compute(), "controller", resolve)
        async with trizmq.open_client(ring, resolve=resolve, curve=alice_keys) as client:
            await try_call("alice", client)
        # --8<-- [end:curve]

        mallory_keys = trizmq.Curve.client(
            keys / "mallory" / "mallory.key_secret", keys / "service" / "compute.key"
        )
        async with trizmq.open_client(ring, resolve=resolve, curve=mallory_keys) as client:
            await try_call("mallory", client)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            await try_call("plaintext", client)
        nursery.cancel_scope.cancel()


# --8<-- [end:program]
# Not shown in the docs: the docstring shows output lines whole, however long.
# ruff: noqa: E501


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        trio.run(main, Path(directory))
# --8<-- [end:run]
