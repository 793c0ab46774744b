"""``Supervisor``: runs a :class:`SupervisorSpec` (OTP supervisor semantics).

Children start in order, each once the previous one is ready. Every exit goes through
:func:`decide`; a restart that fails to start is an exit like any other and comes back
through the same loop (as ``supervisor.erl`` does), so a child that cannot start exhausts the
restart intensity instead of looping. Giving up stops every child, the last started first.

Whoever composes a supervisor with something else (a listener routes connections to the
acceptors it supervises) follows its children through ``membership``: a :class:`ChildUp`
once a child is ready, a :class:`ChildDown` once it takes no new work (it exited, asked to
be replaced, or is being stopped or replaced).
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass

import trio

from .._base._errors import RestartLimitExceeded, SpawnError, leaves, unwrap_actor_errors
from .._base._events import (
    ActorReady,
    ActorRestarted,
    ActorStarted,
    ExitReason,
    SupervisorGaveUp,
    crash_reason,
)
from .._base._ref import ActorRef
from .._base._spec import ChildSpec, SupervisorSpec, grace_of, validate_name
from .._base._tree import (
    Child,
    ChildBase,
    ChildKind,
    Lifecycle,
    Notice,
    Parent,
    StartChild,
    stop_children,
)
from .._messaging._router import Router
from ._restart import RestartHistory, decide

__all__ = ["ChildDown", "ChildUp", "Membership", "Supervisor", "child_path"]

log = logging.getLogger("actors")


def child_path(parent_path: str, name: str) -> str:
    """The path of child ``name`` of the actor at ``parent_path`` ("" is the system)."""
    try:
        validate_name(name)
    except ValueError as exc:
        raise SpawnError(f"invalid actor name: {exc}") from None
    return f"{parent_path}/{name}" if parent_path else name


@dataclass(frozen=True)
class ChildUp:
    """Child ``name`` is ready (a new instance: a start, a restart or a replacement)."""

    name: str
    child: Child


@dataclass(frozen=True)
class ChildDown:
    """Instance ``child`` of ``name`` takes no new work: it exited, or is going."""

    name: str
    child: Child


Membership = ChildUp | ChildDown


@dataclass
class _Ended:
    """Stands for an instance that is gone before the loop saw it: a failed start or a suicide."""

    exit_reason: ExitReason
    started_at: float
    draining: Child | None = None  # a worker that asked to be replaced, released once replaced


@dataclass(frozen=True)
class _Exited:
    """An instance is gone (its ``done`` is set), or stands for one that is (``_Ended``)."""

    name: str
    child: Child | _Ended


@dataclass
class _Slot:
    spec: ChildSpec
    instance: Child | _Ended | None = None
    wanted: bool = False  # expected to run (restarts of it may be pending)


class Supervisor(ChildBase):
    """A running supervisor: a :class:`Parent` for its children, a :class:`Child` of its own.

    Start it with ``await nursery.start(supervisor.run)`` (it returns once every child is
    up); ``start_child`` is how it starts each child. ``address``, if given, is where
    messages to its path go (a listener's router); a plain supervisor takes none.
    """

    kind: ChildKind = "supervisor"

    def __init__(
        self,
        router: Router,
        spec: SupervisorSpec,
        *,
        parent: Parent,
        path: str,
        start_child: StartChild,
        membership: trio.MemorySendChannel[Membership] | None = None,
        address: str | None = None,
    ) -> None:
        super().__init__(path, parent, grace_of(spec.shutdown))
        self.router = router
        self.spec = spec
        self.address = address
        self.pid = os.getpid()
        self.children: list[Child] = []
        self.nursery: trio.Nursery
        self.restart_counts: dict[str, int] = {}
        self._start_child = start_child
        self._membership = membership
        self._slots: dict[str, _Slot] = {child.name: _Slot(child) for child in spec.children}
        self._history = RestartHistory()
        self._inbox, self._inbox_received = trio.open_memory_channel[_Exited | Notice](math.inf)
        self._scope = trio.CancelScope()
        self._random = random.Random()

    @property
    def ref(self) -> ActorRef:
        """A ref by path; a plain supervisor takes no messages, its children do."""
        return ActorRef(self.router, path=self.path)

    def _as_spec(self) -> SupervisorSpec:
        """The spec with the children added at runtime, for the restart decision."""
        children = tuple(slot.spec for slot in self._slots.values())
        if children == self.spec.children:
            return self.spec
        return SupervisorSpec(
            name=self.spec.name, strategy=self.spec.strategy,
            max_restarts=self.spec.max_restarts, within=self.spec.within,
            backoff=self.spec.backoff, children=children, restart=self.spec.restart,
            shutdown=self.spec.shutdown,
        )

    def instances(self) -> dict[str, Child]:
        """The running instance of each child, by name."""
        return {
            name: slot.instance for name, slot in self._slots.items()
            if slot.instance is not None and not isinstance(slot.instance, _Ended)
        }

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        started = False
        error: BaseException | None = None
        self.router.publish(ActorStarted(path=self.path, pid=self.pid))
        try:
            with self._scope, unwrap_actor_errors():
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    try:
                        for name in list(self._slots):
                            await self._start_until_up(name)
                        started = True
                        self._move(Lifecycle.RUNNING)
                        self.router.publish(
                            ActorReady(path=self.path, address=self.address, pid=self.pid)
                        )
                        task_status.started(self)
                        await self._supervise()
                    except RestartLimitExceeded as exc:
                        self.gave_up = exc
                        self.router.publish(SupervisorGaveUp(
                            path=self.path, restarts=exc.restarts, within=exc.within,
                            reason=crash_reason(exc),
                        ))
                    finally:
                        self._stopping(None)
                        with trio.CancelScope(shield=True):
                            self._all_down()
                            await stop_children(self)
                        nursery.cancel_scope.cancel()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._inbox.close()
            for name in self._slots:
                self.router.names.release(child_path(self.path, name))
            failures = [] if error is None else [
                e for e in leaves(error) if not isinstance(e, trio.Cancelled)
            ]
            if self._membership is not None:
                self._membership.close()
            # (no address: its router actor, if it has one, reports its own departure)
            self._finish(self.router, failure=self.gave_up or (failures[0] if failures else None))
        if self.gave_up is not None and not started:
            raise self.gave_up  # the start failed: whoever started us hears why

    def _up(self, name: str, instance: Child) -> None:
        if self._membership is not None:
            self._membership.send_nowait(ChildUp(name, instance))

    def _down(self, name: str, instance: Child) -> None:
        if self._membership is not None:
            self._membership.send_nowait(ChildDown(name, instance))

    def _all_down(self) -> None:
        for name, instance in self.instances().items():
            self._down(name, instance)

    async def _start_until_up(self, name: str) -> None:
        """Initial start of one child: a failed start counts as a restart and is retried."""
        if await self._start(name):
            return
        while True:
            try:
                item = self._inbox_received.receive_nowait()
            except trio.WouldBlock:
                return  # no exit left to handle: the child is up (or given up on)
            await self._handle(item)

    async def _start(self, name: str) -> bool:
        slot = self._slots[name]
        slot.wanted = True
        self.router.names.hold(child_path(self.path, name))
        try:
            instance = await self._start_child(self, slot.spec, notices=self._inbox)
        except SpawnError as exc:
            if exc.fatal:
                raise  # a configuration error: restarting cannot fix it
            reason = exc.reason or crash_reason(exc)
            ended = _Ended(reason, trio.current_time())
            slot.instance = ended
            self._exited(name, ended)
            return False
        slot.instance = instance
        self.nursery.start_soon(self._watch, name, instance)
        self._up(name, instance)
        return True

    def _exited(self, name: str, ended: _Ended) -> None:
        self._inbox.send_nowait(_Exited(name, ended))

    async def _watch(self, name: str, instance: Child) -> None:
        await instance.done.wait()
        if not self._reached(Lifecycle.STOPPING):  # (what it stops itself is no news)
            self._inbox.send_nowait(_Exited(name, instance))

    async def _supervise(self) -> None:
        async for item in self._inbox_received:
            await self._handle(item)

    async def _handle(self, item: _Exited | Notice) -> None:
        if isinstance(item, Notice):
            self._on_notice(item)
            return
        name, instance = item.name, item.child
        slot = self._slots.get(name)
        if slot is None or slot.instance is not instance:
            return  # an instance already replaced, or stopped on purpose
        if not isinstance(instance, _Ended):
            self._down(name, instance)
        draining = instance.draining if isinstance(instance, _Ended) else None
        try:
            await self._decide_and_act(name, instance)
        finally:
            if draining is not None:
                draining.relieve()  # its replacement is ready (or none is coming)

    def _on_notice(self, notice: Notice) -> None:
        """A child asked to be replaced now: it drains meanwhile, released once replaced."""
        for name, slot in self._slots.items():
            if slot.instance is notice.child:
                ended = _Ended(notice.reason, notice.child.started_at, draining=notice.child)
                slot.instance = ended  # the old instance's own exit is no longer news
                self._down(name, notice.child)
                self._exited(name, ended)
                return
        notice.child.relieve()  # not ours (any more): nothing will replace it

    async def _decide_and_act(self, name: str, instance: Child | _Ended) -> None:
        slot = self._slots[name]
        reason = instance.exit_reason or ExitReason(kind="crashed", detail="unknown")
        slot.instance = None
        now = trio.current_time()
        running = [n for n, s in self._slots.items() if n != name and s.wanted]
        decision = decide(
            self._as_spec(), self._history, name, reason, now=now,
            uptime=max(0.0, now - instance.started_at), running=running,
            random=self._random.random,
        )
        if decision.give_up:
            raise RestartLimitExceeded(
                self.path, len(self._history.restarts), self.spec.within, reason.describe()
            ) from None
        if name not in decision.restart:
            slot.wanted = False
            self.router.names.release(child_path(self.path, name))
            if slot.spec.restart == "temporary":
                del self._slots[name]  # as OTP deletes a temporary child's spec: it may come again
            return
        for other in decision.stop:
            other_slot = self._slots[other]
            running_instance = other_slot.instance
            other_slot.instance = None
            if running_instance is not None and not isinstance(running_instance, _Ended):
                self._down(other, running_instance)
                await running_instance.shutdown(running_instance.shutdown_timeout)
        if decision.delay:
            await trio.sleep(decision.delay)
        for other in decision.restart:
            self.restart_counts[other] = self.restart_counts.get(other, 0) + 1
            self.router.publish(ActorRestarted(
                path=child_path(self.path, other), restarts=len(self._history.restarts),
                delay=decision.delay, reason=reason,
            ))
            if not await self._start(other):
                return  # the failure comes back through the loop as an exit

    @property
    def spec_names(self) -> set[str]:
        return {child.name for child in self.spec.children}

    async def add_child(self, spec: ChildSpec) -> Child:
        """Start a child at runtime (``system.spawn`` under a tree); failures raise."""
        if spec.name in self._slots:
            raise SpawnError(f"supervisor {self.path} already has a child named {spec.name!r}")
        slot = self._slots[spec.name] = _Slot(spec, wanted=True)
        self.router.names.hold(child_path(self.path, spec.name))
        try:
            instance = await self._start_child(self, spec, notices=self._inbox)
        except BaseException:
            del self._slots[spec.name]
            self.router.names.release(child_path(self.path, spec.name))
            raise
        slot.instance = instance
        self.nursery.start_soon(self._watch, spec.name, instance)
        self._up(spec.name, instance)
        return instance

    def child_names(self) -> list[str]:
        return list(self._slots)

    def spec_of(self, name: str) -> ChildSpec:
        return self._slots[name].spec

    async def remove_child(self, name: str) -> None:
        """Stop child ``name`` for good (it drains) and forget it."""
        slot = self._slots.pop(name, None)
        if slot is None:
            raise SpawnError(f"supervisor {self.path} has no child named {name!r}")
        slot.wanted = False
        self.router.names.release(child_path(self.path, name))
        instance = slot.instance
        if instance is not None and not isinstance(instance, _Ended):
            self._down(name, instance)
            await instance.shutdown(instance.shutdown_timeout)

    async def replace(self, name: str) -> bool:
        """Replace the running instance of ``name``: start a new one, and once it is ready,
        stop the old one (which drains). False if the new one did not start (the old one
        keeps running)."""
        slot = self._slots[name]
        old = slot.instance
        if old is None or isinstance(old, _Ended):
            return False
        # The new instance takes the name; meanwhile senders by path wait for it (held).
        path = child_path(self.path, name)
        address = old.address
        if address is not None:
            self.router.names.unregister(path, address)
        try:
            new = await self._start_child(self, slot.spec, notices=self._inbox)
        except SpawnError as exc:
            log.error("replacing %s: the new instance did not start: %s", path, exc)
            if address is not None and slot.instance is old and not old.done.is_set():
                self.router.names.register(path, address)  # the old one goes on serving
            return False
        if slot.instance is not old:  # the old one went meanwhile: the new one takes over
            await self._settle(name, slot, new)
            return True
        slot.instance = new
        self.nursery.start_soon(self._watch, name, new)
        self._up(name, new)
        self._down(name, old)
        await old.shutdown(old.shutdown_timeout)
        return True

    async def _settle(self, name: str, slot: _Slot, new: Child) -> None:
        # A restart started its own instance while ours was starting: keep one.
        if slot.instance is None or isinstance(slot.instance, _Ended):
            slot.instance = new
            self.nursery.start_soon(self._watch, name, new)
            self._up(name, new)
        else:
            await new.shutdown(new.shutdown_timeout)

    async def shutdown(self, grace: float) -> None:
        """Stop the children (last started first, each within its own shutdown), then exit."""
        self._stopping("asked")
        with trio.move_on_after(grace):
            self._all_down()
            await stop_children(self)
        self._scope.cancel()
        await self.done.wait()
