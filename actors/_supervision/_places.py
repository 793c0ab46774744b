"""A supervisor's places: each child's spec and what holds its place (OTP's child records).

A place is held by the child's running instance; between two instances (from an exit seen,
or a successor asked for, until the next instance is ready) by a stand-in in state
RESTARTING, as OTP's pid field holds ``restarting``; or by nothing (not started yet, or let
go). Status shows a row per place, so a child being restarted never vanishes from it.

Whoever composes a supervisor with something else (a listener routes connections to the
acceptors it supervises) follows who holds the places through ``membership``: a
:class:`ChildUp` once an instance is ready, a :class:`ChildDown` once it takes no new work
(it exited, asked to be replaced, or is being stopped or replaced).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from .._base._children import ChildCount, ChildInfo
from .._base._errors import SpawnError
from .._base._events import ExitReason
from .._base._ref import ActorRef, Sender
from .._base._spec import ChildSpec, CommandSpec, SupervisorSpec, WorkerSpec, validate_name
from .._base._tree import Child, ChildBase, ChildKind, Lifecycle, Parent, Replacement

__all__ = ["ChildDown", "ChildUp", "Membership", "Place", "Places", "Restarting", "child_path"]


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


class Restarting(ChildBase):
    """Stands for a child between two instances: the old one is gone (its start failed, or
    its exit was seen) or going (``draining``: it asked for its successor, and is relieved
    once that one is up), the new one not ready yet.

    Its ``exit_reason`` and ``started_at`` are those of the instance it stands for (what the
    restart decision reads; no reason yet while that instance is being stopped). Nothing
    runs, so there is nothing to stop."""

    def __init__(
        self,
        path: str,
        parent: Parent,
        sender: Sender,
        kind: ChildKind,
        *,
        reason: ExitReason | None,
        started_at: float,
        restarts: int,
        draining: Child | None = None,
    ) -> None:
        super().__init__(path, parent, 0.0)
        self.kind = kind
        self.state = Lifecycle.RESTARTING
        self.exit_reason = reason
        self.started_at = started_at
        self.restarts = restarts
        self.draining = draining
        self._sender = sender

    @property
    def ref(self) -> ActorRef:
        return ActorRef(self._sender, path=self.path)

    async def shutdown(self, grace: float) -> None:
        return  # nothing runs


class Place:
    """One child's place: its spec, what holds the place, and how often it was restarted."""

    __slots__ = ("kind", "occupant", "restarts", "spec", "wanted")

    def __init__(self, spec: ChildSpec, *, wanted: bool = False) -> None:
        self.spec = spec
        self.occupant: Child | None = None  # the running instance, or its stand-in between two
        self.wanted = wanted  # expected to run (restarts of it may be pending)
        self.restarts = 0
        # What its stand-in shows: the kind of its last instance (a spec cannot tell a
        # listener from a plain supervisor).
        self.kind: ChildKind = (
            "supervisor" if isinstance(spec, SupervisorSpec)
            else "command" if isinstance(spec, CommandSpec)
            else "worker" if spec.process else "actor"
        )

    @property
    def instance(self) -> Child | None:
        """The running instance that holds the place (None: nobody, or a stand-in)."""
        occupant = self.occupant
        return None if occupant is None or isinstance(occupant, Restarting) else occupant

    def replacement(self) -> Replacement:
        spec = self.spec
        return "on_reload" if isinstance(spec, WorkerSpec) and spec.reload else "on_request"


class Places(dict[str, Place]):
    """The places of one supervisor (``owner``), by child name, in the order of its spec
    (children added at runtime last); ``membership`` hears who comes and goes."""

    def __init__(
        self,
        owner: Parent,
        sender: Sender,
        spec: SupervisorSpec,
        membership: trio.MemorySendChannel[Membership] | None,
    ) -> None:
        super().__init__((child.name, Place(child)) for child in spec.children)
        self._owner = owner
        self._sender = sender
        self._spec = spec
        self._membership = membership

    def spec(self) -> SupervisorSpec:
        """The owner's spec with the children added at runtime, for the restart decision."""
        children = tuple(place.spec for place in self.values())
        if children == self._spec.children:
            return self._spec
        spec = self._spec
        return SupervisorSpec(
            name=spec.name, strategy=spec.strategy, max_restarts=spec.max_restarts,
            within=spec.within, backoff=spec.backoff, children=children, restart=spec.restart,
            shutdown=spec.shutdown,
        )

    def instances(self) -> dict[str, Child]:
        """The running instance of each child, by name."""
        return {name: instance for name, place in self.items()
                if (instance := place.instance) is not None}

    def occupants(self) -> list[Child]:
        """What holds each place: instances, and stand-ins between two."""
        return [place.occupant for place in self.values() if place.occupant is not None]

    def stand_in(
        self, name: str, reason: ExitReason | None, started_at: float,
        draining: Child | None = None,
    ) -> Restarting:
        """A stand-in for ``name``'s instance, to hold its place until the next is ready."""
        place = self[name]
        return Restarting(
            child_path(self._owner.path, name), self._owner, self._sender, place.kind,
            reason=reason, started_at=started_at, restarts=place.restarts, draining=draining,
        )

    def take(self, name: str, instance: Child) -> None:
        """``instance`` holds ``name``'s place now (it is ready)."""
        place = self[name]
        instance.restarts = place.restarts
        place.occupant = instance
        place.kind = instance.kind
        if self._membership is not None:
            self._membership.send_nowait(ChildUp(name, instance))

    def going(self, name: str, instance: Child) -> None:
        """``instance`` of ``name`` takes no new work from now on."""
        if self._membership is not None:
            self._membership.send_nowait(ChildDown(name, instance))

    def all_going(self) -> None:
        for name, instance in self.instances().items():
            self.going(name, instance)

    def rows(self) -> list[ChildInfo]:
        """A row per place (``which_children``): what holds it, or ``terminated``."""
        rows = []
        for name, place in self.items():
            occupant = place.occupant
            rows.append(ChildInfo(
                name=name, path=child_path(self._owner.path, name),
                kind=place.kind if occupant is None else occupant.kind,
                pid=None if occupant is None else occupant.pid,
                state="terminated" if occupant is None else occupant.state.value,
                restarts=place.restarts,
            ))
        return rows

    def count(self) -> ChildCount:
        """``count_children``: the places, those that run, and of which kind."""
        active = [row for row in self.rows() if row.state not in ("terminated", "restarting")]
        supervisors = sum(row.kind in ("supervisor", "listener") for row in active)
        return ChildCount(specs=len(self), active=len(active), supervisors=supervisors,
                          workers=len(active) - supervisors)

    def close(self) -> None:
        """Nobody comes or goes any more (the owner ended)."""
        if self._membership is not None:
            self._membership.close()
