"""CPU time per thread of the bench's processes, from ``/proc/PID/task/*/schedstat``.

The first field of a thread's ``schedstat`` is the nanoseconds it has spent on
a CPU. Read at the start and at the end of a measured window, in the client's
and the server's process, it says which process and which thread paid for the
window's messages, whatever else the machine was doing: time spent waiting for
a core is not counted. Reading it costs the measured processes nothing (the
kernel answers from its own accounting), and it is read only at the two ends
of the window.

Threads are classed by what they run:

- ``python``: the process's main thread (its id is the process id), where the
  bench's and the workers' Python runs, Trio's included.
- ``zmq_io``: libzmq's I/O threads (named ``ZMQbg/IO/N``), which move
  messages between sockets and the network.
- ``other``: every other thread: libzmq's reaper (``ZMQbg/Reaper``), Trio's
  worker threads (``Trio thread N``), a worker's standard input watcher.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["PROCESSES", "THREAD_CLASSES", "CpuMeter", "cpu_between", "thread_class", "thread_cpu"]

#: The classes of threads, in the order the report shows them.
THREAD_CLASSES = ("python", "zmq_io", "other")
#: The processes of a measurement, in the order the report shows them.
PROCESSES = ("client", "server")

_ZMQ_IO_PREFIX = "ZMQbg/IO/"


def thread_cpu(pid: int) -> dict[int, tuple[str, int]]:
    """Every thread of process `pid`: its name and the nanoseconds it has run, by thread id.

    A thread that ends while it is being read is left out.

    Raises:
        FileNotFoundError: There is no process `pid`.
        RuntimeError: The kernel keeps no ``schedstat`` (the bench needs Linux).
    """
    task_dir = f"/proc/{pid}/task"
    threads: dict[int, tuple[str, int]] = {}
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm", encoding="utf-8", errors="replace") as comm:
                name = comm.read().rstrip("\n")
            ns = _ran_ns(pid, int(tid), f"{task_dir}/{tid}/schedstat")
        except (FileNotFoundError, ProcessLookupError):
            if os.path.exists(f"{task_dir}/{tid}/comm"):
                raise RuntimeError(f"no {task_dir}/{tid}/schedstat: the bench needs it") from None
            continue  # the thread ended
        threads[int(tid)] = (name, ns)
    return threads


def _ran_ns(pid: int, tid: int, schedstat_path: str) -> int:
    if pid == os.getpid() and tid == threading.get_native_id():
        # A running thread's schedstat is brought up to date only at the
        # scheduler's next tick; the thread reading itself is running.
        # This is the same count, up to date.
        return time.thread_time_ns()
    with open(schedstat_path, encoding="ascii") as schedstat:
        return int(schedstat.read().split()[0])


def thread_class(pid: int, tid: int, name: str) -> str:
    """The class (one of `THREAD_CLASSES`) of thread `tid`, named `name`, of process `pid`."""
    if tid == pid:
        return "python"
    if name.startswith(_ZMQ_IO_PREFIX):
        return "zmq_io"
    return "other"


def cpu_between(
    pid: int, before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]
) -> dict[str, int]:
    """Nanoseconds each class of thread of process `pid` ran between two `thread_cpu` readings.

    A thread started in between counts from zero; one that ended in between
    is lost with the time it ran.
    """
    spent = dict.fromkeys(THREAD_CLASSES, 0)
    for tid, (name, ns) in after.items():
        start_name, start_ns = before.get(tid, (name, 0))
        if start_name != name or start_ns > ns:  # a new thread that reuses an ended one's id
            start_ns = 0
        spent[thread_class(pid, tid, name)] += ns - start_ns
    return spent


class CpuMeter:
    """The CPU a client and a server process spend per message over a measured window.

    Args:
        client: The client's process id.
        server: The server's process id.
    """

    def __init__(self, *, client: int, server: int) -> None:
        self._pids = {"client": client, "server": server}
        self._before: dict[str, dict[int, tuple[str, int]]] = {}

    def start(self) -> None:
        """Read every thread's CPU time: the window starts."""
        self._before = {process: thread_cpu(pid) for process, pid in self._pids.items()}

    def stop(self, messages: int) -> dict[str, float]:
        """End the window: microseconds of CPU per message, per process and class of thread.

        Args:
            messages: What the window did, in the unit of its benchmark (calls,
                casts, fanouts or messages).

        Returns:
            ``{"client/python": µs, "client/zmq_io": µs, ..., "server/other": µs}``.
        """
        if not self._before:
            raise RuntimeError("CpuMeter.stop() before start()")
        per_message: dict[str, float] = {}
        for process, pid in self._pids.items():
            spent = cpu_between(pid, self._before[process], thread_cpu(pid))
            for cls in THREAD_CLASSES:
                per_message[f"{process}/{cls}"] = spent[cls] / messages / 1000
        return per_message
