"""Sockets sent inside messages to worker processes (SCM_RIGHTS through the runtime)."""

from __future__ import annotations

import socket

import trio
import trio.testing

from actors import Actor, ActorRef, handler, open_system
from protocol import Message, SocketHandle
from tests.waiting import TIMEOUT


class Serve(Message):
    conn: SocketHandle


class Served(Message):
    received: str


class Pass(Message):
    conn: SocketHandle
    to: ActorRef


class Echo(Actor):
    """Reads one line from the socket it is given and writes it back upper-cased."""

    @handler
    async def serve(self, msg: Serve) -> Served:
        sock = trio.socket.from_stdlib_socket(msg.conn.into_socket())
        with sock:
            data = await sock.recv(1024)
            await sock.send(data.upper())
        return Served(received=data.decode())


class Passer(Actor):
    """Hands the socket it got on to another actor, then closes its own copy."""

    @handler
    async def pass_on(self, msg: Pass) -> Served:
        with msg.conn:
            return await msg.to.ask(Serve(conn=msg.conn), Served)


async def _round_trip(ours: socket.socket, text: bytes) -> bytes:
    sock = trio.socket.from_stdlib_socket(ours)
    with sock:
        await sock.send(text)
        return await sock.recv(1024)


async def test_socket_travels_to_a_worker() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            echo = await system.spawn(Echo, name="echo", process=True)
            ours, theirs = socket.socketpair()
            with theirs:
                reply_task: list[Served] = []

                async def ask() -> None:
                    reply_task.append(await echo.ask(Serve(conn=SocketHandle.from_socket(theirs)),
                                                      Served))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask)
                    assert await _round_trip(ours, b"hello") == b"HELLO"
            assert reply_task == [Served(received="hello")]


async def test_socket_travels_between_workers_through_the_master() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            echo = await system.spawn(Echo, name="echo", process=True)
            passer = await system.spawn(Passer, name="passer", process=True)
            for i in range(20):
                ours, theirs = socket.socketpair()
                text = f"line {i}".encode()
                async with trio.open_nursery() as nursery:
                    handle = SocketHandle.from_socket(theirs)
                    nursery.start_soon(passer.ask, Pass(conn=handle, to=echo))
                    await trio.testing.wait_all_tasks_blocked()
                    theirs.close()  # the ask has sent its own copy: ours can go
                    assert await _round_trip(ours, text) == text.upper()
