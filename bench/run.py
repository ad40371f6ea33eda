"""Run the trizmq benchmarks: the same code and options as `trizmq bench`.

.venv/bin/python bench/run.py --json bench/results/$(date +%F).json
"""

import sys

from trizmq._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
