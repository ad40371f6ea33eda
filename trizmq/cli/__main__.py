"""``python -m trizmq.cli``: the same as the ``trizmq`` command."""

from . import main

raise SystemExit(main())
