"""`python -m trizmq_monitor RING [--resolve NAME=ADDR]...`: the same as `trizmq-monitor`."""

from .app import main

main()
