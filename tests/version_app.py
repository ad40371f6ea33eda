"""Versioned endpoints of one topic, as a rolling upgrade runs them.

`SERVICES_5_0` is the compute API at version 5.0, `SERVICES_5_3` at 5.3
(it adds `resize`); both serve a `baseapi` namespace next to the main API,
with a method of the same name (`whoami`) in each. Every method says which
endpoint ran it, so a test sees a call reach the right one.
"""

from __future__ import annotations

from typing import Any

import version_errors
import version_secret_errors

import trizmq


def _who(endpoint: object, ctx: trizmq.Context) -> dict[str, Any]:
    target = type(endpoint).target  # type: ignore[attr-defined]
    return {"namespace": target.namespace, "version": target.version, "host": ctx.host}


class Compute50:
    target = trizmq.Target(version="5.0")

    async def whoami(self, ctx: trizmq.Context) -> dict[str, Any]:
        return _who(self, ctx)

    async def boot(self, ctx: trizmq.Context, name: str) -> dict[str, Any]:
        return {**_who(self, ctx), "name": name}

    async def fail(self, ctx: trizmq.Context, kind: str) -> None:
        if kind == "no_valid_host":
            raise version_errors.NoValidHost("no host has 4 GB free")
        if kind == "quota":
            raise version_errors.QuotaExceeded("cores: 20 of 20 used")
        if kind == "two_arguments":
            raise version_errors.NeedsTwoArguments("cores", 20)
        if kind == "key":
            raise KeyError("flavor")
        raise version_secret_errors.Boom("a secret module's error")


class Compute53(Compute50):
    target = trizmq.Target(version="5.3")

    async def resize(self, ctx: trizmq.Context, name: str, gb: int) -> dict[str, Any]:
        return {**_who(self, ctx), "name": name, "gb": gb}


class BaseAPI:
    target = trizmq.Target(namespace="baseapi", version="1.1")

    async def whoami(self, ctx: trizmq.Context) -> dict[str, Any]:
        return _who(self, ctx)

    async def ping(self, ctx: trizmq.Context) -> str:
        return "pong"


SERVICES_5_0 = {"compute": [Compute50, BaseAPI]}
SERVICES_5_3 = {"compute": [Compute53, BaseAPI]}
