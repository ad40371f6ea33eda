"""Run the trizmq benchmarks: the same as `trizmq bench`, with the same options.

.venv/bin/python bench/run.py --json bench/results/$(date +%F).json
"""

import sys

from trizmq.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
