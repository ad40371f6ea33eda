"""The Trio adapter over pyzmq, over real tcp sockets on loopback."""

from __future__ import annotations

import random

import pytest
import trio
import trio.lowlevel
import trio.testing
import zmq
from conftest import unique_resolve

from trizmq._transport import AsyncSocket, Unroutable, open_socket


def bound(socket_type: int) -> tuple[AsyncSocket, str]:
    sock = open_socket(socket_type)
    sock.zmq.bind("tcp://127.0.0.1:*")
    return sock, sock.zmq.getsockopt_string(zmq.LAST_ENDPOINT)


def connected(socket_type: int, endpoint: str) -> AsyncSocket:
    sock = open_socket(socket_type)
    sock.zmq.connect(endpoint)
    return sock


async def test_a_burst_of_100000_messages_arrives_whole_and_in_order() -> None:
    router, endpoint = bound(zmq.ROUTER)
    dealer = connected(zmq.DEALER, endpoint)
    count = 100_000
    received: list[int] = []
    with router, dealer:

        async def produce() -> None:
            for i in range(count):
                await dealer.send([b"%d" % i, b"x" * 40])

        async def consume() -> None:
            while len(received) < count:
                for frames in await router.receive_batch():
                    assert len(frames) == 3 and frames[2] == b"x" * 40
                    received.append(int(frames[1]))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                nursery.start_soon(produce)
    assert received == list(range(count))


async def test_one_dealer_sends_and_receives_concurrently() -> None:
    router, endpoint = bound(zmq.ROUTER)
    dealer = connected(zmq.DEALER, endpoint)
    callers, per_caller = 200, 20
    replies: dict[bytes, int] = {}
    with router, dealer:

        async def echo() -> None:
            while True:
                for frames in await router.receive_batch():
                    await router.send(frames)

        async def read_replies(done: trio.Event) -> None:
            while len(replies) < callers * per_caller:
                frames = await dealer.receive()
                replies[frames[0]] = replies.get(frames[0], 0) + 1
            done.set()

        async def caller(n: int) -> None:
            for i in range(per_caller):
                await dealer.send([b"%d-%d" % (n, i)])
                if random.random() < 0.3:
                    await trio.lowlevel.checkpoint()

        done = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                nursery.start_soon(read_replies, done)
                for n in range(callers):
                    nursery.start_soon(caller, n)
                await done.wait()
                nursery.cancel_scope.cancel()
    assert len(replies) == callers * per_caller
    assert set(replies.values()) == {1}


@pytest.mark.parametrize("seed", range(20))
async def test_cancelled_receives_and_sends_lose_and_duplicate_nothing(seed: int) -> None:
    rng = random.Random(seed)
    router, endpoint = bound(zmq.ROUTER)
    dealer = connected(zmq.DEALER, endpoint)
    # A small high-water mark makes sends block, so cancellation hits them too.
    dealer.zmq.setsockopt(zmq.SNDHWM, 10)
    router.zmq.setsockopt(zmq.RCVHWM, 10)
    count = 3000
    sent: list[int] = []
    received: list[int] = []
    with router, dealer:

        async def produce() -> None:
            i = 0
            while i < count:
                with trio.move_on_after(rng.random() * 0.001):
                    await dealer.send([b"%d" % i])
                    sent.append(i)
                    i += 1

        async def consume(producer_done: trio.Event) -> None:
            while not (producer_done.is_set() and len(received) == len(sent)):
                with trio.move_on_after(rng.random() * 0.001):
                    frames = await router.receive()
                    received.append(int(frames[1]))
                if rng.random() < 0.01:
                    await trio.sleep(0.001)

        producer_done = trio.Event()

        async def produce_then_signal() -> None:
            await produce()
            producer_done.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume, producer_done)
                nursery.start_soon(produce_then_signal)
    assert sent == list(range(count))
    assert received == sent


async def test_many_sockets_in_one_process_each_get_their_own_replies() -> None:
    router, endpoint = bound(zmq.ROUTER)
    dealers = [connected(zmq.DEALER, endpoint) for _ in range(200)]
    with router:

        async def echo() -> None:
            while True:
                for frames in await router.receive_batch():
                    await router.send(frames)

        async def roundtrip(n: int, dealer: AsyncSocket) -> None:
            with dealer:
                for i in range(5):
                    await dealer.send([b"%d:%d" % (n, i)])
                    assert await dealer.receive() == [b"%d:%d" % (n, i)]

        with trio.fail_after(30):
            async with trio.open_nursery() as outer:
                outer.start_soon(echo)
                async with trio.open_nursery() as nursery:
                    for n, dealer in enumerate(dealers):
                        nursery.start_soon(roundtrip, n, dealer)
                outer.cancel_scope.cancel()


async def test_messages_sent_before_the_peer_exists_arrive_when_it_binds() -> None:
    # A loopback address of this test's own: nobody else binds there.
    endpoint = f"tcp://{unique_resolve(('late',))['late']}:5555"
    dealer = connected(zmq.DEALER, endpoint)
    with dealer:
        for i in range(10):
            await dealer.send([b"%d" % i])
        await trio.sleep(0.2)
        router = open_socket(zmq.ROUTER)
        router.zmq.bind(endpoint)
        with router, trio.fail_after(10):
            got = [int((await router.receive())[1]) for _ in range(10)]
    assert got == list(range(10))


async def test_closing_a_socket_wakes_its_waiting_receiver() -> None:
    router, _ = bound(zmq.ROUTER)
    failure: list[BaseException] = []

    async def wait_for_nothing() -> None:
        try:
            await router.receive()
        except trio.ClosedResourceError as exc:
            failure.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_nothing)
            await trio.sleep(0.05)
            router.close()
    assert len(failure) == 1
    with pytest.raises(trio.ClosedResourceError):
        await router.send([b"x"])


async def test_interrupt_makes_the_waiting_batch_receive_return_empty() -> None:
    router, endpoint = bound(zmq.ROUTER)
    dealer = connected(zmq.DEALER, endpoint)
    with router, dealer, trio.fail_after(5):
        got: list[list[list[bytes]]] = []

        async def receive() -> None:
            got.append(await router.receive_batch())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            router.interrupt()
        # The socket still works, and the interrupt was used up.
        await dealer.send([b"after"])
        after = await router.receive_batch()
    assert got == [[]]
    assert [frames[1] for frames in after] == [b"after"]


async def test_an_interrupt_with_nobody_waiting_returns_the_next_batch_receive_at_once() -> None:
    router, _ = bound(zmq.ROUTER)
    with router, trio.fail_after(5):
        router.interrupt()
        assert await router.receive_batch() == []


async def test_a_receiver_waiting_behind_a_sender_wakes_for_a_message() -> None:
    # Two tasks wait on one socket (one on the fd, one parked): each event
    # reaches the task that wants it, whichever of them sleeps on the fd.
    sender, endpoint = bound(zmq.DEALER)
    sender.zmq.setsockopt(zmq.SNDHWM, 1)
    receiver = connected(zmq.DEALER, endpoint)
    receiver.zmq.setsockopt(zmq.RCVHWM, 1)
    with sender, receiver, trio.fail_after(10):
        got: list[list[bytes]] = []
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for i in range(2000):
                    await receiver.send([b"%d" % i])

            async def echo_back() -> None:
                for _ in range(2000):
                    await sender.send(await sender.receive())

            async def collect() -> None:
                while len(got) < 2000:
                    got.extend(await receiver.receive_batch())

            nursery.start_soon(collect)
            nursery.start_soon(flood)
            nursery.start_soon(echo_back)
    assert [frames[0] for frames in got] == [b"%d" % i for i in range(2000)]


async def test_a_receiver_still_wakes_while_another_task_sends_to_nobody() -> None:
    # A ROUTER's failing send (no such peer) may take the edge of the fd the
    # receiver sleeps on: the failed send must wake it all the same.
    router, endpoint = bound(zmq.ROUTER)
    router.zmq.setsockopt(zmq.ROUTER_MANDATORY, 1)
    dealer = connected(zmq.DEALER, endpoint)
    count = 300
    got: list[bytes] = []
    with router, dealer, trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def send_to_nobody() -> None:
                while True:
                    with pytest.raises(Unroutable):
                        router.send_nowait([b"nobody", b"x"])
                    await trio.sleep(0.0005)

            async def produce() -> None:
                for i in range(count):
                    await dealer.send([b"%d" % i])
                    await trio.sleep(0.001)

            nursery.start_soon(send_to_nobody)
            nursery.start_soon(produce)
            while len(got) < count:
                got.extend(frames[1] for frames in await router.receive_batch())
            nursery.cancel_scope.cancel()
    assert got == [b"%d" % i for i in range(count)]


async def test_a_batch_receive_after_the_queue_emptied_gets_what_came_since() -> None:
    router, endpoint = bound(zmq.ROUTER)
    dealer = connected(zmq.DEALER, endpoint)
    with router, dealer, trio.fail_after(5):
        await dealer.send([b"first"])
        [[identity, first]] = await router.receive_batch()
        await dealer.send([b"second"])
        await trio.sleep(0.2)  # on its way to the router's queue
        await router.send([identity, b"reply to first"])
        [[_, second]] = await router.receive_batch()
        assert await dealer.receive() == [b"reply to first"]
    assert (first, second) == (b"first", b"second")
