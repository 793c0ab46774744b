"""Listener and acceptors with real worker processes and real TCP on loopback."""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path

import pytest
import trio

from actors import (
    Acceptor,
    ActorDrained,
    ActorExited,
    ActorReady,
    ActorStarted,
    BindError,
    HandlePassed,
    ListenerReport,
    listener,
    open_system,
    supervisor,
)
from tests.events import next_event, received
from tests.leaks import descendants

TIMEOUT = 90
POLICIES = ["round_robin", "least_busy", "shared", "reuseport"]


class Echo(Acceptor):
    async def handle(self, stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)


def tree(policy: str, count: int = 2, **options: object):  # type: ignore[no-untyped-def]
    return supervisor("root", children=[
        listener("echo", port=0, acceptor=Echo, count=count, policy=policy,  # type: ignore[arg-type]
                 **options),  # type: ignore[arg-type]
    ])


async def echo_once(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        received = b""
        while len(received) < len(payload):
            chunk = await stream.receive_some()
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("policy", POLICIES)
async def test_hundred_concurrent_connections_echo_exactly(policy: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree(policy)) as system:
            port = system.listener("root/echo").port
            results: dict[int, bool] = {}

            async def client(i: int) -> None:
                payload = os.urandom(1 + (i * 37) % 4000)
                results[i] = await echo_once(port, payload) == payload

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(client, i)
            assert len(results) == 100
            assert all(results.values())


async def test_round_robin_spreads_evenly() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("round_robin", count=4, report_every=0.2)) as system:
            events = system.events()
            port = system.listener("root/echo").port
            for i in range(1000):
                assert await echo_once(port, b"x%d" % i) == b"x%d" % i
            stats = await system.acceptor_stats("root/echo")
            totals = [s.total for s in stats]
            assert len(totals) == 4
            assert sum(totals) == 1000
            assert max(totals) / min(totals) <= 1.2, totals
            # The same figures come as events.
            report = await next_event(events, ListenerReport, "root/echo")
            assert report.port == port
            assert sorted(a.path for a in report.acceptors) == [f"root/echo/{i}" for i in range(4)]


class Keeper:
    """Clients that keep echoing on their connections (reconnecting after a failure)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.stop = trio.Event()
        self._goal = 0
        self._reached = trio.Event()

    async def served(self, more: int) -> None:
        """Wait until ``more`` further round trips succeeded."""
        self._goal = self.ok + more
        self._reached = trio.Event()
        await self._reached.wait()

    def _success(self) -> None:
        self.ok += 1
        if self.ok >= self._goal:
            self._reached.set()

    async def keep_alive(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                async with stream:
                    while not self.stop.is_set():
                        payload = os.urandom(64)
                        await stream.send_all(payload)
                        got = b""
                        while len(got) < 64:
                            chunk = await stream.receive_some()
                            if not chunk:
                                raise trio.BrokenResourceError("closed by the server")
                            got += chunk
                        if got != payload:
                            self.failures.append(f"client {i}: wrong echo")
                            return
                        self._success()
            except (OSError, trio.BrokenResourceError) as exc:
                self.failures.append(f"client {i}: {exc!r}")

    async def connect_each_time(self, i: int) -> None:
        while not self.stop.is_set():
            payload = os.urandom(64)
            try:
                if await echo_once(self.port, payload) != payload:
                    self.failures.append(f"client {i}: wrong echo")
                else:
                    self._success()
            except (OSError, trio.BrokenResourceError) as exc:
                self.failures.append(f"client {i}: {exc!r}")


async def test_sigkill_of_an_acceptor_under_load() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("round_robin", count=2)) as system:
            events = system.events()
            port = system.listener("root/echo").port
            before = {s.path: s.pid for s in await system.acceptor_stats("root/echo")}
            keeper = Keeper(port)
            async with trio.open_nursery() as nursery:
                for i in range(32):
                    nursery.start_soon(keeper.keep_alive, i)
                await keeper.served(500)
                victim_path, victim = sorted(before.items())[0]
                os.kill(victim, signal.SIGKILL)
                async for event in events:
                    if isinstance(event, ActorReady) and event.path == victim_path:
                        break
                await keeper.served(500)
                keeper.stop.set()
            # Only the killed acceptor's own connections may fail (then they reconnect).
            assert len(keeper.failures) <= 32, keeper.failures[:5]
            after = {s.path: s.pid for s in await system.acceptor_stats("root/echo")}
            assert after[victim_path] != victim
            # The replacement takes new connections.
            for _ in range(20):
                assert await echo_once(port, b"after") == b"after"
            stats = {s.path: s for s in await system.acceptor_stats("root/echo")}
            assert stats[victim_path].total > 0
            assert {path: s.restarts for path, s in stats.items()} == {
                path: int(path == victim_path) for path in before
            }


@pytest.mark.parametrize("policy", ["round_robin", "least_busy", "shared"])
async def test_rolling_reload_under_load_fails_no_connection(policy: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree(policy, count=2)) as system:
            port = system.listener("root/echo").port
            before = {s.pid for s in await system.acceptor_stats("root/echo")}
            keeper = Keeper(port)
            async with trio.open_nursery() as nursery:
                # Clients that keep connecting and echoing (a keep-alive connection that
                # outlives the drain deadline is cut: that is what the deadline is for).
                for i in range(32):
                    nursery.start_soon(keeper.connect_each_time, i)
                await keeper.served(300)
                await system.reload("root/echo")
                await keeper.served(300)
                keeper.stop.set()
            assert keeper.failures == []
            after = {s.pid for s in await system.acceptor_stats("root/echo")}
            assert after.isdisjoint(before)
            assert len(after) == 2


async def test_port_in_use_is_a_typed_error_and_starts_nothing() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        spec = supervisor("root", children=[
            listener("echo", port=port, acceptor=Echo, count=2),
        ])
        with trio.fail_after(TIMEOUT), pytest.raises(BindError, match="address already in use"):
            async with open_system(spec):
                pytest.fail("the listener cannot bind")  # pragma: no cover
        assert not descendants()
    finally:
        taken.close()


class Faulty(Acceptor):
    """Raises on the word 'boom'; echoes otherwise."""

    async def handle(self, stream: trio.SocketStream) -> None:
        async for data in stream:
            if b"boom" in data:
                raise RuntimeError("boom")
            await stream.send_all(data)


class Tolerant(Faulty):
    on_error = "log"


async def test_handler_exception_triggers_suicide_and_others_drain() -> None:
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Faulty, count=1, policy="round_robin"),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            events = system.events()
            port = system.listener("root/echo").port
            (before,) = await system.acceptor_stats("root/echo")
            survivor = await trio.open_tcp_stream("127.0.0.1", port)
            async with survivor:
                await survivor.send_all(b"hi")
                assert await survivor.receive_some() == b"hi"
                await echo_once(port, b"boom")  # crashes the worker's handler
                async for event in events:
                    if isinstance(event, ActorReady) and event.path == "root/echo/0":
                        break
                # The old worker drains: the open connection still works.
                await survivor.send_all(b"still here")
                assert await survivor.receive_some() == b"still here"
                # New connections go to the replacement.
                assert await echo_once(port, b"new") == b"new"
            (after,) = await system.acceptor_stats("root/echo")
            assert after.pid != before.pid


async def test_on_error_log_keeps_the_worker() -> None:
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Tolerant, count=1, policy="round_robin"),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            port = system.listener("root/echo").port
            (before,) = await system.acceptor_stats("root/echo")
            await echo_once(port, b"boom")
            assert await echo_once(port, b"fine") == b"fine"
            (after,) = await system.acceptor_stats("root/echo")
            assert after.pid == before.pid


async def test_clients_resetting_connections_do_not_crash_workers() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("round_robin", count=2)) as system:
            port = system.listener("root/echo").port
            before = {s.pid for s in await system.acceptor_stats("root/echo")}
            for _ in range(15):
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"x" * 64)
                await sock.recv(64)
                await sock.send(b"y" * 64)
                # Close with a reset (SO_LINGER 0) while the server may be writing.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            assert await echo_once(port, b"still fine") == b"still fine"
            after = {s.pid for s in await system.acceptor_stats("root/echo")}
            assert after == before


async def test_shared_policy_reports_each_listening_socket_it_passes() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("shared", count=2)) as system:
            events = system.events(history=True)
            first = {s.pid for s in await system.acceptor_stats("root/echo")}
            passed = [e for e in received(events) if isinstance(e, HandlePassed)]
            port = system.listener("root/echo").port
            assert {e.pid for e in passed} == first
            assert {(e.path, e.handle, e.port) for e in passed} == {
                ("root/echo", "listening socket", port)
            }
            # A replacement gets the socket too (and says so).
            victim = passed[0]
            os.kill(victim.pid, signal.SIGKILL)
            again = await next_event(events, HandlePassed, "root/echo")
            assert again.acceptor == victim.acceptor
            assert again.pid not in first
            assert await echo_once(port, b"still served") == b"still served"


async def test_a_reload_reports_each_acceptor_drained() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("round_robin", count=2)) as system:
            events = system.events()
            port = system.listener("root/echo").port
            before = {s.path: s.pid for s in await system.acceptor_stats("root/echo")}
            assert await echo_once(port, b"x") == b"x"
            await system.reload("root/echo")
            drained = [e for e in received(events) if isinstance(e, ActorDrained)]
    assert sorted((e.path, e.pid) for e in drained) == sorted(before.items())
    assert all(e.complete and e.in_flight is None for e in drained)


async def test_a_drain_cut_short_reports_the_connections_it_closed() -> None:
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Echo, count=1, shutdown=0.5),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            events = system.events()
            port = system.listener("root/echo").port
            (old,) = await system.acceptor_stats("root/echo")
            lingering = await trio.open_tcp_stream("127.0.0.1", port)
            async with lingering:
                await lingering.send_all(b"hold")
                assert await lingering.receive_some() == b"hold"
                await system.reload("root/echo")
                drained = await next_event(events, ActorDrained, old.path)
                exited = await next_event(events, ActorExited, old.path)
                # The deadline closed the connection the client kept open.
                with trio.fail_after(5):
                    assert await lingering.receive_some() == b""
    assert (drained.pid, drained.complete, drained.in_flight) == (old.pid, False, 1)
    # The drain gets most of the shutdown time; the rest lets the worker exit on its own.
    assert 0.3 <= drained.seconds < 0.5
    assert exited.reason.kind == "shutdown"


async def test_each_instance_reports_started_ready_and_exited_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree("round_robin", count=1)) as system:
            events = system.events(history=True)
        seen = [(type(e).__name__, e.path) for e in received(events)
                if isinstance(e, ActorStarted | ActorReady | ActorExited)]
    for path in ("root", "root/echo", "root/echo/0"):
        assert [kind for kind, p in seen if p == path] == [
            "ActorStarted", "ActorReady", "ActorExited"
        ], path
    # A supervisor is ready once its children are, and exits after them.
    ready = [p for kind, p in seen if kind == "ActorReady"]
    exited = [p for kind, p in seen if kind == "ActorExited"]
    assert ready == ["root/echo/0", "root/echo", "root"]
    assert exited == ["root/echo/0", "root/echo", "root"]


class NamesForLoopback(trio.abc.HostnameResolver):
    """Resolves ``echo.test`` to loopback: only trio's resolver knows this name."""

    async def getaddrinfo(  # type: ignore[override]
        self, host: bytes | str | None, port: bytes | str | int | None, family: int = 0,
        type: int = 0, proto: int = 0, flags: int = 0,
    ) -> list[tuple[object, ...]]:
        if host in (b"echo.test", "echo.test"):
            host = "127.0.0.1"
        return await trio.to_thread.run_sync(
            socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: tuple[object, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_the_listener_resolves_its_host_without_blocking_the_loop() -> None:
    # trio's resolver runs in a thread; the blocking socket.getaddrinfo on the event loop
    # would not know this name at all.
    previous = trio.socket.set_custom_hostname_resolver(NamesForLoopback())
    try:
        spec = supervisor("root", children=[
            listener("echo", host="echo.test", port=0, acceptor=Echo, count=1),
        ])
        with trio.fail_after(TIMEOUT):
            async with open_system(spec) as system:
                bound = system.listener("root/echo")
                assert bound.host == "127.0.0.1"
                assert await echo_once(bound.port, b"named") == b"named"
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


class Journaled(Acceptor):
    """Echoes, and writes down which process serves which socket (by inode)."""

    def __init__(self, journal: str) -> None:
        self.journal = journal

    async def handle(self, stream: trio.SocketStream) -> None:
        inode = os.fstat(stream.socket.fileno()).st_ino
        with open(self.journal, "a") as out:  # noqa: ASYNC230 (one short line, O_APPEND)
            out.write(f"{inode} {os.getpid()}\n")
        async for data in stream:
            await stream.send_all(data)


@pytest.mark.parametrize("policy", ["round_robin", "least_busy"])
async def test_every_connection_is_served_by_one_acceptor_through_reloads_and_kills(
    policy: str, tmp_path: Path
) -> None:
    journal = tmp_path / "served"
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Journaled, count=2, policy=policy,  # type: ignore[arg-type]
                 journal=str(journal), max_restarts=20),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            events = system.events()
            port = system.listener("root/echo").port
            keeper = Keeper(port)
            async with trio.open_nursery() as nursery:
                for i in range(32):
                    nursery.start_soon(keeper.connect_each_time, i)
                await keeper.served(200)
                for round_ in range(6):
                    if round_ % 3 == 2:
                        victim = (await system.acceptor_stats("root/echo"))[0]
                        os.kill(victim.pid, signal.SIGKILL)
                        await next_event(events, ActorReady, victim.path)
                    else:
                        await system.reload("root/echo")
                    await keeper.served(200)
                keeper.stop.set()
    served: dict[int, set[int]] = {}
    for line in journal.read_text().splitlines():
        inode, pid = map(int, line.split())
        served.setdefault(inode, set()).add(pid)
    doubled = {inode: pids for inode, pids in served.items() if len(pids) > 1}
    assert not doubled, f"{len(doubled)} connections served by two processes"
    assert len(served) >= 1400


class Limited(Echo):
    """Lives with a small fd table: hand-offs past it are refused, not fatal."""

    async def setup(self) -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))


async def test_an_acceptor_at_its_fd_limit_refuses_and_keeps_serving() -> None:
    # It used to take the kernel's MSG_CTRUNC as a protocol error and die with every
    # connection it served.
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Limited, count=2, policy="round_robin"),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            port = system.listener("root/echo").port
            before = {s.pid for s in await system.acceptor_stats("root/echo")}
            served: list[trio.SocketStream] = []
            refused = 0
            try:
                for i in range(150):  # more than both fd tables hold
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    try:
                        with trio.fail_after(5):
                            await stream.send_all(b"%d" % i)
                            if await stream.receive_some() != b"%d" % i:
                                raise trio.BrokenResourceError("closed")
                        served.append(stream)
                    except (OSError, trio.BrokenResourceError):
                        refused += 1
                        await stream.aclose()
                after = {s.pid for s in await system.acceptor_stats("root/echo")}
                assert after == before  # nobody died
                assert refused > 0  # the limit was reached...
                assert len(served) >= 80  # ...after both tables were used
                for stream in served:  # and every connection served still echoes
                    await stream.send_all(b"still")
                    assert await stream.receive_some() == b"still"
            finally:
                for stream in served:
                    await stream.aclose()
            assert await echo_once(port, b"after") == b"after"
