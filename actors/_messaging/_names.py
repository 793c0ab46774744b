"""``NameRegistry``: which actor holds which path, and who waits for a path to come back.

Every process keeps the names of its own actors; each registration is also reported up the
tree, so the master knows the names of the whole system and resolves sends by path. A path
that a supervisor keeps alive is *held*: while nobody holds it (its actor is restarting),
senders by path wait for the next incarnation, up to ``restart_wait`` seconds.
"""

from __future__ import annotations

import logging

import trio

from .._base._control import NameRegistered, NameUnregistered
from .._base._errors import ActorError
from ._link import Link

__all__ = ["NameRegistry"]

log = logging.getLogger("actors")


class NameRegistry:
    """Paths to addresses (``node/id``), and the paths supervisors keep alive."""

    def __init__(self, *, restart_wait: float = 5.0) -> None:
        self.restart_wait = restart_wait
        self.names: dict[str, str] = {}
        self.upstream: Link | None = None  # where registrations are reported (None: master)
        self._supervised: set[str] = set()
        self._awaiting: dict[str, trio.Event] = {}

    def get(self, path: str) -> str | None:
        return self.names.get(path)

    def taken(self, path: str) -> bool:
        return path in self.names

    def register(self, path: str, address: str, *, replace: bool = False) -> None:
        """``address`` holds ``path`` from now on; a path held by another is an error,
        unless ``replace`` (a successor takes the name from an incarnation on its way out)."""
        holder = self.names.get(path)
        if holder is not None and holder != address and not replace:
            raise ActorError(f"the name {path!r} is already taken by {holder}")
        self.names[path] = address
        self._wake(path)
        if self.upstream is not None:
            self.upstream.notify(NameRegistered(path=path, address=address))

    def unregister(self, path: str, address: str) -> None:
        """``address`` gives ``path`` up (nothing happens if another holds it now)."""
        if self.names.get(path) == address:
            del self.names[path]
            if self.upstream is not None:
                self.upstream.notify(NameUnregistered(path=path, address=address))

    def hold(self, path: str) -> None:
        """A supervisor keeps ``path`` alive: while nobody holds it, senders by path wait
        (up to ``restart_wait``) for the next incarnation instead of failing at once."""
        self._supervised.add(path)

    def release(self, path: str) -> None:
        """``path`` will not come back: wake whoever waits for it (they fail)."""
        if path not in self.names:
            self._supervised.discard(path)
        self._wake(path)

    def supervised(self, path: str) -> bool:
        return path in self._supervised

    async def wait_for(self, path: str) -> str | None:
        """The address of ``path`` once someone holds it, waiting (up to ``restart_wait``)
        only while a supervisor keeps it alive; None if it did not come back."""
        address = self.names.get(path)
        if address is not None or path not in self._supervised:
            return address
        event = self._awaiting.get(path)
        if event is None:
            event = self._awaiting[path] = trio.Event()
        with trio.move_on_after(self.restart_wait):
            await event.wait()
        return self.names.get(path)

    def _wake(self, path: str) -> None:
        event = self._awaiting.pop(path, None)
        if event is not None:
            event.set()
