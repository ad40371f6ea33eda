"""Not shown in the docs: the host addresses the docs' tests give each example.

The tests run every example at once, each on loopback addresses of its own,
given as JSON in TRIZMQ_EXAMPLE_RESOLVE (host name -> address). Run by hand,
an example keeps the addresses it shows.
"""

import json
import os


def addresses_for_tests() -> dict[str, str]:
    """The addresses TRIZMQ_EXAMPLE_RESOLVE gives, or none."""
    addresses: dict[str, str] = json.loads(os.environ.get("TRIZMQ_EXAMPLE_RESOLVE", "{}"))
    return addresses
