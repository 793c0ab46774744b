"""The control table on its own, and the one a router fills: which part handles each control
message, by its type and the side it came from."""

from __future__ import annotations

import pytest
import trio

from actors._base._control import (
    Credit,
    Heartbeat,
    NameRegistered,
    Ready,
    Stop,
    SystemStopping,
)
from actors._messaging._control_table import ControlTable
from actors._messaging._link import Link
from actors._messaging._names import NameRegistry
from actors._messaging._router import Router
from protocol import Message
from tests.links import link_pair


def left_for_owner(link: Link) -> list[Message]:
    """What the table left for the link's owner (a worker handle, a worker's bootstrap)."""
    found = []
    while True:
        try:
            found.append(link.control_received.receive_nowait())
        except trio.WouldBlock:
            return found


async def test_a_message_goes_to_the_handler_of_its_type_and_side() -> None:
    table = ControlTable()
    seen: list[tuple[Link, Message]] = []
    table.register(Stop, lambda link, message: seen.append((link, message)), from_parent=True)
    async with link_pair() as (down, up):
        table.dispatch(up, Stop())  # from the parent: handled
        table.dispatch(down, Stop())  # from a child: not registered for that side
        assert seen == [(up, Stop())]
        assert left_for_owner(up) == []
        assert left_for_owner(down) == [Stop()]


async def test_a_type_without_a_handler_goes_to_the_link_owner() -> None:
    table = ControlTable()
    async with link_pair() as (down, up):
        table.dispatch(down, Ready(address="0.1/1"))
        table.dispatch(up, Heartbeat())
        assert left_for_owner(down) == [Ready(address="0.1/1")]
        assert left_for_owner(up) == [Heartbeat()]


async def test_a_closed_owner_channel_drops_the_message() -> None:
    table = ControlTable()
    async with link_pair() as (down, _):
        down.control.close()  # the link is going down: nobody reads any more
        table.dispatch(down, Ready(address="0.1/1"))  # no error


def test_each_type_has_one_handler_per_side() -> None:
    table = ControlTable()

    def handle(link: Link, message: Credit) -> None: ...

    table.register(Credit, handle, from_parent=True)
    table.register(Credit, handle, from_children=True)  # the other side: fine
    with pytest.raises(ValueError, match="already has a handler"):
        table.register(Credit, handle, from_parent=True, from_children=True)
    with pytest.raises(ValueError, match="must come from"):
        table.register(Heartbeat, Link.on_heartbeat)


async def test_a_router_handles_the_core_messages_and_leaves_the_rest(
    nursery: trio.Nursery,
) -> None:
    names = NameRegistry()
    router = Router("0", nursery, names=names)
    async with link_pair() as (down, up):
        router.add_child(down)
        down.send_credit = 0
        router.controls.dispatch(down, Credit(bytes=10))  # either side: the link's own
        assert down.send_credit == 10
        router.controls.dispatch(down, Heartbeat())  # noted as the frame was read
        router.controls.dispatch(down, NameRegistered(path="w1", address="0.1/1"))
        assert names.get("w1") == "0.1/1"  # a worker reports its names up
        router.controls.dispatch(down, SystemStopping())  # only the parent says so
        assert not router.stopping
        assert left_for_owner(down) == [SystemStopping()]
        assert left_for_owner(up) == []

    worker = Router("0.1", nursery, names=NameRegistry())
    async with link_pair() as (down, up):
        worker.attach_parent(up)
        worker.controls.dispatch(up, NameRegistered(path="x", address="0/1"))
        assert worker.names.get("x") is None  # names are reported up, never down
        assert left_for_owner(up) == [NameRegistered(path="x", address="0/1")]
        worker.controls.dispatch(up, SystemStopping())
        assert worker.stopping
        assert left_for_owner(up) == []
