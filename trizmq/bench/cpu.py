"""CPU time per thread of the bench's processes, from ``/proc/PID/task/*``.

The first field of a thread's ``schedstat`` is the nanoseconds it has spent on
a CPU, in user space and in the kernel. Read at the start and at the end of a
measured window, in the client's and the server's process, it says which
process and which thread paid for the window's messages, whatever else the
machine was doing: time spent waiting for a core is not counted. Reading it
costs the measured processes nothing (the kernel answers from its own
accounting), and it is read only at the two ends of the window. The part
spent in user space is the ``utime`` of the thread's ``stat``, which the
kernel counts in clock ticks of 10 ms: exact only over long windows.

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
from typing import NamedTuple

__all__ = [
    "PROCESSES",
    "THREAD_CLASSES",
    "CpuMeter",
    "ThreadTimes",
    "cpu_between",
    "thread_class",
    "thread_cpu",
]

#: The classes of threads, in the order the report shows them.
THREAD_CLASSES = ("python", "zmq_io", "other")
#: The processes of a measurement, in the order the report shows them.
PROCESSES = ("client", "server")

_ZMQ_IO_PREFIX = "ZMQbg/IO/"
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class ThreadTimes(NamedTuple):
    """What one thread has run so far.

    Attributes:
        name: The thread's name (its ``comm``).
        ran_ns: Nanoseconds on a CPU, user space and kernel.
        user_ns: Of which in user space, in whole clock ticks.
    """

    name: str
    ran_ns: int
    user_ns: int


def thread_cpu(pid: int) -> dict[int, ThreadTimes]:
    """Every thread of process `pid` and what it has run so far, by thread id.

    A thread that ends while it is being read is left out.

    Raises:
        FileNotFoundError: There is no process `pid`.
        RuntimeError: The kernel keeps no ``schedstat`` (the bench needs Linux).
    """
    task_dir = f"/proc/{pid}/task"
    threads: dict[int, ThreadTimes] = {}
    for tid in os.listdir(task_dir):
        try:
            threads[int(tid)] = _times(pid, int(tid), f"{task_dir}/{tid}")
        except (FileNotFoundError, ProcessLookupError):
            if os.path.exists(f"{task_dir}/{tid}/comm"):
                raise RuntimeError(f"no {task_dir}/{tid}/schedstat: the bench needs it") from None
            continue  # the thread ended
    return threads


def _times(pid: int, tid: int, path: str) -> ThreadTimes:
    with open(f"{path}/comm", encoding="utf-8", errors="replace") as comm:
        name = comm.read().rstrip("\n")
    with open(f"{path}/stat", encoding="utf-8", errors="replace") as stat:
        # utime is the 14th field; the name before it, in parentheses, may hold spaces.
        utime = int(stat.read().rpartition(")")[2].split()[11])
    if pid == os.getpid() and tid == threading.get_native_id():
        # A running thread's schedstat is brought up to date only at the
        # scheduler's next tick; the thread reading itself is running.
        # This is the same count, up to date.
        ran = time.thread_time_ns()
    else:
        with open(f"{path}/schedstat", encoding="ascii") as schedstat:
            ran = int(schedstat.read().split()[0])
    return ThreadTimes(name, ran, utime * _NS_PER_TICK)


def thread_class(pid: int, tid: int, name: str) -> str:
    """The class (one of `THREAD_CLASSES`) of thread `tid`, named `name`, of process `pid`."""
    if tid == pid:
        return "python"
    if name.startswith(_ZMQ_IO_PREFIX):
        return "zmq_io"
    return "other"


def cpu_between(
    pid: int,
    before: dict[int, ThreadTimes],
    after: dict[int, ThreadTimes],
    *,
    user: bool = False,
) -> dict[str, int]:
    """Nanoseconds each class of thread of process `pid` ran between two `thread_cpu` readings.

    A thread started in between counts from zero; one that ended in between
    is lost with the time it ran.

    Args:
        pid: The process.
        before: The first reading.
        after: The second.
        user: Count only the time in user space.
    """
    spent = dict.fromkeys(THREAD_CLASSES, 0)
    for tid, now in after.items():
        then = before.get(tid)
        if then is None or then.name != now.name or then.ran_ns > now.ran_ns:
            then = ThreadTimes(now.name, 0, 0)  # new, or a new one reusing an ended one's id
        if user:
            spent[thread_class(pid, tid, now.name)] += now.user_ns - then.user_ns
        else:
            spent[thread_class(pid, tid, now.name)] += now.ran_ns - then.ran_ns
    return spent


class CpuMeter:
    """The CPU a client and a server process spend per message over a measured window.

    Args:
        client: The client's process id.
        server: The server's process id.
    """

    def __init__(self, *, client: int, server: int) -> None:
        self._pids = {"client": client, "server": server}
        self._before: dict[str, dict[int, ThreadTimes]] = {}

    def start(self) -> None:
        """Read every thread's CPU time: the window starts."""
        self._before = {process: thread_cpu(pid) for process, pid in self._pids.items()}

    def stop(self, messages: int) -> dict[str, float]:
        """End the window: microseconds of CPU per message, per process and class of thread.

        Args:
            messages: What the window did, in the unit of its benchmark (calls,
                casts, fanouts or messages).

        Returns:
            ``{"client/python": µs, "client/zmq_io": µs, ..., "server/other": µs}``,
            and the same with ``/user`` appended for the part in user space.
        """
        if not self._before:
            raise RuntimeError("CpuMeter.stop() before start()")
        per_message: dict[str, float] = {}
        for process, pid in self._pids.items():
            before, after = self._before[process], thread_cpu(pid)
            for suffix, user in (("", False), ("/user", True)):
                spent = cpu_between(pid, before, after, user=user)
                for cls in THREAD_CLASSES:
                    per_message[f"{process}/{cls}{suffix}"] = spent[cls] / messages / 1000
        return per_message
