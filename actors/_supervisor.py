"""``Supervisor``: runs a :class:`SupervisorSpec` (OTP supervisor semantics).

Children start in order, each once the previous one is ready. Every exit goes through
:func:`decide`; a restart that fails to start is an exit like any other and comes back
through the same loop (as ``supervisor.erl`` does), so a child that cannot start exhausts the
restart intensity instead of looping. Giving up stops every child, the last started first.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import trio

from ._cell import Child, Parent, crash_reason, stop_children
from ._errors import RestartLimitExceeded, SpawnError, leaves, unwrap_actor_errors
from ._events import (
    ActorExited,
    ActorReady,
    ActorRestarted,
    ActorStarted,
    ExitReason,
    SupervisorGaveUp,
)
from ._node import Node
from ._process import ProcessChild
from ._ref import ActorRef
from ._restart import RestartHistory, decide
from ._spawn import child_path, start_child
from ._spec import ChildSpec, SupervisorSpec, grace_of

__all__ = ["Supervisor"]

log = logging.getLogger("actors")


@dataclass
class _Ended:
    """Stands for an instance that is gone before the loop saw it: a failed start or a suicide."""

    exit_reason: ExitReason
    started_at: float
    draining: ProcessChild | None = None  # a suicided worker, released once replaced


@dataclass
class _Slot:
    spec: ChildSpec
    instance: Child | _Ended | None = None
    wanted: bool = False  # expected to run (restarts of it may be pending)


class Supervisor:
    """A running supervisor: a :class:`Parent` for its children, a :class:`Child` of its own."""

    def __init__(
        self, node: Node, spec: SupervisorSpec, *, parent: Parent, path: str
    ) -> None:
        self.node = node
        self.spec = spec
        self.parent = parent
        self.path = path
        self.shutdown_timeout = grace_of(spec.shutdown)
        self.children: list[Child] = []
        self.done = trio.Event()
        self.started_at = 0.0
        self.exit_reason: ExitReason | None = None
        self.gave_up: RestartLimitExceeded | None = None
        self.nursery: trio.Nursery
        self._slots: dict[str, _Slot] = {child.name: _Slot(child) for child in spec.children}
        self._history = RestartHistory()
        self._exits_send, self._exits_recv = trio.open_memory_channel[
            tuple[str, "Child | _Ended"]
        ](1024)
        self._scope = trio.CancelScope()
        self._random = random.Random()
        self._stopping = False
        self.restart_counts: dict[str, int] = {}

    @property
    def ref(self) -> ActorRef:
        """A ref by path; the supervisor itself takes no messages, its children do."""
        return ActorRef(self.node, path=self.path)

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

    def _address(self) -> str | None:
        """Where messages to this supervisor's path go (None: it takes none)."""
        return None

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        started = False
        error: BaseException | None = None
        self.node.publish(ActorStarted(path=self.path, pid=os.getpid()))
        try:
            with self._scope, unwrap_actor_errors():
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    try:
                        await self._prepare()
                        for name in list(self._slots):
                            await self._start_until_up(name)
                        started = True
                        self.node.publish(
                            ActorReady(path=self.path, address=self._address(), pid=os.getpid())
                        )
                        task_status.started(self)
                        await self._supervise()
                    except RestartLimitExceeded as exc:
                        self.gave_up = exc
                        self.node.publish(SupervisorGaveUp(
                            path=self.path, restarts=exc.restarts, within=exc.within,
                            reason=crash_reason(exc),
                        ))
                    finally:
                        self._stopping = True
                        with trio.CancelScope(shield=True):
                            await self._before_stop()
                            await stop_children(self)
                        nursery.cancel_scope.cancel()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish()
            for name in self._slots:
                self.node.release_name(child_path(self, name))
            if self in self.parent.children:
                self.parent.children.remove(self)
            if self.gave_up is not None:
                self.exit_reason = crash_reason(self.gave_up)
            elif error is not None and (
                failures := [e for e in leaves(error) if not isinstance(e, trio.Cancelled)]
            ):
                self.exit_reason = crash_reason(failures[0])
            else:
                self.exit_reason = ExitReason(kind="shutdown")
            self.node.publish(ActorExited(path=self.path, pid=os.getpid(),
                                          reason=self.exit_reason))
            self.done.set()
        if self.gave_up is not None and not started:
            raise self.gave_up  # the start failed: whoever started us hears why

    async def _start_until_up(self, name: str) -> None:
        """Initial start of one child: a failed start counts as a restart and is retried."""
        if await self._start(name):
            return
        while True:
            try:
                exited, instance = self._exits_recv.receive_nowait()
            except trio.WouldBlock:
                return  # no exit left to handle: the child is up (or given up on)
            await self._on_exit(exited, instance)

    async def _start(self, name: str) -> bool:
        slot = self._slots[name]
        slot.wanted = True
        self.node.hold_name(child_path(self, name))
        try:
            instance = await start_child(self, self.node, slot.spec, on_suicide=self._on_suicide)
        except SpawnError as exc:
            if exc.fatal:
                raise  # a configuration error: restarting cannot fix it
            reason = exc.reason or crash_reason(exc)
            ended = _Ended(reason, trio.current_time())
            slot.instance = ended
            self._exits_send.send_nowait((name, ended))
            return False
        slot.instance = instance
        self.nursery.start_soon(self._watch, name, instance)
        await self._child_up(name, instance)
        return True

    async def _prepare(self) -> None:
        """Hook: runs in the supervisor's nursery before the first child starts."""

    async def _before_stop(self) -> None:
        """Hook: runs before the children are stopped (a listener stops accepting)."""

    def _finish(self) -> None:
        """Hook: runs last, whatever happened (a listener closes its socket)."""

    async def _child_up(self, name: str, instance: Child) -> None:
        """Hook: ``instance`` of child ``name`` is ready (a listener starts routing to it)."""

    def _child_down(self, name: str, instance: Child) -> None:
        """Hook: ``instance`` of ``name`` takes no new work (exited, suicided, or replaced)."""

    async def _watch(self, name: str, instance: Child) -> None:
        await instance.done.wait()
        if not self._stopping:
            self._exits_send.send_nowait((name, instance))

    def _on_suicide(self, instance: ProcessChild) -> None:
        """A worker reported an unexpected exception: replace it now; it drains and exits."""
        for name, slot in self._slots.items():
            if slot.instance is instance:
                reason = instance._reason or ExitReason(kind="suicide")
                ended = _Ended(reason, instance.started_at, draining=instance)
                slot.instance = ended  # the old instance's own exit is no longer news
                self._child_down(name, instance)
                self._exits_send.send_nowait((name, ended))
                return

    async def _supervise(self) -> None:
        async for name, instance in self._exits_recv:
            await self._on_exit(name, instance)

    async def _on_exit(self, name: str, instance: Child | _Ended) -> None:
        slot = self._slots.get(name)
        if slot is None or slot.instance is not instance:
            return  # an instance already replaced, or stopped on purpose
        if not isinstance(instance, _Ended):
            self._child_down(name, instance)
        await self._handle_exit(name, instance)

    async def _handle_exit(self, name: str, instance: Child | _Ended) -> None:
        draining = instance.draining if isinstance(instance, _Ended) else None
        try:
            await self._decide_and_act(name, instance)
        finally:
            if draining is not None:
                draining.release()  # its replacement is ready (or none is coming)

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
            self.node.release_name(child_path(self, name))
            if slot.spec.restart == "temporary" and name not in self.spec_names:
                del self._slots[name]
            return
        for other in decision.stop:
            other_slot = self._slots[other]
            running_instance = other_slot.instance
            other_slot.instance = None
            if running_instance is not None and not isinstance(running_instance, _Ended):
                self._child_down(other, running_instance)
                await running_instance.shutdown(running_instance.shutdown_timeout)
        if decision.delay:
            await trio.sleep(decision.delay)
        for other in decision.restart:
            self.restart_counts[other] = self.restart_counts.get(other, 0) + 1
            self.node.publish(ActorRestarted(
                path=child_path(self, other), restarts=len(self._history.restarts),
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
        self.node.hold_name(child_path(self, spec.name))
        try:
            instance = await start_child(self, self.node, spec, on_suicide=self._on_suicide)
        except BaseException:
            del self._slots[spec.name]
            self.node.release_name(child_path(self, spec.name))
            raise
        slot.instance = instance
        self.nursery.start_soon(self._watch, spec.name, instance)
        await self._child_up(spec.name, instance)
        return instance

    async def shutdown(self, grace: float) -> None:
        """Stop the children (last started first, each within its own shutdown), then exit."""
        self._stopping = True
        with trio.move_on_after(grace):
            await self._before_stop()
            await stop_children(self)
        self._scope.cancel()
        await self.done.wait()

