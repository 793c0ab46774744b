"""A worker handle's handshake on its own, over routers of three "processes" in one process:
the master ("0"), a worker ("0.1") whose handle starts a worker of its own ("0.1.1"), and
that one, played by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from actors import Actor, SpawnError
from actors._base._control import Hello, Ready, Start
from actors._base._tree import Root
from actors._messaging._link import Link
from actors._messaging._names import NameRegistry
from actors._messaging._router import Router
from actors._running._process import ProcessHandle
from actors._running._processes import SpawnedProcess
from actors._running._spawning import handshake
from protocol import PROTOCOL_VERSION
from tests.links import link_pair


class Counting(NameRegistry):
    """The master's registry, counting the registrations made in it."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[tuple[str, str]] = []

    def register(self, path: str, address: str, *, replace: bool = False) -> None:
        self.registered.append((path, address))
        super().register(path, address, replace=replace)


class Idle(Actor):
    pass


class NoSpawner:
    async def start(self, fd: int, output: tuple[int, int] | None = None) -> SpawnedProcess:
        raise AssertionError("the test plays the worker")


@dataclass
class Tree:
    master: Counting
    middle: Router
    leaf: Router
    handle: ProcessHandle
    down: Link  # the middle worker's link to the leaf, which the handle reads
    up: Link  # the leaf's link to the middle worker


@asynccontextmanager
async def tree(nursery: trio.Nursery) -> AsyncIterator[Tree]:
    master = Counting()
    top = Router("0", nursery, names=master)
    middle = Router("0.1", nursery, names=NameRegistry())
    leaf = Router("0.1.1", nursery, names=NameRegistry())
    handle = ProcessHandle(
        middle, Idle, path="w/c", arguments="{}", parent=Root("w", nursery),
        spawner=NoSpawner(), shutdown_timeout=1.0, start_timeout=1.0,
    )
    assert handle.node == "0.1.1"
    async with link_pair("0", "0.1", subtree="w") as (down1, up1), \
            link_pair("0.1", "0.1.1", subtree="w/c") as (down2, up2):
        top.add_child(down1)
        middle.attach_parent(up1)
        middle.add_child(down2)
        leaf.attach_parent(up2)
        for router, link in ((top, down1), (middle, up1), (middle, down2), (leaf, up2)):
            nursery.start_soon(router.pump, link)
        yield Tree(master, middle, leaf, handle, down2, up2)


async def start(handle: ProcessHandle, link: Link) -> None:
    """The handle's side of a start, from the handshake to ready (what its run does)."""
    ready = await handshake(link, handle._start_message(), deadline=trio.current_time() + 5,
                            start_timeout=5)
    if not isinstance(ready, SpawnError):
        ready = handle._check_name(ready)
    if isinstance(ready, SpawnError):
        raise ready
    handle._ready(ready)


async def play_worker(t: Tree, address: str) -> None:
    """The worker's side of the handshake: Hello, then (after Start) its actor registers
    its name and the worker says Ready."""
    t.up.notify(Hello(version=PROTOCOL_VERSION, pid=1))
    start = await t.up.control_received.receive()
    assert isinstance(start, Start)
    t.leaf.names.register(start.path, address)
    t.up.notify(Ready(address=address))


async def test_a_worker_name_is_registered_once(nursery: trio.Nursery) -> None:
    async with tree(nursery) as t:
        nursery.start_soon(play_worker, t, "0.1.1/1")
        with trio.fail_after(5):
            await start(t.handle, t.down)
        await trio.testing.wait_all_tasks_blocked()
        assert t.handle.address == "0.1.1/1"
        assert t.middle.names.get("w/c") == "0.1.1/1"
        # One report reaches the master: the actor's own, passed up by the middle worker.
        assert t.master.registered == [("w/c", "0.1.1/1")]
        assert t.master.get("w/c") == "0.1.1/1"


async def test_a_worker_whose_name_is_held_by_another_fails_to_start(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    async with tree(nursery) as t:
        t.middle.names.register("w/c", "0.1.2/1")  # another worker took the name first
        nursery.start_soon(play_worker, t, "0.1.1/1")
        with trio.fail_after(5), pytest.raises(SpawnError, match="'w/c' is already taken"):
            await start(t.handle, t.down)
        assert t.middle.names.get("w/c") == "0.1.2/1"
        assert "registered twice" in caplog.text
