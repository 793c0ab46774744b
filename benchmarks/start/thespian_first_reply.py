"""``start.py``'s Thespian anchor: an actor system, one actor in its own process, one reply.

    python benchmarks/start/thespian_first_reply.py

Thespian (``pip install thespian``) with its ``multiprocQueueBase`` system base: actors in
processes of their own, talking over multiprocessing queues, all within this program (the
``multiprocTCPBase`` would share one admin process on a fixed port between programs, and
outlive them). The clock starts just before ``ActorSystem(...)``; one actor is created and
asked once; one line is printed once the reply is in: ``{"inner_s": ..., "seq": 1}``.
Then ``shutdown()`` stops the actor and the system's admin process.
"""

from __future__ import annotations

import json
import time
from typing import Any

from thespian.actors import Actor, ActorSystem  # type: ignore[import-untyped]


class Echo(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, dict):
            self.send(sender, message)


if __name__ == "__main__":
    t0 = time.perf_counter()
    system = ActorSystem("multiprocQueueBase")
    try:
        echo = system.createActor(Echo)
        reply = system.ask(echo, {"seq": 1}, 30)
        if reply is None:
            raise SystemExit("no reply from the Thespian actor within 30 s")
        inner = time.perf_counter() - t0
        print(json.dumps({"inner_s": inner, "seq": reply["seq"]}), flush=True)
    finally:
        system.shutdown()
