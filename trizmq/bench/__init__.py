"""`trizmq bench`: trizmq against raw pyzmq, doing the same work in separate processes.

Built on trizmq; the library never imports it, and the ``trizmq`` command
imports it only to run the bench.

- `runner`: the benchmarks, their rounds, the summary table and `run_bench`.
- `worker`: the other process of a measurement (``python -m trizmq.bench.worker``).
- `cpu`: the CPU time per thread of a process, read over a measured window.
"""
