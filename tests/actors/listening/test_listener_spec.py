"""``listener(...)``'s arguments for UDP and for a socket without acceptors, checked when
the spec is built."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Acceptor, DatagramAcceptor, listener


class Echo(Acceptor):
    async def handle(self, stream: trio.SocketStream) -> None:
        return None


class Answer(DatagramAcceptor):
    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        return data


def test_a_udp_listener_is_shared_unless_told_otherwise() -> None:
    spec = listener("dns", transport="udp", acceptor=Answer, count=2)
    assert (spec.transport, spec.policy, len(spec.children)) == ("udp", "shared", 2)
    spec = listener("dns", transport="udp", acceptor=Answer, count=2, policy="reuseport")
    assert spec.policy == "reuseport"


def test_a_listener_without_acceptors_is_a_socket_alone() -> None:
    spec = listener("web", acceptor=None)
    assert (spec.policy, spec.children) == ("shared", ())
    assert listener("dns", transport="udp", acceptor=None).children == ()


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"transport": "udp", "acceptor": Answer, "policy": "round_robin"}, ValueError,
     "UDP listener's policy"),
    ({"transport": "udp", "acceptor": Answer, "policy": "least_busy"}, ValueError,
     "UDP listener's policy"),
    ({"transport": "udp", "acceptor": Echo}, TypeError, "DatagramAcceptor subclass"),
    ({"acceptor": Answer}, TypeError, "needs transport='udp'"),
    ({"transport": "udp", "acceptor": Answer, "max_connections_per_worker": 10}, ValueError,
     "no connections"),
    ({"transport": "sctp", "acceptor": Answer}, ValueError, "transport must be"),
    ({"acceptor": None, "policy": "round_robin"}, ValueError, "without acceptors"),
    ({"acceptor": None, "count": 2}, ValueError, "count 0"),
    ({"acceptor": None, "greeting": "hi"}, TypeError, "no acceptor arguments"),
    ({"acceptor": int}, TypeError, "Acceptor subclass"),
])
def test_bad_arguments_are_refused(options: dict[str, Any], error: type[Exception],
                                   match: str) -> None:
    with pytest.raises(error, match=match):
        listener("x", **options)
