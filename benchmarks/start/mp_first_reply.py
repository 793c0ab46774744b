"""``start.py``'s multiprocessing anchor: a forked Process and one reply over a Pipe.

    python benchmarks/start/mp_first_reply.py

The clock starts just before the Pipe is made; a ``multiprocessing.Process`` (fork context:
no new interpreter, the child is a copy of this one) runs an echo loop; one message goes
there and back, and one line is printed once the reply is in: ``{"inner_s": ..., "seq": 1}``.
Then the child is told to stop and joined (reaped).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from multiprocessing.connection import Connection


def echo(conn: Connection) -> None:
    while (msg := conn.recv()) is not None:
        conn.send(msg)


if __name__ == "__main__":
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=echo, args=(child,))
    proc.start()
    child.close()
    parent.send({"seq": 1})
    reply = parent.recv()
    inner = time.perf_counter() - t0
    print(json.dumps({"inner_s": inner, "seq": reply["seq"]}), flush=True)
    parent.send(None)
    proc.join()
