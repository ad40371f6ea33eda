"""The Trio adapter over pyzmq sockets: the only module that calls zmq's I/O.

ZeroMQ's `ZMQ_FD` is edge-triggered and signals "look at `ZMQ_EVENTS`", not
"a message is ready". Three rules follow, and this module keeps them:

- Try the non-blocking operation first; wait only after `zmq.Again`.
- Read `ZMQ_EVENTS` before every wait, since any send, receive or even a read
  of `ZMQ_EVENTS` may have consumed the edge that would have woken us.
- Trio allows one task waiting on an fd. The first task that must wait becomes
  the fd waiter; every other task parks until the fd fires. After each
  successful operation, if `ZMQ_EVENTS` now shows what a waiter wants, the fd
  waiter is kicked awake, because the edge it sleeps on may already be gone.
  The kick is `trio.lowlevel.notify_closing` on the fd, which the waiter takes
  for a kick while the socket is open: a wait needs no cancel scope of its
  own, and a cancel scope is among the dearest things Trio has. No kick is
  needed while the fd still signals (a `poll` of it, which consumes nothing,
  says so): the waiter wakes by itself then.

No operation checkpoints between taking a message from zmq and returning it, so
a cancelled receive or send never loses or duplicates a message.
"""

from __future__ import annotations

import atexit
import itertools
import resource
import select
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import cast

import trio
import zmq
import zmq.backend
from zmq.utils.monitor import parse_monitor_message

_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
# libzmq's default limit of sockets per context (ZMQ_MAX_SOCKETS_DFLT).
_LIBZMQ_MAX_SOCKETS = 1023
_EVENTS = int(zmq.EVENTS)

# pyzmq's `send_multipart` and `recv_multipart` are Python loops over the
# backend's frame calls, with checks and options that cost more than the I/O
# itself: 5.1 µs against 1.2 µs to send a two-frame message, 4.9 against 1.7
# to receive one (bench of this machine). The adapter calls the backend, and
# learns whether more frames follow from the frame, not from a socket option.
_send_frame = zmq.backend.Socket.send
_recv_frame = zmq.backend.Socket.recv
_get_option = zmq.backend.Socket.get
_ROUTER = int(zmq.ROUTER)


def _send_message(sock: zmq.Socket[bytes], frames: Sequence[bytes]) -> None:
    """Send a multipart message without blocking (zmq.Again when it cannot).

    Once ZeroMQ takes a message's first frame it takes the rest: a message
    is queued whole or not at all.
    """
    last = len(frames) - 1
    for frame in frames[:last]:
        _send_frame(sock, frame, _MORE)
    _send_frame(sock, frames[last], _NOBLOCK)


def _receive_message(sock: zmq.Socket[bytes], router: bool) -> list[bytes]:
    """Receive a multipart message without blocking (zmq.Again when none is queued).

    A ROUTER's first frame, the sender's routing id, always has more after it.
    """
    frames = [_recv_frame(sock, _NOBLOCK)] if router else []
    while True:
        frame = _recv_frame(sock, _NOBLOCK, copy=False)
        frames.append(frame.bytes)
        if not frame.more:
            return frames


#: Milliseconds a closing socket may spend flushing queued messages.
DEFAULT_LINGER_MS = 1000
#: Bytes one batch of received messages holds at most (past its first message):
#: what ZeroMQ holds stays in ZeroMQ, within its high-water marks.
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
#: Seconds of silence (no ZMTP heartbeat answered) after which a connection is lost.
DEFAULT_HEARTBEAT = 3.0


class Unroutable(Exception):
    """A ROUTER could not route a message: the peer it names is not connected."""


class AsyncSocket:
    """A zmq socket driven by Trio: async multipart send and receive.

    Any number of tasks may send and receive concurrently. Closing wakes every
    waiting task with `trio.ClosedResourceError`.
    """

    def __init__(self, sock: zmq.Socket[bytes], *, linger_ms: int = DEFAULT_LINGER_MS) -> None:
        self.zmq = sock
        sock.setsockopt(zmq.LINGER, linger_ms)
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._router = sock.type == _ROUTER
        self._signal = select.poll()
        self._signal.register(self._fd, select.POLLIN)
        self._closed = False
        # Exactly one task waits on the fd; the others park here.
        self._fd_waiting = False
        self._kicked = False  # the fd waiter was kicked and has not run since
        self._parked = trio.lowlevel.ParkingLot()
        self._interrupted = False
        # How many tasks wait for each of POLLIN and POLLOUT.
        self._want_in = 0
        self._want_out = 0
        # The last `receive_available` ended on a receive that found nothing.
        self._drained = False

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message, waiting while the high-water mark is reached."""
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while not self.send_nowait(frames):
            yielded |= await self._wait(_POLLOUT)
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_soon(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message: at once when zmq takes it, else wait for room.

        Unlike `send`, no schedule point when zmq takes the message at once:
        for callers that reach one right after (a call waiting for its reply).
        """
        if not self.send_nowait(frames):
            await self.send(frames)

    async def wait_writable(self) -> None:
        """Return once zmq takes a message at once (at once if it does now)."""
        await self._wait(_POLLOUT)

    def send_nowait(self, frames: Sequence[bytes]) -> bool:
        """Send one multipart message if zmq takes it at once.

        Returns:
            False when the message was not queued (high-water mark reached).
        """
        self._check_open()
        try:
            _send_message(self.zmq, frames)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise _translate(exc) from None
        finally:
            # A send that failed may have consumed the fd's edge as well.
            self._after_io()
        return True

    async def receive(self) -> list[bytes]:
        """Receive one multipart message."""
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while not (batch := self.receive_available(1)):
            yielded |= await self._wait(_POLLIN, drained=True)
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return batch[0]

    async def receive_batch(
        self, max_messages: int = 256, max_bytes: int = DEFAULT_BATCH_BYTES
    ) -> list[list[bytes]]:
        """Receive every message already queued, at least one, at most
        `max_messages`, and no more once `max_bytes` have been taken.

        One wait and one schedule point for the whole batch: under load this
        is what keeps the receive loop from paying a task switch per message.
        After `interrupt`, the batch may be empty.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        # After a batch that emptied the queue, ZMQ_EVENTS says whether another
        # came for less than a receive that fails (its zmq.Again costs more
        # than the read): a reader that keeps up wakes once per short batch.
        yielded = await self._wait(_POLLIN) if self._drained else False
        while True:
            batch = self.receive_available(max_messages, max_bytes)
            if batch or self._interrupted:
                self._interrupted = False
                if not yielded:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            yielded |= await self._wait(_POLLIN, drained=True)

    def interrupt(self) -> None:
        """Make the `receive_batch` waiting now, or else the next one, return at once."""
        self._interrupted = True
        self._kick()

    def receive_available(
        self, max_messages: int = 256, max_bytes: int = DEFAULT_BATCH_BYTES
    ) -> list[list[bytes]]:
        """Receive what is queued now without waiting (possibly nothing), up to
        `max_messages`, stopping once `max_bytes` have been taken."""
        self._check_open()
        batch: list[list[bytes]] = []
        sock = self.zmq
        size = 0
        self._drained = False
        try:
            while len(batch) < max_messages and size < max_bytes:
                message = _receive_message(sock, self._router)
                size += len(message[-1])
                batch.append(message)
        except zmq.Again:
            self._drained = True
        finally:
            # Even a receive that found nothing may have consumed the fd's edge.
            self._after_io()
        return batch

    def close(self) -> None:
        """Close the socket; tasks waiting on it get `trio.ClosedResourceError`."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._fd)
        self._parked.unpark_all()
        self.zmq.close()

    def __enter__(self) -> AsyncSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the socket was closed")

    def _events(self) -> int:
        return cast(int, _get_option(self.zmq, _EVENTS))

    def _after_io(self) -> None:
        # The operation may have consumed the fd's edge, unless the fd still signals.
        if self._fd_waiting and not self._kicked and not self._signal.poll(0):
            self._wake_if_wanted(self._events())

    def _wake_if_wanted(self, events: int) -> None:
        """Wake the waiting tasks if `events` shows what one of them waits for,
        so that they re-read ZMQ_EVENTS: the fd waiter with a kick, once until
        it runs, and the parked ones."""
        wanted = (_POLLIN if self._want_in else 0) | (_POLLOUT if self._want_out else 0)
        if events & wanted:
            self._parked.unpark_all()
            self._kick()

    def _kick(self) -> None:
        """Wake the fd waiter, if any, once until it has run."""
        if self._fd_waiting and not self._kicked:
            self._kicked = True
            trio.lowlevel.notify_closing(self._fd)

    async def _wait(self, flag: int, *, drained: bool = False) -> bool:
        """Return once ZMQ_EVENTS shows `flag`, or once the fd signalled: callers
        retry their operation, and wait again if it fails. After a wake-up on
        the fd the operation itself is the check: reading ZMQ_EVENTS first
        would cost as much again, for what is nearly always the message or
        the room waited for.

        `drained`: the caller's receive has just found no message. Then, when
        no other task waits on the fd, this one does at once: ZMQ_EVENTS could
        only say the same (the failed receive processed every command the
        socket had), and a message arriving since has signalled the fd.

        Returns:
            Whether it yielded to the scheduler: a caller that waited has had
            its schedule point and needs no second one.
        """
        if flag == _POLLIN:
            self._want_in += 1
        else:
            self._want_out += 1
        yielded = False
        try:
            while True:
                self._check_open()
                if not (drained and not self._fd_waiting):
                    events = self._events()
                    if events & flag or (flag == _POLLIN and self._interrupted):
                        return yielded
                    # This read of ZMQ_EVENTS may have taken the edge that would
                    # have woken a task waiting for another event, now ready.
                    self._wake_if_wanted(events)
                drained = False
                yielded = True
                if self._fd_waiting:
                    await self._parked.park()
                    continue
                self._fd_waiting = True
                try:
                    await trio.lowlevel.wait_readable(self._fd)
                except trio.ClosedResourceError:
                    self._check_open()  # else it was a kick
                finally:
                    self._fd_waiting = self._kicked = False
                    # Whatever woke us, the parked tasks must look again.
                    self._parked.unpark_all()
                return True
        finally:
            if flag == _POLLIN:
                self._want_in -= 1
            else:
                self._want_out -= 1


def set_heartbeat(sock: AsyncSocket, seconds: float) -> None:
    """ZMTP heartbeats: a connection silent for `seconds` is closed as lost.

    libzmq's I/O thread sends and answers them, so a peer busy in a long
    handler still answers; a dead, frozen or unreachable one does not. A ping
    goes out every third of the window and must be answered within the rest,
    so a silence is noticed within `seconds` at worst.
    """
    window = max(3, int(seconds * 1000))
    sock.zmq.setsockopt(zmq.HEARTBEAT_IVL, window // 3)
    sock.zmq.setsockopt(zmq.HEARTBEAT_TIMEOUT, window - window // 3)
    sock.zmq.setsockopt(zmq.HEARTBEAT_TTL, window)


def _translate(exc: zmq.ZMQError) -> Exception:
    if exc.errno == zmq.EHOSTUNREACH:
        return Unroutable("no connected peer has that routing id")
    return exc


def open_socket(socket_type: int, *, linger_ms: int = DEFAULT_LINGER_MS) -> AsyncSocket:
    """A new socket on the process's shared zmq context.

    One context serves the whole process, so that ZAP authentication (CURVE)
    and every socket share its I/O thread.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    if not _flush_at_exit:
        # libzmq's default of 1023 sockets a context would cap a client at
        # about 340 peers (3 sockets each, with the monitor's pair): let the
        # descriptor limit be the limit (it must be set before the first socket).
        context.set(zmq.MAX_SOCKETS, _max_sockets(context))
        _flush_at_exit.append(context)
        atexit.register(_flush, context)
    sock: zmq.Socket[bytes] = context.socket(socket_type)
    return AsyncSocket(sock, linger_ms=linger_ms)


_flush_at_exit: list[zmq.Context[zmq.Socket[bytes]]] = []


def _max_sockets(context: zmq.Context[zmq.Socket[bytes]]) -> int:
    """The sockets a context may hold: as many as the process may open descriptors
    (each socket takes at least one), never fewer than libzmq's default of 1023."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = context.get(zmq.SOCKET_LIMIT)
    wanted = ceiling if soft == resource.RLIM_INFINITY else min(soft, ceiling)
    return max(_LIBZMQ_MAX_SOCKETS, wanted)


def _flush(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    # A process exiting right after a cast must not drop it: terminating the
    # context sends what closed sockets still hold, for at most their linger.
    context.destroy(linger=DEFAULT_LINGER_MS)


def open_monitor(sock: AsyncSocket, events: int) -> AsyncSocket:
    """A socket receiving `sock`'s monitor events, opened before `sock` connects.

    ZeroMQ reports connections as they are made, lost or refused; this is how
    a ROUTER, which has no list of its peers, can count them, and how a client
    learns its service is gone. Read it with `watch_events`.
    """
    # pyzmq names the endpoint after the socket's fd, and fds are reused while a
    # closed socket lingers: a name of our own keeps each monitor to its socket.
    address = f"inproc://trizmq-monitor-{next(_monitor_ids)}"
    return AsyncSocket(sock.zmq.get_monitor_socket(events, address), linger_ms=0)


_monitor_ids = itertools.count()


async def watch_events(
    sock: AsyncSocket, monitor: AsyncSocket, on_event: Callable[[int, int], None]
) -> None:
    """Call `on_event(event, value)` for each event `monitor` reports on `sock`
    (the value is an errno for failures), until either is closed or the task
    is cancelled.

    On the way out monitoring stops before the monitor closes: libzmq's I/O
    thread sends events in blocking mode, and an event with nobody to take it
    would stall every socket of the process.
    """
    try:
        while True:
            try:
                frames = await monitor.receive()
            except trio.ClosedResourceError:
                return
            message = parse_monitor_message(frames)
            event = int(message["event"])
            if event == zmq.EVENT_MONITOR_STOPPED:
                return
            on_event(event, int(message["value"]))
    finally:
        if not sock.closed:
            sock.zmq.disable_monitor()
        monitor.close()
