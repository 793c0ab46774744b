"""Shared configuration: acceptors greet each connection with the current greeting.

    python examples/shared_config.py [--port 7001] [--workers 2] [--store URL] [--every 3]
    python examples/shared_config.py --store redis://127.0.0.1:6379/0 --set "hello"

The greeting is an ``AppConfig`` in the system's shared state. Every acceptor (a worker
process) reads it from its replica for each connection: no IPC per read, and a change
reaches every worker at once, pushed by the master (no restart, no polling). The master
changes it every ``--every`` seconds. With a Redis store, ``--set TEXT`` run from another
shell writes a new greeting into the same Redis (the running system, and every other
system using that Redis, picks it up) and exits.

Try it: ``nc 127.0.0.1 7001`` a few times, a few seconds apart.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import trio

from actors import Acceptor, BindError, StoreUnavailable, listener, open_system, supervisor
from protocol import Message

GREETINGS = ("hello", "bonjour", "hola", "你好", "hallo", "ciao")


class AppConfig(Message, tag="examples.AppConfig"):  # one tag in every program using it
    workers: int
    greeting: str


class Greeter(Acceptor):
    """Greets with the current configuration, then closes the connection."""

    async def handle(self, stream: trio.SocketStream) -> None:
        config = await self.ctx.state.get("config/app", AppConfig)
        greeting = config.greeting if config is not None else "(no greeting yet)"
        await stream.send_all(f"{greeting} from pid {os.getpid()}\n".encode())


async def serve(port: int, workers: int, store: str | None, every: float) -> None:
    tree = supervisor("root", children=[
        listener("greeter", port=port, acceptor=Greeter, count=workers),
    ])
    async with open_system(tree, store=store) as system:
        bound = system.listener("root/greeter")
        print(f"shared_config listening on {bound.host}:{bound.port} master={os.getpid()} "
              f"store={store or 'memory'}", flush=True)
        for greeting in itertools.cycle(GREETINGS):
            try:
                version = await system.state.put(
                    "config/app", AppConfig(workers=workers, greeting=greeting)
                )
                print(f"greeting is now {greeting!r} (version {version})", flush=True)
            except StoreUnavailable as exc:
                print(f"could not change the greeting: {exc}", flush=True)
            await trio.sleep(every)


async def set_greeting(store: str, greeting: str) -> None:
    # A second program beside the server, sharing only the store: it takes its own name
    # and opens no control socket (the server's name is taken, and `trio-actors` has
    # nothing to operate in a program that lives for one write).
    async with open_system(store=store, name="shared_config-set", control=False) as system:
        version = await system.state.put("config/app", AppConfig(workers=0, greeting=greeting))
        print(f"greeting set to {greeting!r} (version {version})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default=None,
                        help="sqlite:///path or redis://host:port/db (default: memory)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between changes")
    parser.add_argument("--set", metavar="TEXT", help="write this greeting and exit (Redis)")
    arguments = parser.parse_args()
    if arguments.set is not None:
        if not (arguments.store or "").startswith(("redis://", "rediss://")):
            parser.error("--set needs --store redis://...: another program must share the store")
        try:
            trio.run(set_greeting, arguments.store, arguments.set)
        except StoreUnavailable as exc:
            print(f"shared_config: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        trio.run(serve, arguments.port, arguments.workers, arguments.store, arguments.every)
    except BindError as exc:
        print(f"shared_config: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
