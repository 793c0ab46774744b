"""A master process for the shared-state tests that need several masters, or a master
that dies: run as ``python -m tests.integration.state.state_master --store URL ROLE ...``.

Roles (each prints one line per fact, flushed, for the test to read):
- ``write --count N``: puts ``k0..kN-1``; prints ``acked <key> <version>`` after each
  acknowledged put, then waits to be killed.
- ``watch --workers W --key K --value V``: W worker processes watch K; each prints
  ``seen <pid> <value>`` once it sees V there; the master prints ``ready`` once all watch,
  and exits once all have seen it.
- ``dump --count N``: prints ``<key> <version> <value>`` for every key, then exits.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from actors import Actor, StateChanged, handler, open_system
from protocol import Message


class Counter(Message, tag="tests.state.Counter"):  # the same tag in every process
    value: int


class Text(Message, tag="tests.state.Text"):
    text: str


class WatchFor(Message):
    key: str
    value: str


class Watching(Message):
    pass


class Watcher(Actor):
    @handler
    async def watch_for(self, msg: WatchFor) -> Watching:
        self.ctx.start_soon(self._watch, msg.key, msg.value)
        await self._started.wait()
        return Watching()

    def __init__(self) -> None:
        self._started = trio.Event()

    async def _watch(self, key: str, value: str) -> None:
        async with self.ctx.state.watch(key) as changes:
            self._started.set()
            current = await self.ctx.state.get(key, Text)
            if current is not None and current.text == value:
                print(f"seen {os.getpid()} {value}", flush=True)
                return
            async for change in changes:
                if isinstance(change, StateChanged) and isinstance(change.value, Text) \
                        and change.value.text == value:
                    print(f"seen {os.getpid()} {value}", flush=True)
                    return


async def main(arguments: argparse.Namespace) -> None:
    async with open_system(store=arguments.store, name=arguments.name) as system:
        if arguments.role == "write":
            for i in range(arguments.count):
                version = await system.state.put(f"k{i}", Counter(value=i))
                print(f"acked k{i} {version}", flush=True)
            print("done", flush=True)
            await trio.sleep_forever()
        elif arguments.role == "watch":
            refs = [await system.spawn(Watcher, name=f"w{i}", process=True)
                    for i in range(arguments.workers)]
            for ref in refs:
                await ref.ask(WatchFor(key=arguments.key, value=arguments.value))
            print("ready", flush=True)
            await trio.sleep_forever()
        elif arguments.role == "put":
            await system.state.put(arguments.key, Text(text=arguments.value))
            print("put", flush=True)
        else:
            for i in range(arguments.count):
                entry = await system.state.entry(f"k{i}", Counter)
                if entry is not None:
                    print(f"k{i} {entry.version} {entry.value.value}", flush=True)
            print("end", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--name", default=f"state-master-{os.getpid()}")
    parser.add_argument("role", choices=["write", "watch", "put", "dump"])
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--key", default="")
    parser.add_argument("--value", default="")
    trio.run(main, parser.parse_args())
    sys.exit(0)
