"""Links between "processes" in one process, for the unit tests of the message core."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from actors._messaging._link import Link
from protocol import open_channel


@asynccontextmanager
async def link_pair(
    parent: str = "0", child: str = "0.1", *, subtree: str = "w1"
) -> AsyncIterator[tuple[Link, Link]]:
    """The parent's link to a child process and the child's link to its parent, over a
    socketpair (closed on exit): ``(down, up)``."""
    async with AsyncExitStack() as stack:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours = await stack.enter_async_context(open_channel(a))
        theirs = await stack.enter_async_context(open_channel(b))
        yield (Link(child, ours, is_parent=False, subtree=subtree),
               Link(parent, theirs, is_parent=True))
