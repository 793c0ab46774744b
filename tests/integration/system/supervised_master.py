"""A master running a tree of three workers until SIGTERM; each worker notes its stop."""

from __future__ import annotations

import os
import sys
import time

import trio

from actors import Actor, open_system, supervisor, worker


class Noter(Actor):
    def __init__(self, journal: str, label: str) -> None:
        self.journal = journal
        self.label = label

    async def drain(self) -> None:
        self._note("drain")
        await trio.sleep(1.0)  # a drain that takes a while: siblings drain at the same time

    async def cleanup(self) -> None:
        self._note("stop")

    def _note(self, what: str) -> None:
        # One short O_APPEND write (the workers drain and clean up at the same time), with
        # the system-wide monotonic clock, which every process reads alike.
        descriptor = os.open(self.journal, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, f"{what} {self.label} {time.monotonic()}\n".encode())
        finally:
            os.close(descriptor)


async def main(journal: str) -> None:
    await trio.Path(journal).write_text("")
    tree = supervisor("root", children=[
        worker(Noter, name=label, process=True, journal=journal, label=label)
        for label in ("a", "b", "c")
    ])
    async with open_system(tree) as system, trio.open_nursery() as nursery:
        # "ready" once until_signalled listens (it does before its first await), so that a
        # SIGTERM sent at once goes to it, not to the system's own handler: printed first,
        # a master that lost the CPU a moment after it missed the signal.
        nursery.start_soon(_say_ready)
        signal_number = await system.until_signalled()
        print(f"got {signal_number.name}", flush=True)


async def _say_ready() -> None:
    print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
