"""Asks waiting for their answers, and where each answer goes.

An ask to an actor in this process waits on a :class:`Pending` directly; an ask that leaves
this process gets a correlation id, and the REPLY or ERROR frame carrying that id back
resolves it. Every pending ask remembers the link it went out on, so that the link going
down fails it with :class:`ActorGone` instead of leaving it waiting.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

import trio

from protocol import Message

from .._base._control import Failure
from .._base._errors import ActorError, ActorGone, ActorNotFound, RemoteError
from ._link import Link

__all__ = ["Answered", "Pending", "PendingAsks", "Reply", "ReplyTransport", "to_exception"]

Answered = Callable[[Message | None, BaseException | None], None]


def to_exception(failure: Failure) -> ActorError:
    """The exception an asker gets for a :class:`Failure`."""
    if failure.kind in ("remote", "protocol"):
        # "protocol": the far side could not decode the request, or encode its answer
        # (an unknown message type, a reply over the frame limit): the actor lives on.
        return RemoteError(failure.type_name, failure.message, failure.traceback, failure.actor)
    if failure.kind == "not_found":
        return ActorNotFound(failure.message)
    gone = ActorGone(failure.message)
    gone.in_doubt = failure.in_doubt
    return gone


class Pending:
    """An ask waiting for its reply (a task in :meth:`wait`, or an ``answered`` call)."""

    # The asker parks itself and is rescheduled by the answer, without a trio.Event: one
    # per ask cost an object and its set, a KI-protected set() and a coroutine layer, for
    # the one task that ever waits on it.
    __slots__ = ("_task", "answered", "done", "error", "link", "value")

    def __init__(self, link: Link | None, answered: Answered | None = None) -> None:
        self.done = False
        self._task: trio.lowlevel.Task | None = None
        self.link = link
        self.value: Message | None = None
        self.error: BaseException | None = None
        self.answered = answered

    async def wait(self) -> None:
        """Wait for the answer (at once if it came); cancellable, as any wait."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake(self) -> None:
        self.done = True
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def resolve(self, value: Message | None) -> None:
        if not self.done:
            self.value = value
            self._wake()
            if self.answered is not None:
                self.answered(value, None)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.error = error
            self._wake()
            if self.answered is not None:
                self.answered(None, error)

    def result(self) -> Message | None:
        if self.error is not None:
            raise self.error
        return self.value


class ReplyTransport(Protocol):
    """What sends an answer back to an asker in another process (the outbox)."""

    def send_reply(
        self, target: str, corr: int, value: Message | None, via: Link | None = None,
        *, defer: bool = False,
    ) -> None: ...

    def send_failure(
        self, target: str, corr: int, failure: Failure, via: Link | None = None
    ) -> None: ...


class Reply:
    """Where the answer to one ask goes: a local waiter, or a frame back to another node
    (on ``via``, the link the ask came on)."""

    __slots__ = ("_corr", "_pending", "_target", "_transport", "_via")

    def __init__(
        self,
        transport: ReplyTransport,
        *,
        pending: Pending | None = None,
        target: str = "",
        corr: int = 0,
        via: Link | None = None,
    ) -> None:
        self._transport = transport
        self._pending = pending
        self._target = target
        self._corr = corr
        self._via = via

    def send(self, value: Message | None, *, defer: bool = False) -> None:
        """Answer with ``value``; with ``defer``, a frame waits for the channel's writer
        (more answers are about to follow it: they leave in one write)."""
        if self._pending is not None:
            self._pending.resolve(value)
        else:
            self._transport.send_reply(self._target, self._corr, value, self._via,
                                       defer=defer)

    def fail(self, failure: Failure) -> None:
        if self._pending is not None:
            self._pending.fail(to_exception(failure))
        else:
            self._transport.send_failure(self._target, self._corr, failure, self._via)


class PendingAsks:
    """The asks this process sent to other processes, by correlation id."""

    def __init__(self) -> None:
        self._pending: dict[int, Pending] = {}
        self._corrs = itertools.count(1)

    def open(self, link: Link, answered: Answered | None = None) -> tuple[int, Pending]:
        """A new pending ask going out on ``link``: its correlation id and its waiter."""
        corr = next(self._corrs)
        pending = self._pending[corr] = Pending(link, answered)
        return corr, pending

    def __len__(self) -> int:
        """Asks out now."""
        return len(self._pending)

    def get(self, corr: int) -> Pending | None:
        return self._pending.get(corr)

    def close(self, corr: int) -> None:
        """Forget an ask (answered, or abandoned by a cancelled asker)."""
        self._pending.pop(corr, None)

    def fail_link(self, link: Link, make_error: Callable[[], BaseException]) -> None:
        """Fail every ask that went out on ``link`` (it went down)."""
        for corr, pending in list(self._pending.items()):
            if pending.link is link:
                self._pending.pop(corr, None)
                pending.fail(make_error())
