"""A master that starts one worker and reports, as JSON, what its fork server is: its
command line and name, and what its fds are. ``--thread``: a thread runs beside the event
loop meanwhile (the master must then not be forked)."""

from __future__ import annotations

import json
import os
import sys
import threading

import trio

from actors import Actor, handler, open_system
from protocol import Message


class WhoAreYou(Message):
    pass


class Identity(Message):
    pid: int
    parent: int


class Worker(Actor):
    @handler
    async def who(self, msg: WhoAreYou) -> Identity:
        return Identity(pid=os.getpid(), parent=os.getppid())


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode().strip()


async def main(with_thread: bool) -> None:
    release = threading.Event()
    helper = threading.Thread(target=release.wait)
    if with_thread:
        helper.start()
    try:
        async with open_system(name=f"fork-server-{os.getpid()}") as system:
            worker = await system.spawn(Worker, name="worker", process=True)
            who = await worker.ask(WhoAreYou(), Identity)
            server = who.parent
            print(json.dumps({
                "master": os.getpid(),
                "master_cmdline": _read(f"/proc/{os.getpid()}/cmdline"),
                "server": server,
                "server_parent": int(_read(f"/proc/{server}/stat").split(")")[1].split()[1]),
                "server_cmdline": _read(f"/proc/{server}/cmdline"),
                "server_fds": sorted(
                    os.readlink(f"/proc/{server}/fd/{fd}")
                    for fd in os.listdir(f"/proc/{server}/fd")
                ),
            }), flush=True)
    finally:
        release.set()
        if with_thread:
            helper.join()


if __name__ == "__main__":
    trio.run(main, "--thread" in sys.argv[1:])
