"""Direct links' bookkeeping in one process: what a direct link may carry, and how many
requests for one a worker makes (the links themselves: tests/integration/messaging)."""

from __future__ import annotations

import socket

import pytest
import trio

from actors._base._control import Credit, Heartbeat, Ready
from actors._messaging._direct import LinkRequest
from actors._messaging._link import Link
from actors._messaging._names import NameRegistry
from actors._messaging._router import Router
from protocol import ProtocolError, decode_message, open_channel
from tests.links import link_pair
from tests.waiting import TIMEOUT


async def test_a_direct_link_carries_credit_and_nothing_else_of_control(
    nursery: trio.Nursery,
) -> None:
    router = Router("0.1", nursery, names=NameRegistry())
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.close()
    async with open_channel(a) as channel:
        link = Link("0.2", channel, is_parent=False, direct=True)
        router.controls.dispatch(link, Credit(bytes=10))
        assert link.send_credit > 1024 * 1024
        for message in (Heartbeat(), Ready(address="0.2/1")):
            with pytest.raises(ProtocolError, match="on a direct link"):
                router.controls.dispatch(link, message)


async def test_a_worker_asks_once_per_peer_and_forgets_old_peers(
    nursery: trio.Nursery,
) -> None:
    router = Router("0.1", nursery, names=NameRegistry())
    with trio.fail_after(TIMEOUT):
        await _ask_for_peers(router)


async def _ask_for_peers(router: Router) -> None:
    async with link_pair("0", "0.1") as (down, up):
        router.attach_parent(up)
        peers = [f"0.{number}" for number in range(2, 1100)]
        for peer in peers:
            assert router.direct.towards(peer) is None  # through the parent until linked
            assert router.direct.towards(peer) is None  # asked once, not twice
        assert router.direct.towards("0.1") is None  # itself: never
        assert router.direct.towards("0") is None  # the master: its parent already
        asked: list[str] = []
        while len(asked) < len(peers):
            for frame in await down.channel.receive_some():
                message = decode_message(frame)
                assert isinstance(message, LinkRequest)
                asked.append(message.peer)
        assert asked == peers
        # Past 1 024 peers the oldest answers are forgotten: the first is asked again.
        assert router.direct.towards(peers[0]) is None
        [frame] = await down.channel.receive_some()
        assert decode_message(frame) == LinkRequest(peer=peers[0])
