"""A master running a tree of three workers until SIGTERM; each worker notes its stop."""

from __future__ import annotations

import sys

import trio

from actors import Actor, open_system, supervisor, worker


class Noter(Actor):
    def __init__(self, journal: str, label: str) -> None:
        self.journal = journal
        self.label = label

    async def cleanup(self) -> None:
        await trio.Path(self.journal).write_text(
            await trio.Path(self.journal).read_text() + f"stop {self.label}\n"
        )


async def main(journal: str) -> None:
    await trio.Path(journal).write_text("")
    tree = supervisor("root", children=[
        worker(Noter, name=label, process=True, journal=journal, label=label)
        for label in ("a", "b", "c")
    ])
    async with open_system(tree) as system:
        print("ready", flush=True)
        signal_number = await system.until_signalled()
        print(f"got {signal_number.name}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
