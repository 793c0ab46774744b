"""``Supervisor``: runs a :class:`SupervisorSpec` (OTP supervisor semantics).

Children start in order, each once the previous one is ready. Every exit goes through
:func:`decide`; a restart that fails to start is an exit like any other and comes back
through the same loop (as ``supervisor.erl`` does), so a child that cannot start exhausts the
restart intensity instead of looping. Giving up stops every child, the last started first.
What holds each child's place (its instance, or a stand-in while it restarts) is kept in
its :class:`Places`.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass

import trio

from .._base._children import ChildCount, ChildInfo
from .._base._errors import (
    ActorNotFound,
    ChildExists,
    ChildRunning,
    RestartLimitExceeded,
    SpawnError,
    leaves,
    unwrap_actor_errors,
)
from .._base._events import (
    ActorReady,
    ActorRestarted,
    ActorStarted,
    ExitReason,
    SupervisorGaveUp,
    crash_reason,
)
from .._base._ref import ActorRef
from .._base._spec import ChildSpec, PoolSpec, SupervisorSpec, grace_of
from .._base._tree import (
    Child,
    ChildBase,
    ChildKind,
    Lifecycle,
    Notice,
    Parent,
    Replacement,
    StartChild,
    stop_children,
)
from .._messaging._router import Router
from ._places import Membership, Place, Places, Restarting, child_path
from ._restart import RestartHistory, decide

__all__ = ["Supervisor"]

log = logging.getLogger("actors")


@dataclass(frozen=True)
class _Exited:
    """An instance is gone (its ``done`` is set), or its stand-in says it is."""

    name: str
    child: Child


class Supervisor(ChildBase):
    """A running supervisor: a :class:`Parent` for its children, a :class:`Child` of its own.

    Start it with ``await nursery.start(supervisor.run)`` (it returns once every child is
    up); ``start_child`` is how it starts each child. ``address``, if given, is where
    messages to its path go (a listener's router); a plain supervisor takes none.

    Its :attr:`children` are what holds its places, in the order of its spec: the running
    instances, and stand-ins (RESTARTING) between two; ``running`` (as a :class:`Parent`) is
    what it started and runs, in start order.
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
        self.running: list[Child] = []
        self.nursery: trio.Nursery
        self._start_child = start_child
        self._places = Places(self, router.outbox, spec, membership)
        self._history = RestartHistory()
        self._inbox, self._inbox_received = trio.open_memory_channel[_Exited | Notice](math.inf)
        self._scope = trio.CancelScope()
        self._random = random.Random()
        # Held while it acts on an exit (a restart, with its delay) and by each runtime
        # operation (start_child, terminate_child, ...): one at a time, as OTP's supervisor
        # handles one message at a time, so an operation never meets a half-done restart.
        self._acting = trio.Lock()

    @property
    def ref(self) -> ActorRef:
        """A ref by path; a plain supervisor takes no messages, its children do."""
        return ActorRef(self.router.outbox, path=self.path)

    def instances(self) -> dict[str, Child]:
        """The running instance of each child, by name."""
        return self._places.instances()

    @property
    def children(self) -> list[Child]:
        return self._places.occupants()

    def replaces(self, child: Child) -> Replacement | None:
        place = self._places.get(_name_of(child))
        return None if place is None else place.replacement()

    async def replace_child(self, child: Child) -> bool:
        name = _name_of(child)
        return name in self._places and await self.replace(name)

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        started = False
        error: BaseException | None = None
        self.router.publish(ActorStarted(path=self.path, pid=self.pid))
        if isinstance(self.spec, PoolSpec):
            # Sends to its path go to its members.
            self.router.names.declare_pool(self.path, self.spec.policy)
        try:
            with self._scope, unwrap_actor_errors():
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    try:
                        for name in list(self._places):
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
                            self._places.all_going()
                            await stop_children(self)
                        nursery.cancel_scope.cancel()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._inbox.close()
            for name in self._places:
                self.router.names.unsupervise(child_path(self.path, name))
            self.router.names.drop_pool(self.path)
            failures = [] if error is None else [
                e for e in leaves(error) if not isinstance(e, trio.Cancelled)
            ]
            self._places.close()
            # (no address: its router actor, if it has one, reports its own departure)
            self._finish(self.router, failure=self.gave_up or (failures[0] if failures else None))
        if self.gave_up is not None and not started:
            raise self.gave_up  # the start failed: whoever started us hears why

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
        place = self._places[name]
        place.wanted = True
        self.router.names.supervise(child_path(self.path, name))
        try:
            instance = await self._start_child(self, place.spec, notices=self._inbox)
        except SpawnError as exc:
            if exc.fatal:
                raise  # a configuration error: restarting cannot fix it
            reason = exc.reason or crash_reason(exc)
            ended = place.occupant = self._places.stand_in(name, reason, trio.current_time())
            self._inbox.send_nowait(_Exited(name, ended))
            return False
        self._take(name, instance)
        return True

    def _take(self, name: str, instance: Child) -> None:
        """``instance`` (ready) holds child ``name``'s place now; its exit will be news."""
        self._places.take(name, instance)
        self.nursery.start_soon(self._watch, name, instance)

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
        place = self._places.get(name)
        if place is None or place.occupant is not instance:
            return  # an instance already replaced, or stopped on purpose
        if not isinstance(instance, Restarting):
            self._places.going(name, instance)
        draining = instance.draining if isinstance(instance, Restarting) else None
        try:
            async with self._acting:
                if place.occupant is instance:  # (an operation may have ended it meanwhile)
                    await self._decide_and_act(name, instance)
        finally:
            if draining is not None:
                draining.relieve()  # its replacement is ready (or none is coming)

    def _on_notice(self, notice: Notice) -> None:
        """A child asked to be replaced now: it drains meanwhile, relieved once replaced."""
        for name, place in self._places.items():
            if place.occupant is notice.child:
                # The old instance's own exit is no longer news: its stand-in's is.
                ended = place.occupant = self._places.stand_in(
                    name, notice.reason, notice.child.started_at, draining=notice.child
                )
                self._places.going(name, notice.child)
                self._inbox.send_nowait(_Exited(name, ended))
                return
        notice.child.relieve()  # not ours (any more): nothing will replace it

    async def _decide_and_act(self, name: str, instance: Child) -> None:
        places = self._places
        place = places[name]
        reason = instance.exit_reason or ExitReason(kind="crashed", detail="unknown")
        if not isinstance(instance, Restarting):  # (until decided otherwise, it restarts)
            place.occupant = places.stand_in(name, reason, instance.started_at)
        now = trio.current_time()
        running = [n for n, p in places.items() if n != name and p.wanted]
        decision = decide(
            places.spec(), self._history, name, reason, now=now,
            uptime=max(0.0, now - instance.started_at), running=running,
            random=self._random.random,
        )
        if decision.give_up:
            raise RestartLimitExceeded(
                self.path, len(self._history.restarts), self.spec.within, reason.describe()
            ) from None
        if name not in decision.restart:
            place.occupant = None
            place.wanted = False
            self.router.names.unsupervise(child_path(self.path, name))
            if place.spec.restart == "temporary":
                del places[name]  # as OTP deletes a temporary child's spec: it may come again
            return
        for other in decision.stop:
            other_place = places[other]
            occupant, other_place.occupant = other_place.occupant, None
            if occupant is not None and other in decision.restart:
                other_place.occupant = places.stand_in(other, None, occupant.started_at)
            if occupant is not None and not isinstance(occupant, Restarting):
                places.going(other, occupant)
                await occupant.shutdown(occupant.shutdown_timeout)
        if decision.delay:
            await trio.sleep(decision.delay)
        for other in decision.restart:
            places[other].restarts += 1
            self.router.publish(ActorRestarted(
                path=child_path(self.path, other), restarts=len(self._history.restarts),
                delay=decision.delay, reason=reason,
            ))
            if not await self._start(other):
                return  # the failure comes back through the loop as an exit

    async def add_child(self, spec: ChildSpec) -> Child:
        """Start a child at runtime (``start_child``; ``system.spawn`` under a tree); a
        failed start raises and leaves no trace."""
        async with self._acting:
            self._check_running()
            if spec.name in self._places:
                raise ChildExists(
                    f"supervisor {self.path} already has a child named {spec.name!r}"
                )
            place = self._places[spec.name] = Place(spec)
            try:
                return await self._start_new(spec.name, place)
            except BaseException:
                del self._places[spec.name]
                raise

    async def terminate_child(self, name: str) -> None:
        """Stop child ``name`` in order (it drains) and do not restart it; its spec is
        kept for :meth:`restart_child` (a temporary child's is deleted, as in OTP)."""
        async with self._acting:
            place = self._place(name)
            occupant, place.occupant = place.occupant, None
            place.wanted = False
            self.router.names.unsupervise(child_path(self.path, name))
            if place.spec.restart == "temporary":
                del self._places[name]
            if isinstance(occupant, Restarting):
                if occupant.draining is not None:
                    occupant.draining.relieve()  # no successor is coming
            elif occupant is not None:
                self._places.going(name, occupant)
                await occupant.shutdown(occupant.shutdown_timeout)

    async def restart_child(self, name: str) -> Child:
        """Start terminated child ``name`` again from its kept spec; a failed start raises
        (:class:`SpawnError`) and leaves it terminated."""
        async with self._acting:
            self._check_running()
            place = self._place(name)
            if place.occupant is not None:
                raise ChildRunning(f"{child_path(self.path, name)} runs: terminate it first")
            return await self._start_new(name, place)

    async def _start_new(self, name: str, place: Place) -> Child:
        """Start an instance for a place nothing holds (an operation's); a failed start
        raises, and the place stays as it was: not wanted."""
        path = child_path(self.path, name)
        self.router.names.supervise(path)
        try:
            instance = await self._start_child(self, place.spec, notices=self._inbox)
        except BaseException:
            self.router.names.unsupervise(path)
            raise
        place.wanted = True
        self._take(name, instance)
        return instance

    async def delete_child(self, name: str) -> None:
        """Forget terminated child ``name``'s spec."""
        async with self._acting:
            if self._place(name).occupant is not None:
                raise ChildRunning(
                    f"{child_path(self.path, name)} runs: terminate it before deleting it"
                )
            del self._places[name]

    def which_children(self) -> list[ChildInfo]:
        """A row per child spec, in the order of the spec (children added later last)."""
        return self._places.rows()

    def count_children(self) -> ChildCount:
        return self._places.count()

    def _place(self, name: str) -> Place:
        place = self._places.get(name)
        if place is None:
            raise ActorNotFound(f"supervisor {self.path} has no child named {name!r}")
        return place

    def _check_running(self) -> None:
        if self._reached(Lifecycle.STOPPING):
            raise ActorNotFound(f"supervisor {self.path} is stopping")

    def child_names(self) -> list[str]:
        return list(self._places)

    async def replace(self, name: str) -> bool:
        """Replace the running instance of ``name``: start a new one, and once it is ready,
        stop the old one (which drains). False if the new one did not start (the old one
        keeps running)."""
        place = self._places[name]
        old = place.instance
        if old is None:
            return False
        # The new instance takes the name; meanwhile senders by path wait for it (held).
        path = child_path(self.path, name)
        address = old.address
        if address is not None:
            self.router.names.unregister(path, address)
        try:
            new = await self._start_child(self, place.spec, notices=self._inbox)
        except SpawnError as exc:
            log.error("replacing %s: the new instance did not start: %s", path, exc)
            if address is not None and place.occupant is old and not old.done.is_set():
                self.router.names.register(path, address)  # the old one goes on serving
            return False
        if place.occupant is not old:  # the old one went meanwhile: the new one takes over
            await self._settle(name, place, new)
            return True
        self._take(name, new)
        self._places.going(name, old)
        await old.shutdown(old.shutdown_timeout)
        return True

    async def _settle(self, name: str, place: Place, new: Child) -> None:
        # A restart started its own instance while ours was starting: keep one.
        if place.instance is None:
            self._take(name, new)
        else:
            await new.shutdown(new.shutdown_timeout)

    async def shutdown(self, grace: float) -> None:
        """Stop the children (last started first, each within its own shutdown), then exit."""
        self._stopping("asked")
        with trio.move_on_after(grace):
            self._places.all_going()
            await stop_children(self)
        self._scope.cancel()
        await self.done.wait()


def _name_of(child: Child) -> str:
    """The name of ``child``'s place under its parent (the last part of its path)."""
    return child.path.rpartition("/")[2]
