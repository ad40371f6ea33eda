"""trizmq-monitor: a live terminal dashboard of every service port in a ring.

Installed as `trizmq_monitor`; run it as `trizmq-monitor RING` (see `app.main`).

- `app`: `MonitorApp`, the Textual app, and `main`, the command.
- `feed`: `GuestFeed`, the stats feed run by Trio as a guest in Textual's asyncio loop,
  and `ReplayFeed`, recorded snapshots played the same on every run (tests, pictures).
- `model`: `PortRow` and the sorting, filtering, totals and number formats the widgets use.
- `trends`: the rates smoothed over the last 3 s and the recent history of every port.
- One widget per module: `port_table`, `node_totals`, `rate_graph`, `port_detail`,
  `filter_bar`, `help_screen`, `trend`; one view per module: `port_screen` (Enter on a
  port), `node_screen` (`n`). The layout is in `monitor.tcss`.
"""
