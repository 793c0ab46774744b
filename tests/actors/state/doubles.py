"""Doubles of what the master's state service talks to, in this process: its router (the
other processes' replicas behind it) and a store that other systems share.

The service runs over them as in a master (:func:`serving`), with no process and no server.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors import Actor, ActorGone, ActorRef, Event
from actors._base._events import EventBus
from actors._state._memory import MemoryStore
from actors._state._service import StateService
from actors._state._store import EpochChanged, Record, Store, StoreChange
from protocol import DEFAULT_MAX_FRAME_SIZE, FrameKind, Message, encode_message, registry


class Wire:
    """The router, as the service (and a worker's upstream) uses it.

    The service needs three things of its router: the frame limit, somewhere to publish
    events, and a way to tell other processes' replicas. Every message is carried as between
    two processes: encoded as a frame (one over the limit fails here, as it would there) and
    decoded again. Asks go to the actor the test serves at an address (``actors``).

    What reached whom: ``sent``, by address; ``refused``, what was sent to a process that
    had ended (``ended`` names their nodes: a node below one of them ended too). An address
    in ``full`` takes nothing until its event is set (a process too busy to read).
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self.published: list[Event] = []
        self.sent: defaultdict[str, list[Message]] = defaultdict(list)
        self.refused: list[tuple[str, Message]] = []
        self.ended: set[str] = set()
        self.full: dict[str, trio.Event] = {}
        self.actors: dict[str, Actor] = {}
        self.asked: list[Message] = []

    @property
    def outbox(self) -> Wire:
        """The sender behind the refs the service makes: this double too."""
        return self

    def publish(self, event: Event) -> None:
        self.published.append(event)

    def _carry(self, ref: ActorRef, message: Message) -> Message:
        """``message`` as the other side reads it; FrameTooLarge if it cannot travel."""
        _, fds = encode_message(FrameKind.TELL, message, route=ref.wire(),
                                max_frame_size=self.max_frame_size)
        assert not fds
        body = type(message).__pydantic_serializer__.to_json(message)
        return registry.decode(message.message_tag, body)

    def _ended(self, address: str) -> bool:
        node = address.partition("/")[0]
        return any(node == gone or node.startswith(gone + ".") for gone in self.ended)

    async def tell(self, ref: ActorRef, message: Message) -> None:
        address = ref.address
        assert address is not None, "the service tells replicas by address"
        await trio.lowlevel.checkpoint()
        if self._ended(address):
            self.refused.append((address, message))
            raise ActorGone(f"{address}: its process ended")
        full = self.full.get(address)
        if full is not None:
            await full.wait()
        self.sent[address].append(self._carry(ref, message))

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        address = ref.address
        assert address is not None
        actor = self.actors[address]
        request = self._carry(ref, message)
        self.asked.append(request)
        name = type(actor).handler_for(type(request))
        assert name is not None, f"{type(actor).__name__} has no handler for {request!r}"
        reply: Message | None = await getattr(actor, name)(request)
        return None if reply is None else self._carry(ref, reply)


class SharedStore:
    """A store that other systems write to as well, as a Redis is: what they write goes
    straight into ``data`` (reported or not: ``report`` says what ``changes()`` yields);
    ``lose_data`` empties it (a new epoch, found by the next write or check); while
    ``hang`` is set it answers nothing."""

    name = "shared"
    shared = True

    def __init__(self) -> None:
        self.data = MemoryStore()
        self.epoch = "one"
        self.hang = False
        self._known = self.epoch
        self._send, self._changes = trio.open_memory_channel[StoreChange](math.inf)

    def lose_data(self, epoch: str) -> None:
        self.data = MemoryStore()
        self.epoch = epoch

    def report(self, change: StoreChange) -> None:
        self._send.send_nowait(change)

    async def _answering(self) -> None:
        if self.hang:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def read(self, key: str) -> Record | None:
        await self._answering()
        return await self.data.read(key)

    async def read_prefix(self, prefix: str) -> list[Record]:
        await self._answering()
        return await self.data.read_prefix(prefix)

    async def write(self, key: str, tag: str, body: bytes | None, *, expect: int | None
                    ) -> Record | None:
        await self.check()
        return await self.data.write(key, tag, body, expect=expect)

    def changes(self) -> trio.MemoryReceiveChannel[StoreChange]:
        return self._changes

    async def check(self) -> None:
        await self._answering()
        if self._known != self.epoch:
            self._known = self.epoch
            raise EpochChanged(self.epoch)


@asynccontextmanager
async def serving(store: Store | None = None, *, wire: Wire | None = None,
                  events: EventBus | None = None, store_timeout: float = 5.0,
                  ) -> AsyncIterator[tuple[StateService, Wire]]:
    """A master's state service over ``store`` (a MemoryStore by default) and ``wire``."""
    wire = wire or Wire()
    service = StateService(wire, store or MemoryStore(),  # type: ignore[arg-type]
                           timeout=store_timeout,
                           events=events)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service, wire
        nursery.cancel_scope.cancel()
