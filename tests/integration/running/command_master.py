"""A master that runs one command, prints the command's pid, and waits to be killed."""

from __future__ import annotations

import sys

import trio

from actors import ActorStarted, command, open_system, supervisor

TREE = supervisor("root", children=[command("sleeper", ["sleep", "600"])])


async def main() -> None:
    async with open_system(TREE) as system:
        events = system.events(history=True)
        async for event in events:
            if isinstance(event, ActorStarted) and event.path == "root/sleeper":
                print(event.pid, flush=True)
                break
        await trio.sleep_forever()


if __name__ == "__main__":
    sys.exit(trio.run(main))
