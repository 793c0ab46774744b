"""The one walk of the tree, and what each child answers for it: in-process supervisors on
a virtual clock, a child between two instances standing as ``restarting``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorReady,
    ActorRef,
    ActorSystem,
    Backoff,
    RemoteError,
    handler,
    open_system,
    supervisor,
    worker,
)
from actors._base._tree import ChildBase, ChildKind, Lifecycle, Root, walk
from protocol import Message
from tests.events import next_event


class Crash(Message):
    pass


class Member(Actor):
    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")


def paths(system: ActorSystem) -> list[tuple[str | None, str, Lifecycle]]:
    return [(None if parent is None else parent.path, child.path, child.state)
            for parent, child in walk(system.running)]


async def test_the_walk_goes_depth_first_naming_each_childs_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", children=[
        worker(Member, name="a"),
        supervisor("sub", children=[worker(Member, name="b"), worker(Member, name="c")]),
        worker(Member, name="d"),
    ])
    running = Lifecycle.RUNNING
    async with open_system(tree, control=False, handle_signals=False) as system:
        await system.spawn(Member, name="e")
        assert paths(system) == [
            (None, "root", running),
            ("root", "root/a", running),
            ("root", "root/sub", running),
            ("root/sub", "root/sub/b", running),
            ("root/sub", "root/sub/c", running),
            ("root", "root/d", running),
            ("root", "root/e", running),  # spawn() under a tree adds to its root
        ]
        kinds = {child.path: child.kind for _, child in walk(system.running)}
        assert kinds == {"root": "supervisor", "root/a": "actor", "root/sub": "supervisor",
                         "root/sub/b": "actor", "root/sub/c": "actor", "root/d": "actor",
                         "root/e": "actor"}


async def test_a_child_between_two_instances_stands_as_restarting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=5.0, factor=1.0, cap=5.0, jitter=0.0)
    tree = supervisor("root", backoff=backoff, children=[
        worker(Member, name="a"), worker(Member, name="b"),
    ])
    async with open_system(tree, control=False, handle_signals=False) as system:
        events = system.events()
        with pytest.raises(RemoteError, match="asked to crash"):
            await system.ref("root/a").ask(Crash())
        await trio.sleep(1.0)  # within its backoff: its next instance is not started yet
        assert [(path, state) for _, path, state in paths(system)] == [
            ("root", Lifecycle.RUNNING),
            ("root/a", Lifecycle.RESTARTING),  # in its place, not last (nor gone)
            ("root/b", Lifecycle.RUNNING),
        ]
        rows = {row.path: row for row in await system.status()}
        assert (rows["root/a"].state, rows["root/a"].kind) == ("restarting", "actor")
        assert (rows["root/a"].pid, rows["root/a"].uptime) == (None, None)
        assert rows["root/a"].last_exit is not None
        assert rows["root/a"].last_exit.startswith("crashed")
        await next_event(events, ActorReady, "root/a")
        rows = {row.path: row for row in await system.status()}
        assert (rows["root/a"].state, rows["root/a"].restarts) == ("running", 1)
        assert rows["root/b"].restarts == 0


async def test_restart_replaces_a_supervised_child_through_its_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", children=[worker(Member, name="a")])
    async with open_system(tree, control=False, handle_signals=False) as system:
        [(_, before)] = [(p, c) for p, c in walk(system.running) if c.path == "root/a"]
        assert before.address is not None
        await system.restart("root/a")
        [(parent, after)] = [(p, c) for p, c in walk(system.running) if c.path == "root/a"]
        assert after is not before
        assert before.state is Lifecycle.EXITED
        assert parent is not None
        assert parent.replaces(after) == "on_request"  # (no reload=True: not on a reload)


async def test_a_reload_replaces_only_what_its_parent_reloads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", children=[
        worker(Member, name="fixed"), worker(Member, name="fresh", reload=True),
    ])
    async with open_system(tree, control=False, handle_signals=False,
                           start_method="spawn") as system:
        assert await system.reload() == ["root/fresh"]
        assert await system.reload("root/fresh/below") == ["root/fresh"]


class Bare(ChildBase):
    kind: ChildKind = "actor"

    @property
    def ref(self) -> ActorRef:
        raise AssertionError("not used")

    async def shutdown(self, grace: float) -> None:
        raise AssertionError("not used")


async def test_a_kind_with_nothing_to_say_answers_with_the_defaults() -> None:
    child = Bare("a", Root("", nursery=None), 1.0)  # type: ignore[arg-type]
    assert (child.address, child.pid, child.node, child.gave_up) == (None, None, None, None)
    assert (list(child.children), child.rolling, child.restarts) == ([], False, 0)
    assert child.replaces(child) is None
    assert not await child.replace_child(child)
    child.begin_shutdown()
    child.relieve()
    assert child.state is Lifecycle.STARTING
    assert list(walk([child])) == [(None, child)]
