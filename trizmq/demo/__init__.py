"""`trizmq demo`: the seed ring's services on one machine, with a cloud's traffic.

Built on trizmq's public behaviour; the library never imports it, and the
``trizmq`` command imports it only to run the demo.

- `runner`: `run_demo`, which starts a process per (host, topic), plays the
  traffic and stops everything it started.
- `app`: the endpoints each service process serves (``--app trizmq.demo.app:SERVICES``).
- `traffic`: the requests the demo sends, and their tally.
- ``seed_ring.json``: the seed proposal's ring, the demo's default.
"""
