"""``NameRegistry``: which actor holds which path, and who waits for a path to come back.

Every process keeps the names of its own actors; each registration is also reported up the
tree (:class:`NameRegistered`, :class:`NameUnregistered`, handled here when they arrive from a
worker), so the master knows the names of the whole system and resolves sends by path. A path
that a supervisor keeps alive is *held*: while nobody holds it (its actor is restarting),
senders by path wait for the next incarnation, up to ``restart_wait`` seconds.

A *pool*'s path holds no actor: a send to it goes to one of the members that hold its
numbered paths (``pool/0``, ``pool/1``, ...), in turn, and waits while none does (each
restarting). Pools are reported up as names are (:class:`PoolDeclared`).
"""

from __future__ import annotations

import logging

import trio

from .._base._control import NameRegistered, NameUnregistered, PoolDeclared, PoolDropped
from .._base._errors import ActorError
from ._link import Link, Links

__all__ = ["NameRegistry"]

log = logging.getLogger("actors")


class NameRegistry:
    """Paths to addresses (``node/id``), and the paths supervisors keep alive.

    ``links`` (set once by the process's :class:`Router`) are where registrations are
    reported (the parent link; none in the master) and how the owner of a name is reached.
    """

    def __init__(self, *, restart_wait: float = 5.0) -> None:
        self.restart_wait = restart_wait
        self.names: dict[str, str] = {}
        self.links: Links | None = None
        self._supervised: set[str] = set()
        self._awaiting: dict[str, trio.Event] = {}
        self._pools: dict[str, dict[str, str]] = {}  # a pool's path -> its members' names
        self._turns: dict[str, int] = {}  # a pool's path -> how many sends it spread
        self._least_busy: set[str] = set()  # the pools whose sends go to the least busy
        # A least-busy pool's member's address -> the asks from this process in flight to
        # it (counted by the outbox: ``begin``/``end``).
        self.in_flight: dict[str, int] = {}

    def get(self, path: str) -> str | None:
        """The address a send to ``path`` goes to now (a pool's: its next member's)."""
        address = self.names.get(path)
        if address is None and self._pools:
            members = self._pools.get(path)
            if members:
                turn = self._turns[path] = self._turns[path] + 1
                addresses = list(members.values())
                if path in self._least_busy:  # fewest in flight; in turn among equals
                    count = self.in_flight.get
                    addresses = addresses[turn % len(addresses):] + addresses[
                        :turn % len(addresses)]
                    return min(addresses, key=lambda a: count(a, 0))
                address = addresses[turn % len(addresses)]
        return address

    def counts(self, path: str) -> bool:
        """Whether asks to ``path`` are counted (``begin``/``end``): a least-busy pool's."""
        return path in self._least_busy

    def begin(self, address: str) -> None:
        """An ask to a least-busy pool's member at ``address`` is in flight."""
        self.in_flight[address] = self.in_flight.get(address, 0) + 1

    def end(self, address: str) -> None:
        """That ask was answered (or failed, or was cancelled)."""
        left = self.in_flight.get(address, 0) - 1
        if left > 0:
            self.in_flight[address] = left
        else:
            self.in_flight.pop(address, None)

    def declare_pool(self, path: str, policy: str = "round_robin") -> None:
        """A pool runs at ``path`` (its supervisor starts): sends to it spread over its
        members (by ``policy``), and wait (as for a restart) while it has none."""
        self._pools.setdefault(path, {})
        self._turns.setdefault(path, -1)
        if policy == "least_busy":
            self._least_busy.add(path)
        for name, address in self.names.items():
            if _member_of(name) == path:
                self._pools[path][name] = address
        self._supervised.add(path)
        upstream = self._upstream()
        if upstream is not None:
            upstream.notify(PoolDeclared(path=path, policy=policy))

    def drop_pool(self, path: str) -> None:
        """The pool at ``path`` ended."""
        if self._pools.pop(path, None) is None:
            return
        self._turns.pop(path, None)
        self._least_busy.discard(path)
        self._supervised.discard(path)
        self._wake(path)
        upstream = self._upstream()
        if upstream is not None:
            upstream.notify(PoolDropped(path=path))

    def taken(self, path: str) -> bool:
        return path in self.names

    def register(self, path: str, address: str, *, replace: bool = False) -> None:
        """``address`` holds ``path`` from now on; a path held by another is an error,
        unless ``replace`` (a successor takes the name from an incarnation on its way out)."""
        owner = self.names.get(path)
        if owner is not None and owner != address and not replace:
            raise ActorError(f"the name {path!r} is already taken by {owner}")
        self.names[path] = address
        self._wake(path)
        pool = _member_of(path)
        if pool in self._pools:
            self._pools[pool][path] = address
            self._wake(pool)
        upstream = self._upstream()
        if upstream is not None:
            upstream.notify(NameRegistered(path=path, address=address))

    def unregister(self, path: str, address: str) -> None:
        """``address`` gives ``path`` up (nothing happens if another holds it now)."""
        if self.names.get(path) == address:
            del self.names[path]
            members = self._pools.get(_member_of(path) or "")
            if members is not None:
                members.pop(path, None)
            upstream = self._upstream()
            if upstream is not None:
                upstream.notify(NameUnregistered(path=path, address=address))

    def supervise(self, path: str) -> None:
        """A supervisor keeps ``path`` alive: while nobody holds it, senders by path wait
        (up to ``restart_wait``) for the next incarnation instead of failing at once."""
        self._supervised.add(path)

    def unsupervise(self, path: str) -> None:
        """``path`` will not come back: wake whoever waits for it (they fail)."""
        if path not in self.names:
            self._supervised.discard(path)
        self._wake(path)

    def supervised(self, path: str) -> bool:
        return path in self._supervised

    async def wait_for(self, path: str) -> str | None:
        """The address of ``path`` once someone holds it, waiting (up to ``restart_wait``)
        only while a supervisor keeps it alive; None if it did not come back."""
        address = self.get(path)
        if address is not None or path not in self._supervised:
            return address
        event = self._awaiting.get(path)
        if event is None:
            event = self._awaiting[path] = trio.Event()
        with trio.move_on_after(self.restart_wait):
            await event.wait()
        return self.get(path)

    def drop(self, link: Link) -> list[tuple[str, str]]:
        """Unregister the names held in the subtree of the worker behind ``link`` (its
        process is gone or going); the ``(path, address)`` pairs dropped."""
        dropped = []
        for path, address in list(self.names.items()):
            if link.owns(address.partition("/")[0]):
                self.unregister(path, address)  # and up the tree
                dropped.append((path, address))
        return dropped

    # -- reports from workers (handlers of the control table) -------------------------------

    def on_registered(self, link: Link, message: NameRegistered) -> None:
        """An actor in the worker behind ``link`` (or below it) took a path."""
        if not self._may_name(link, message):
            return
        owner = self.names.get(message.path)
        if owner is None or owner == message.address:
            self.register(message.path, message.address)
            return
        owner_link = None if self.links is None else self.links.link_towards(
            owner.partition("/")[0]
        )
        if owner_link is not None and (owner_link.retiring or owner_link.closing):
            # The owner belongs to an incarnation on its way out (it asked to be
            # replaced): names follow the live one.
            self.register(message.path, message.address, replace=True)
        else:
            log.warning("%r registered twice (by %s and %s); keeping the first",
                        message.path, owner, message.address)

    def on_unregistered(self, link: Link, message: NameUnregistered) -> None:
        """An actor in the worker behind ``link`` (or below it) gave its path up."""
        if self._may_name(link, message):
            self.unregister(message.path, message.address)

    def on_pool(self, link: Link, message: PoolDeclared | PoolDropped) -> None:
        """A pool in the worker behind ``link`` (or below it) started or ended."""
        if not link.covers(message.path):
            log.error("node %s (%s) may not declare a pool at %r: refused", link.peer,
                      link.subtree, message.path)
        elif isinstance(message, PoolDeclared):
            self.declare_pool(message.path, message.policy)
        else:
            self.drop_pool(message.path)

    @staticmethod
    def _may_name(link: Link, message: NameRegistered | NameUnregistered) -> bool:
        """A worker names only actors of its own process tree, at its own path or below."""
        node_id = message.address.partition("/")[0]
        if link.owns(node_id) and link.covers(message.path):
            return True
        log.error("node %s (%s) may not name %r at %s: refused", link.peer, link.subtree,
                  message.path, message.address)
        return False

    def _upstream(self) -> Link | None:
        return None if self.links is None else self.links.parent

    def _wake(self, path: str) -> None:
        event = self._awaiting.pop(path, None)
        if event is not None:
            event.set()


def _member_of(path: str) -> str | None:
    """The pool whose member ``path`` would be (``pool/3``: ``pool``), or None."""
    parent, _, last = path.rpartition("/")
    return parent if parent and last.isdigit() else None
