"""``ActorMailbox``: an actor's mailbox in this process, and the loop that serves it.

The router delivers to it (it is what the router's ``Mailbox`` protocol describes); its
cell opens it once the actor is ready, closes it when the actor stops, and runs
:meth:`ActorMailbox.serve` in between: one message at a time, each to its handler, the
answer to whoever asked. The message path runs through :meth:`deliver` and :meth:`serve`
only: nothing else is done per message.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol

import trio

from protocol import Message

from .._base._actor import Actor, no_handler
from .._base._control import Failure, Probe, Probed
from .._base._errors import ActorGone
from .._messaging._asks import Reply
from .._messaging._mailboxes import current_actor
from .._messaging._router import Router

__all__ = ["ASK_BUCKETS", "ActorMailbox", "MailboxOwner"]

log = logging.getLogger("actors")

_FAIRNESS_BUDGET = 64  # messages handled back to back before the loop lets other tasks run

ASK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the ask-handling histogram every actor keeps."""


class MailboxOwner(Protocol):
    """What a mailbox needs of the cell it belongs to."""

    @property
    def failure(self) -> BaseException | None:
        """What crashed the actor, if something did."""
        ...

    @property
    def address(self) -> str | None:
        """The actor's address once it is ready (None before)."""
        ...

    def fail(self, exc: BaseException) -> None:
        """Crash the actor (an inline handler raised)."""
        ...


_Item = tuple[Message, "Reply | None"]


class _Queue:
    """A mailbox's bounded queue: a deque, made when a message waits in it, and the one
    task that reads it parked (no trio memory channel: its state, endpoints, their sets and
    its two ``OrderedDict`` cost ~2 KB per actor, most of an idle actor's weight).

    Senders that find it full wait in line (``deliver``); the reader admits the first of them
    each time it takes a message, as trio's channel does, so that a full queue stays full
    while anyone waits. Closed, it gives what it holds and then ``None``.
    """

    __slots__ = ("_closed", "_items", "_reader", "_senders", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[_Item] | None = None
        # The parked reader, and the parked senders ([task, item]; the task is cleared when
        # its item is admitted): each at most one scheduling step from its wake-up.
        self._reader: trio.lowlevel.Task | None = None
        self._senders: deque[list[object]] | None = None
        self._closed = False

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def _put_nowait(self, item: _Item) -> None:
        """Queue ``item``; trio.WouldBlock if the queue is full and no reader waits."""
        items = self._items
        if self._reader is None:
            if (0 if items is None else len(items)) >= self._size:
                raise trio.WouldBlock
        else:  # (it waits: the queue is empty, whatever its size)
            trio.lowlevel.reschedule(self._reader)
            self._reader = None
        if items is None:
            items = self._items = deque()
        items.append(item)

    async def _put(self, item: _Item) -> bool:
        """Wait in line until ``item`` is queued (True) or the queue closes (False)."""
        if self._senders is None:
            self._senders = deque()
        senders = self._senders
        entry: list[object] = [trio.lowlevel.current_task(), item]
        senders.append(entry)

        def abort(_: object) -> trio.lowlevel.Abort:
            senders.remove(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return entry[0] is None

    def _take(self) -> _Item | None:
        """The next message, if one waits (a waiting sender's, when the size is 0)."""
        items = self._items
        senders = self._senders
        if items:
            item = items.popleft()
            if senders:
                self._admit(senders, items)
            return item
        if senders:  # (only a queue of size 0 has senders waiting while it is empty)
            entry = senders.popleft()
            task = entry[0]
            assert isinstance(task, trio.lowlevel.Task)
            entry[0] = None
            trio.lowlevel.reschedule(task)
            return entry[1]  # type: ignore[return-value]
        # Empty: the deque goes (an empty one still holds a block of ~600 bytes), so that
        # an idle actor that was asked weighs no more than one never asked.
        self._items = None
        return None

    def _admit(self, senders: deque[list[object]], items: deque[_Item]) -> None:
        while senders and len(items) < self._size:
            entry = senders.popleft()
            task = entry[0]
            assert isinstance(task, trio.lowlevel.Task)
            entry[0] = None
            items.append(entry[1])  # type: ignore[arg-type]
            trio.lowlevel.reschedule(task)

    def _abort_read(self, _: object) -> trio.lowlevel.Abort:
        self._reader = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _close(self) -> None:
        """Take no more: the parked reader wakes (to what is left), waiting senders too
        (refused)."""
        self._closed = True
        if self._reader is not None:
            trio.lowlevel.reschedule(self._reader)
            self._reader = None
        senders, self._senders = self._senders, None
        while senders:
            task = senders.popleft()[0]
            assert isinstance(task, trio.lowlevel.Task)
            trio.lowlevel.reschedule(task)


class ActorMailbox(_Queue):
    """The mailbox of one actor: a bounded queue (a full one makes ``tell`` wait), the
    loop that serves it, and the figures of what it handled (for status and metrics).

    ``accepting``: open, taking messages (the router reads it for every message)."""

    __slots__ = ("_busy", "_current", "_killed", "_owner", "accepting", "actor", "address",
                 "ask_buckets", "ask_seconds", "asks", "handled", "id", "path", "router")

    def __init__(self, router: Router, actor: Actor, *, path: str, owner: MailboxOwner
                 ) -> None:
        super().__init__(max(0, actor.mailbox_size))
        self.router = router
        self.actor = actor
        self.path = path
        self.id = router.next_actor_id()
        self.address = f"{router.id}/{self.id}"
        self.accepting = False
        self._owner = owner
        self._current: Reply | None = None
        # Messages handled, asks among them, and how long the handlers of asks took (a
        # histogram over ASK_BUCKETS, made by the first ask: most actors are never asked).
        self.handled = 0
        self.asks = 0
        self.ask_seconds = 0.0
        self.ask_buckets: list[int] | None = None
        self._busy: trio.CancelScope | None = None  # while it serves (not while it waits)
        self._killed = False

    def open(self) -> None:
        """Take messages (the actor is ready)."""
        self.accepting = True

    def close(self) -> None:
        """Take no more: what is queued is still served, then :meth:`serve` returns."""
        self.accepting = False
        self._close()

    # -- the router's side ------------------------------------------------------------------

    def inline_handler(self, message: Message) -> Callable[[Message], Message | None] | None:
        """The runtime's synchronous handler for ``message`` on this actor, if it has one."""
        if type(message) is Probe:
            return self._probe
        name = type(self.actor)._inline_handlers.get(type(message))
        if name is None or not self.accepting:
            return None
        handle: Callable[[Message], Message | None] = getattr(self.actor, name)
        return handle

    def _probe(self, message: Message) -> Probed:
        buckets = self.ask_buckets or [0] * (len(ASK_BUCKETS) + 1)
        return Probed(
            pid=os.getpid(), mailbox=len(self),
            handled=self.handled, asks=self.asks, ask_seconds=round(self.ask_seconds, 6),
            ask_buckets=list(buckets),
        )

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox, waiting while it is full."""
        if not self.accepting:
            raise self._not_running()
        try:
            self._put_nowait((message, reply))
        except trio.WouldBlock:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not await self._put((message, reply)):
                raise self._not_running() from None

    def deliver_nowait(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox now; trio.WouldBlock if it is full."""
        if not self.accepting:
            raise self._not_running()
        self._put_nowait((message, reply))

    def fail(self, exc: BaseException) -> None:
        """Crash the actor (an inline handler raised)."""
        self._owner.fail(exc)

    def _not_running(self) -> ActorGone:
        why = "it is not running"
        failure = self._owner.failure
        if failure is not None:
            why = f"it crashed ({type(failure).__name__}: {failure})"
        elif self._owner.address is not None:
            why = "it stopped"
        return ActorGone(f"actor {self.path} ({self.address}): {why}")

    # -- the actor's side -------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve the messages one at a time until the mailbox is closed and empty, or a
        handler meets an actor gone because the system is stopping (the cell then stops),
        or the actor is killed (:meth:`kill`). A handler's exception is raised (the actor
        crashed): its ask got it first."""
        # Set once for the loop (what a handler starts inherits it either way): an ask from
        # the actor's own handler to itself is refused, not left waiting forever.
        token = current_actor.set(self.address)
        try:
            while True:
                # A cancel scope while it works, none while it waits: what kills the actor
                # cancels its handler, and an idle actor holds no scope (~600 B with its
                # status and their sets).
                with trio.CancelScope() as busy:
                    self._busy = busy
                    if self._killed:
                        busy.cancel()
                    gone = await self._serve_messages()
                self._busy = None
                del busy  # (nor the scope itself, while it waits)
                if gone or self._killed or self._closed:
                    return
                self._reader = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_read)
        finally:
            current_actor.reset(token)

    def kill(self) -> None:
        """Stop at once: the handler running (if any) is cancelled, nothing more is served."""
        self._killed = True
        if self._busy is not None:
            self._busy.cancel()
        self.close()

    async def _serve_messages(self) -> bool:
        """Serve what waits, one at a time; True if the loop must end (the system is
        stopping), False once nothing waits."""
        actor = self.actor
        cls = type(actor)
        budget = _FAIRNESS_BUDGET
        # The answer of the last ask handled, sent once the loop knows whether another
        # message waits: then it is deferred, and the answers of a run of asks leave in one
        # write; else it is written at once. It is always sent before anything is awaited
        # (nothing can cancel the loop while it holds one) and before the next handler runs.
        answer: Reply | None = None
        result: Message | None = None
        while not self._killed:
            budget -= 1
            if budget <= 0:
                budget = _FAIRNESS_BUDGET
                if answer is not None:
                    answer.send(result, defer=True)
                    answer = None
                await trio.lowlevel.checkpoint()
            item = self._take()
            if item is None:
                break
            if answer is not None:
                answer.send(result, defer=True)
                answer = None
            message, reply = item
            name = cls.handler_for(type(message))
            if name is None:
                error = no_handler(cls, type(message))
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", error, actor=self.path))
                else:
                    log.warning("actor %s dropped a message: %s", self.path, error)
                continue
            self._current = reply
            began = 0.0 if reply is None else trio.current_time()
            try:
                result = await getattr(actor, name)(message)
                if result is not None and not isinstance(result, Message):
                    raise TypeError(
                        f"handler {cls.__qualname__}.{name} returned {type(result).__name__},"
                        " not a Message or None"
                    )
            except ActorGone as exc:
                if not self.router.stopping:
                    self._handler_failed(reply, exc)
                    raise
                # Another actor stopped first in a shutdown: part of it, not a crash.
                log.info("actor %s: %s (the system is shutting down)", self.path, exc)
                if reply is not None:
                    reply.fail(self.gone("the system is shutting down", in_doubt=True))
                self._current = None
                return True
            except Exception as exc:
                self._handler_failed(reply, exc)
                raise
            finally:
                self.handled += 1
                if reply is not None:
                    self._count_ask(began)
            self._current = None
            answer = reply
        if answer is not None:
            answer.send(result)
        return False

    def _count_ask(self, began: float) -> None:
        took = trio.current_time() - began
        self.asks += 1
        self.ask_seconds += took
        if self.ask_buckets is None:
            self.ask_buckets = [0] * (len(ASK_BUCKETS) + 1)
        self.ask_buckets[bisect.bisect_left(ASK_BUCKETS, took)] += 1

    def _handler_failed(self, reply: Reply | None, exc: BaseException) -> None:
        if reply is not None:
            reply.fail(Failure.from_exception("remote", exc, actor=self.path))
        self._current = None

    def fail_queued(self) -> None:
        """Refuse what is queued: each ask hears the actor stopped before handling it."""
        dropped = 0
        while (item := self._take()) is not None:
            reply = item[1]
            if reply is not None:
                reply.fail(self.gone("it stopped before handling this request"))
            else:
                dropped += 1
        if dropped:
            log.warning("actor %s stopped with %d messages unread", self.path, dropped)

    def abandon(self) -> None:
        """The actor is gone: the ask it was handling (if any) and what is queued fail."""
        self.close()
        if self._current is not None:
            self._current.fail(
                self.gone("it was stopped while handling this request", in_doubt=True)
            )
            self._current = None
        self.fail_queued()

    def gone(self, why: str, *, in_doubt: bool = False) -> Failure:
        """The failure an ask to this actor gets: it is gone, and ``why``."""
        return Failure(
            kind="gone", type_name="ActorGone",
            message=f"actor {self.path} ({self.address}): {why}", actor=self.path,
            in_doubt=in_doubt,
        )
