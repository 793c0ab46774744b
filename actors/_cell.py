"""``Cell``: one running actor in this process (its mailbox, its loop, its children)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import trio

from protocol import Message

from ._actor import Actor
from ._control import Failure
from ._errors import ActorGone
from ._ref import ActorRef

if TYPE_CHECKING:
    from ._node import Node, Reply

__all__ = ["Cell", "Child", "Parent"]

log = logging.getLogger("actors")

_FAIRNESS_BUDGET = 64  # messages handled back to back before the loop lets other tasks run


class Child(Protocol):
    """What a parent knows of a child it started (an in-process cell or a worker process)."""

    path: str
    shutdown_timeout: float
    done: trio.Event

    async def shutdown(self, grace: float) -> None: ...


class Parent(Protocol):
    """Something that starts children and bounds their lifetime: a cell or the system root."""

    path: str
    nursery: trio.Nursery
    children: list[Child]


class Cell:
    """Runs one actor: setup, then one message at a time from its mailbox, then cleanup.

    ``run`` is started with ``nursery.start``: it returns the actor's ref once ``setup``
    succeeded. The actor stops when asked (:meth:`stop`: it finishes what is queued), when a
    handler raises (a crash: queued asks get ActorGone), or when its task is cancelled. Its
    children are stopped in reverse start order before ``cleanup`` runs.
    """

    def __init__(
        self, node: Node, actor: Actor, *, path: str, parent: Parent, shutdown_timeout: float
    ) -> None:
        self.node = node
        self.actor = actor
        self.path = path
        self.parent = parent
        self.shutdown_timeout = shutdown_timeout
        self.id = node.next_actor_id()
        self.address = f"{node.id}/{self.id}"
        self.ref = ActorRef(node, address=self.address)
        self.children: list[Child] = []
        self.accepting = False
        self.done = trio.Event()
        self.failure: BaseException | None = None
        self._send, self._recv = trio.open_memory_channel[tuple[Message, "Reply | None"]](
            max(0, actor.mailbox_size)
        )
        self._current: Reply | None = None
        self._scope = trio.CancelScope()
        self.nursery: trio.Nursery

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox, waiting while it is full."""
        if not self.accepting:
            raise ActorGone(f"actor {self.path} ({self.address}) is not running")
        try:
            try:
                self._send.send_nowait((message, reply))
            except trio.WouldBlock:
                await self._send.send((message, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorGone(f"actor {self.path} ({self.address}) stopped") from None

    def stop(self) -> None:
        """Stop taking messages; the actor exits once its mailbox is empty."""
        self.accepting = False
        self._send.close()

    async def shutdown(self, grace: float) -> None:
        """Stop, wait up to ``grace`` seconds for the queue to drain, then cancel."""
        self.stop()
        with trio.move_on_after(grace):
            await self.done.wait()
        self._scope.cancel()
        await self.done.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED
    ) -> None:
        node = self.node
        node.cells[self.id] = self
        started = False
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self.actor._actor_context = _make_context(self)
                    await self.actor.setup()
                    node.register_name(self.path, self.address)
                    self.accepting = True
                    started = True
                    task_status.started(self.ref)
                    try:
                        await self._serve()
                    except Exception as exc:
                        self.failure = exc
                        log.error("actor %s (%s) crashed", self.path, self.address, exc_info=exc)
                    finally:
                        self.stop()
                        self._fail_queued()
                        with trio.CancelScope(shield=True):
                            await stop_children(self)
                            await self._cleanup()
                        nursery.cancel_scope.cancel()
        finally:
            self.accepting = False
            if self._current is not None:
                self._current.fail(_gone(self, "it was stopped while handling this request"))
                self._current = None
            self._fail_queued()
            node.cells.pop(self.id, None)
            if started:
                node.unregister_name(self.path, self.address)
            if self in self.parent.children:
                self.parent.children.remove(self)
            self.done.set()

    async def _cleanup(self) -> None:
        timeout = self.shutdown_timeout
        with trio.move_on_after(timeout) as scope:
            try:
                await self.actor.cleanup()
            except Exception as exc:
                log.error("cleanup of actor %s failed", self.path, exc_info=exc)
        if scope.cancelled_caught:
            log.error("cleanup of actor %s took longer than %s s", self.path, timeout)

    async def _serve(self) -> None:
        actor = self.actor
        cls = type(actor)
        receive = self._recv
        budget = _FAIRNESS_BUDGET
        while True:
            budget -= 1
            if budget <= 0:
                budget = _FAIRNESS_BUDGET
                await trio.lowlevel.checkpoint()
            try:
                message, reply = receive.receive_nowait()
            except trio.WouldBlock:
                budget = _FAIRNESS_BUDGET
                try:
                    message, reply = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            name = cls.handler_for(type(message))
            if name is None:
                error = TypeError(
                    f"{cls.__qualname__} has no handler for {type(message).__qualname__}"
                )
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", error, actor=self.path))
                else:
                    log.warning("actor %s dropped a message: %s", self.path, error)
                continue
            self._current = reply
            try:
                result = await getattr(actor, name)(message)
                if result is not None and not isinstance(result, Message):
                    raise TypeError(
                        f"handler {cls.__qualname__}.{name} returned {type(result).__name__},"
                        " not a Message or None"
                    )
            except Exception as exc:
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", exc, actor=self.path))
                self._current = None
                raise
            self._current = None
            if reply is not None:
                reply.send(result)

    def _fail_queued(self) -> None:
        dropped = 0
        while True:
            try:
                _, reply = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if reply is not None:
                reply.fail(_gone(self, "it stopped before handling this request"))
            else:
                dropped += 1
        if dropped:
            log.warning("actor %s stopped with %d messages unread", self.path, dropped)


def _gone(cell: Cell, why: str) -> Failure:
    return Failure(
        kind="gone", type_name="ActorGone",
        message=f"actor {cell.path} ({cell.address}): {why}", actor=cell.path,
    )


async def stop_children(parent: Parent) -> None:
    """Shut down ``parent``'s children, the last started first, each within its timeout."""
    while parent.children:
        child = parent.children[-1]
        await child.shutdown(child.shutdown_timeout)
        if parent.children and parent.children[-1] is child:
            parent.children.pop()


def _make_context(cell: Cell) -> ActorContext:
    from ._context import ActorContext

    return ActorContext(cell)


if TYPE_CHECKING:
    from ._context import ActorContext
