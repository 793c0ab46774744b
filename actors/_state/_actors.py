"""The shared state across processes, as actors: the master's service actor, which workers'
replicas ask, and a worker's replica actor, which the service pushes to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from protocol import Message

from .._base._actor import Actor, handler
from .._base._errors import (
    ActorError,
    RemoteError,
    StateError,
    StoreUnavailable,
)
from .._base._ref import ActorRef
from ._api import Upstream
from ._replica import Replica
from ._service import StateService
from ._store import Record
from ._wire import (
    Failed,
    Page,
    ReadKey,
    Records,
    Resubscribe,
    Resync,
    Sync,
    WatchPrefix,
    Write,
    fit,
    page_after,
    page_budget,
)

__all__ = [
    "RemoteUpstream",
    "ReplicaActor",
    "StateServiceActor",
]

class StateServiceActor(Actor):
    """The service as an actor of the master: workers' replicas ask it. Its answers are
    pages that fit in a frame, whatever the data."""

    mailbox_size: ClassVar[int] = 65536

    def __init__(self, service: StateService) -> None:
        self.service = service

    @staticmethod
    async def _answer(operation: Any) -> Any:
        """What ``operation`` returns, or the Failed that says why it did not."""
        try:
            return await operation
        except StoreUnavailable as exc:
            return Failed(kind="unavailable", message=str(exc))
        except StateError as exc:
            return Failed(kind="invalid", message=str(exc))

    def _page(self, records: list[Record] | Failed, after: str | None) -> Page | Failed:
        if isinstance(records, Failed):
            return records
        page, next_after = page_after(records, after, self.service.budget)
        return Page(records=page, after=next_after)

    @handler
    async def read(self, msg: ReadKey) -> Records | Failed:
        found = await self._answer(self.service.read(msg.key, msg.replica))
        if isinstance(found, Failed):
            return found
        return Records(records=[fit(r, self.service.budget) for r in found])

    @handler
    async def watch(self, msg: WatchPrefix) -> Page | Failed:
        if msg.after is None:
            return self._page(await self._answer(self.service.watch(msg.prefix, msg.replica)),
                              None)
        return self._page(self.service.held_under(msg.prefix), msg.after)

    @handler
    async def write(self, msg: Write) -> Records | Failed:
        written = await self._answer(
            self.service.write(msg.key, msg.tag, msg.body, msg.expect)
        )
        if isinstance(written, Failed):
            return written
        if written is None and msg.expect is not None:
            # A compare_and_set that lost: the answer brings the record it lost to, ahead of
            # the push, so that a retry does not lose again for want of it.
            current = self.service.current(msg.key)
            return Records(records=[] if current is None else [fit(current,
                                                                    self.service.budget)])
        return Records(written=written)

    @handler
    async def resubscribe(self, msg: Resubscribe) -> Records | Failed:
        failed = await self._answer(self.service.resubscribe(msg.replica, msg.keys, msg.prefixes))
        return failed if isinstance(failed, Failed) else Records()

    @handler
    async def sync(self, msg: Sync) -> Page | Failed:
        if msg.after is None:
            return self._page(await self._answer(self.service.sync(msg.replica)), None)
        return self._page(self.service.wanted(msg.replica), msg.after)


class ReplicaActor(Actor):
    """A worker's replica, as an actor: the service pushes to it. The pushes are taken by
    the task that reads the channel (inline), so they are in the replica before anything
    that came after them on the channel (the answer to a sync, say)."""

    _inline_handlers: ClassVar[dict[type[Message], str]] = {
        Records: "_take_records",
        Resync: "_take_resync",
    }

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._resync: list[Record] = []  # the parts of a Resync received so far

    def _take_records(self, msg: Records) -> None:
        for record in msg.records:
            self.replica.take(record)

    def _take_resync(self, msg: Resync) -> None:
        self._resync.extend(msg.records)
        if msg.more:
            return  # taken whole, once the last part is here
        records, self._resync = self._resync, []
        self.replica.resync(msg.prefixes, records, reset=msg.reset)


class RemoteUpstream(Upstream):
    """A worker: asks to the master's service actor (answers larger than a frame come in
    pages)."""

    def __init__(self, service: ActorRef, replica_address: Callable[[], str],
                 max_frame_size: int) -> None:
        self._service = service
        self._address = replica_address
        self._budget = page_budget(max_frame_size)

    async def _ask(self, message: Message) -> Records | Page:
        try:
            reply = await self._service.ask(message)
        except RemoteError as exc:
            raise StateError(f"the state service failed: {exc.message}") from exc
        except ActorError as exc:
            raise StoreUnavailable(f"the state service cannot be reached: {exc}") from exc
        if isinstance(reply, Failed):
            if reply.kind == "unavailable":
                raise StoreUnavailable(reply.message)
            raise StateError(reply.message)
        if not isinstance(reply, Records | Page):
            raise StateError(f"the state service answered {reply!r}")
        return reply

    async def pages(self, ask: Callable[[str | None], Message]) -> list[Record]:
        """Every page of an answer, asked one after the other."""
        records: list[Record] = []
        after: str | None = None
        while True:
            page = await self._ask(ask(after))
            records.extend(page.records)
            if not isinstance(page, Page) or page.after is None:
                return records
            after = page.after

    async def read(self, key: str, replica: Replica) -> list[Record]:
        return (await self._ask(ReadKey(key=key, replica=self._address()))).records

    async def watch(self, prefix: str, replica: Replica) -> list[Record]:
        address = self._address()
        return await self.pages(
            lambda after: WatchPrefix(prefix=prefix, replica=address, after=after)
        )

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None,
                    replica: Replica) -> Record | None:
        reply = await self._ask(Write(key=key, tag=tag, body=body, expect=expect))
        for record in reply.records:  # what a compare_and_set lost to
            replica.learn(record)
        return reply.written if isinstance(reply, Records) else None

    async def sync(self, replica: Replica) -> list[Record]:
        address = self._address()
        # First what it holds, so that whatever the service lost of it is subscribed again
        # (in parts that fit a frame: a key is at most 512 bytes).
        per_part = max(1, self._budget // 1024)
        keys = sorted(replica.keys)
        prefixes = sorted(replica.prefixes)
        for start in range(0, max(len(keys), len(prefixes), 1), per_part):
            await self._ask(Resubscribe(replica=address, keys=keys[start:start + per_part],
                                 prefixes=prefixes[start:start + per_part]))
        return await self.pages(lambda after: Sync(replica=address, after=after))
