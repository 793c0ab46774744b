"""UDP listeners with real worker processes and real datagrams on loopback."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import trio

from actors import (
    ActorReady,
    BindError,
    DatagramAcceptor,
    command,
    listener,
    open_system,
    supervisor,
)
from tests.events import next_event
from tests.waiting import TIMEOUT, eventually

POLICIES = ["shared", "reuseport"]
ANSWER_WITHIN = 10.0  # a bound on one answer, so that a lost datagram fails with its name


class Echo(DatagramAcceptor):
    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        return data


class EchoPid(DatagramAcceptor):
    """Says which process answered: ``pid:data``."""

    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        return f"{os.getpid()}:".encode() + data


class Silent(DatagramAcceptor):
    """Answers nothing (a returned None), but counts."""

    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        return None


async def exchange(sock: trio.socket.SocketType, port: int, payload: bytes) -> bytes | None:
    """Send ``payload``, return the answer (None if none came in ``ANSWER_WITHIN``)."""
    await sock.sendto(payload, ("127.0.0.1", port))
    with trio.move_on_after(ANSWER_WITHIN):
        return await sock.recv(65535)
    return None


@pytest.mark.parametrize("policy", POLICIES)
async def test_1000_datagrams_from_8_clients_are_echoed(policy: str) -> None:
    tree = supervisor("root", children=[
        listener("udp", port=0, transport="udp", acceptor=Echo, count=2,
                 policy=policy),  # type: ignore[arg-type]
    ])
    lost: list[bytes] = []
    echoed = 0
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            port = system.listener("root/udp").port

            async def client(n: int) -> None:
                nonlocal echoed
                with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    for i in range(125):
                        payload = f"client {n} datagram {i}".encode()
                        if await exchange(sock, port, payload) == payload:
                            echoed += 1
                        else:
                            lost.append(payload)

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(client, n)
            stats = await system.acceptor_stats("root/udp")
    assert not lost
    assert echoed == 1000
    assert sum(s.total for s in stats) == 1000


@pytest.mark.parametrize("policy", POLICIES)
async def test_an_acceptor_killed_under_load_the_others_answer_and_its_successor_joins(
    policy: str,
) -> None:
    tree = supervisor("root", children=[
        listener("udp", port=0, transport="udp", acceptor=EchoPid, count=2,
                 policy=policy),  # type: ignore[arg-type]
    ])
    answered_by: dict[int, int] = {}  # pid -> answers
    progress = trio.Event()  # set (and replaced) at every answer
    lost_after_kill = 0
    killed = 0
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            port = system.listener("root/udp").port
            events = system.events(history=True)
            stop = trio.Event()

            async def client(n: int) -> None:
                nonlocal progress, lost_after_kill
                with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        payload = f"{n}/{i}".encode()
                        answer = await exchange(sock, port, payload)
                        if answer is None:
                            lost_after_kill += 1  # in the killed one's hands: UDP's way
                            continue
                        pid, _, data = answer.partition(b":")
                        assert data == payload
                        answered_by[int(pid)] = answered_by.get(int(pid), 0) + 1
                        progress.set()
                        progress = trio.Event()

            async def answers_from(pid: int) -> None:
                while answered_by.get(pid, 0) == 0:
                    await progress.wait()

            async with trio.open_nursery() as nursery:
                for n in range(16):
                    nursery.start_soon(client, n)
                stats = await system.acceptor_stats("root/udp")
                pids = sorted(s.pid for s in stats)
                assert len(pids) == 2
                await answers_from(pids[0])
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
                joined = await next_event(events, ActorReady, "root/udp/0")
                while joined.pid in pids:  # the first start's own event: the next one
                    joined = await next_event(events, ActorReady, "root/udp/0")
                before = answered_by.get(pids[1], 0)
                await answers_from(pids[1])
                while answered_by.get(pids[1], 0) <= before:  # the other kept answering
                    await progress.wait()
                assert joined.pid is not None
                await answers_from(joined.pid)  # the successor answers too
                stop.set()
    assert killed not in (joined.pid, pids[1])
    assert lost_after_kill <= 16  # at most the one in flight per client at the kill


async def test_a_returned_none_sends_nothing() -> None:
    tree = supervisor("root", children=[
        listener("udp", port=0, transport="udp", acceptor=Silent, count=1),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            port = system.listener("root/udp").port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(b"anyone?", ("127.0.0.1", port))

                async def handled() -> bool:
                    return sum(s.total for s in await system.acceptor_stats("root/udp")) == 1

                await eventually(handled, what="the datagram to be handled")
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # nothing came back


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_second_system_cannot_take_the_udp_port(policy: str) -> None:
    def tree(port: int) -> object:
        return supervisor("root", children=[
            listener("udp", port=port, transport="udp", acceptor=Echo, count=1,
                     policy=policy),  # type: ignore[arg-type]
        ])

    with trio.fail_after(TIMEOUT):
        async with open_system(tree(0)) as first:  # type: ignore[arg-type]
            port = first.listener("root/udp").port
            with pytest.raises(BindError, match="in use"):
                async with open_system(tree(port), name="second"):  # type: ignore[arg-type]
                    pass
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                assert await exchange(sock, port, b"still mine") == b"still mine"


async def test_a_command_serves_a_udp_socket_the_master_owns() -> None:
    program = [
        "python3", "-c",
        "import socket\n"
        "sock = socket.socket(fileno=3)\n"
        "while True:\n"
        "    data, address = sock.recvfrom(65535)\n"
        "    sock.sendto(data.upper(), address)\n",
    ]
    tree = supervisor("root", children=[
        listener("dns", port=0, transport="udp", acceptor=None),
        command("upper", program, sockets=("root/dns",)),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            port = system.listener("root/dns").port
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                assert await exchange(sock, port, b"hi") == b"HI"
