"""``start.py``'s program for our runtime: a system, one process actor, its first reply.

    python benchmarks/start/ours_first_reply.py [--spawn]

Imports what a user's program imports, then (clock started just before ``open_system``)
opens a system, spawns one process actor (``process=True``: forked from the system's fork
server, or with ``--spawn`` a fresh interpreter, ``start_method="spawn"``), asks it once and
prints one line as soon as the reply is in: ``{"inner_s": ..., "seq": 1}``, the seconds
from just before ``open_system()`` to the reply. Leaving ``open_system`` then stops and
reaps the worker (and the fork server); ``start.py`` times that as the exit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Literal

import trio

from actors import Actor, handler, open_system
from protocol import Message


class Ping(Message):
    seq: int


class Echo(Actor):
    @handler
    async def ping(self, msg: Ping) -> Ping:
        return msg


async def main(start_method: Literal["forkserver", "spawn"]) -> None:
    t0 = time.perf_counter()
    # A name of its own (the default is the script's), so that two runs of this benchmark
    # at once, from two checkouts, do not collide (SystemNameTaken).
    name = f"bench-start-{os.getpid()}"
    async with open_system(start_method=start_method, name=name) as system:
        ref = await system.spawn(Echo, name="echo", process=True)
        reply = await ref.ask(Ping(seq=1), Ping)
        inner = time.perf_counter() - t0
        print(json.dumps({"inner_s": inner, "seq": reply.seq}), flush=True)


if __name__ == "__main__":  # required: the worker imports this script
    trio.run(main, "spawn" if "--spawn" in sys.argv[1:] else "forkserver")
