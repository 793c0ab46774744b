"""A plain script for the operations tests: ``python ops_master.py NAME JOURNAL [PORT]``.

A supervised worker that prints (for ``logs``) and notes its cleanup in JOURNAL; a
listener whose acceptors answer each connection with ``greeting.TEXT`` (a module the
script imports at its top: the reload test rewrites it); a worker that allocates memory
when asked (``max_memory``). No signal handling of its own: the runtime's.
"""

from __future__ import annotations

import os
import signal
import sys

import greeting  # next to this script (the reload test rewrites it)
import trio

from actors import Acceptor, Actor, handler, listener, open_system, supervisor, worker
from protocol import Message


class Grow(Message):
    megabytes: int


class Noter(Actor):
    def __init__(self, journal: str) -> None:
        self.journal = journal

    async def setup(self) -> None:
        print(f"noter {os.getpid()} says hello", flush=True)
        print(f"noter {os.getpid()} to stderr", file=sys.stderr, flush=True)

    async def drain(self) -> None:
        self._note("drain")  # the test knows the stop has begun
        await trio.sleep(2)  # work in flight: a stop waits for it (unless told to hurry)

    async def cleanup(self) -> None:
        self._note("cleanup")

    def _note(self, what: str) -> None:
        descriptor = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, f"{what} {os.getpid()}\n".encode())
        finally:
            os.close(descriptor)


class Hog(Actor):
    """Grows by 200 MB on SIGUSR1 (past its max_memory of 150 MB)."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []

    async def setup(self) -> None:
        self.ctx.start_soon(self._grow_on_signal)

    async def _grow_on_signal(self) -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                self.kept.append(os.urandom(200 * 1024 * 1024))

    @handler
    async def grow(self, msg: Grow) -> None:
        self.kept.append(os.urandom(msg.megabytes * 1024 * 1024))


class Greeter(Acceptor):
    async def setup(self) -> None:
        if greeting.TEXT == "crash":  # new code that imports, but cannot start
            raise RuntimeError("this version cannot start")

    async def handle(self, stream: trio.SocketStream) -> None:
        await stream.send_all(f"{greeting.TEXT} {os.getpid()}\n".encode())


async def main(name: str, journal: str, port: int) -> None:
    tree = supervisor("root", children=[
        worker(Noter, name="noter", process=True, journal=journal, reload=True),
        worker(Hog, name="hog", process=True, max_memory=150 * 1024 * 1024),
        listener("greet", port=port, acceptor=Greeter, count=2),
    ])
    async with open_system(tree, name=name) as system:
        print(f"ready port={system.listener('root/greet').port}", flush=True)
        await trio.sleep_forever()
    print(f"stopped by {system.stopped_by}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
