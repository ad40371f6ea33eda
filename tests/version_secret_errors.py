"""An exception module the callers of the tests never allow: never imported by them."""

from __future__ import annotations


class Boom(Exception):
    """Raised by `version_app.Compute50.explode`."""
