"""A master that starts one worker, prints the worker's pid, and waits to be killed."""

from __future__ import annotations

import os
import sys

import trio

from actors import Actor, handler, open_system
from protocol import Message


class WhoAreYou(Message):
    pass


class Pid(Message):
    pid: int


class Worker(Actor):
    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


async def main() -> None:
    async with open_system() as system:
        worker = await system.spawn(Worker, name="worker", process=True)
        pid = await worker.ask(WhoAreYou(), Pid)
        print(pid.pid, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    sys.exit(trio.run(main))
