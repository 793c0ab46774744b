"""Listener and acceptors with real worker processes and real TCP on loopback."""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

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
from tests.waiting import TIMEOUT

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
        # Served means read from: a connection nobody read from (or wrote to) that an
        # acceptor took just before it was killed may go on in another one.
        inode = os.fstat(stream.socket.fileno()).st_ino
        first = True
        async for data in stream:
            if first:
                with open(self.journal, "a") as out:  # noqa: ASYNC230 (one short line)
                    out.write(f"{inode} {os.getpid()}\n")
                first = False
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

        # 48 numbers free above what it holds now (the first fork server is a fork of the
        # master, whose fds its workers hold as /dev/null: how many depends on the master).
        held = len(os.listdir("/proc/self/fd"))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (held + 48, hard))


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
                for i in range(150):  # more than both fd tables hold (2 x 48)
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


# -- no connection lost when an acceptor dies or drains ------------------------------------


class Stalling(Acceptor):
    """Echoes; on ``stall`` it says its pid and blocks its whole process (a handler stuck
    in a blocking call): what is handed to it meanwhile waits, unread, in its channel."""

    stateless_connections = True

    async def handle(self, stream: trio.SocketStream) -> None:
        while (data := await self.receive(stream)) is not None:
            if data == b"stall":
                # Said and stuck with no checkpoint between: its accept loop (shared,
                # reuseport) gets no chance to take a connection it would then die with.
                os.write(stream.socket.fileno(), str(os.getpid()).encode())
                import time

                time.sleep(60)  # noqa: ASYNC251  (the point: its event loop is stuck)
            await stream.send_all(data)


async def _stall_one(port: int) -> tuple[trio.SocketStream, int]:
    """A connection that stalls the acceptor serving it; that acceptor's pid."""
    stalled = await trio.open_tcp_stream("127.0.0.1", port)
    await stalled.send_all(b"stall")
    return stalled, int(await stalled.receive_some())


@pytest.mark.parametrize("policy", POLICIES)
async def test_connections_waiting_for_a_killed_acceptor_are_served_by_another(
    policy: str,
) -> None:
    # round_robin, least_busy: hand-offs still unread in the dead worker's channel were
    # closed as "in doubt"; the kernel says nobody touched them, so they go elsewhere.
    # reuseport: the connections queued on the dead acceptor's socket were reset with it;
    # the master keeps that socket for its successor. shared: the queue is the listener's.
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Stalling, count=2, policy=policy),  # type: ignore[arg-type]
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            port = system.listener("root/echo").port
            stalled, victim = await _stall_one(port)
            served: list[bytes] = []
            enough = trio.Event()

            async def client(i: int) -> None:
                payload = b"hello %d" % i
                echoed = await echo_once(port, payload)
                served.append(echoed if echoed == payload else b"wrong: " + echoed)
                if len(served) >= 8:
                    enough.set()

            async with stalled, trio.open_nursery() as nursery:
                for i in range(24):
                    nursery.start_soon(client, i)
                await enough.wait()  # those the live acceptor got are served...
                await trio.testing.wait_all_tasks_blocked(0.2)
                if policy != "shared":  # (there the live one accepts them all)
                    assert len(served) < 24  # ...the others wait for the stuck one
                os.kill(victim, signal.SIGKILL)
                # The connection it had begun to serve is closed, never handed on.
                with trio.fail_after(10):
                    try:
                        assert await stalled.receive_some() == b""
                    except trio.BrokenResourceError:
                        pass  # reset: closed all the same
            assert sorted(served) == sorted(b"hello %d" % i for i in range(24))


class KeepAliveClients:
    """Keep-alive clients that count what a drain does to them: connections the server
    closed between requests (they reconnect and send that request again) and failures
    (an echo cut short or wrong, a request lost)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.connects = 0
        self.closed = 0
        self.failures: list[str] = []
        self.stop = trio.Event()
        self._goal = 0
        self._reached = trio.Event()

    async def served(self, more: int) -> None:
        self._goal = self.ok + more
        self._reached = trio.Event()
        await self._reached.wait()

    async def run(self, i: int) -> None:
        payload = os.urandom(64)
        while not self.stop.is_set():
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.connects += 1
            async with stream:
                while not self.stop.is_set():
                    got = b""
                    try:
                        await stream.send_all(payload)
                        while len(got) < len(payload):
                            chunk = await stream.receive_some()
                            if not chunk:
                                break
                            got += chunk
                    except (OSError, trio.BrokenResourceError) as exc:
                        if got:
                            self.failures.append(f"client {i}: cut short: {exc!r}")
                            return
                    if not got:
                        self.closed += 1  # closed between two requests: try again
                        break
                    if got != payload:
                        self.failures.append(f"client {i}: wrong echo")
                        return
                    self.ok += 1
                    if self.ok >= self._goal:
                        self._reached.set()
                    payload = os.urandom(64)


class Stateless(Acceptor):
    stateless_connections = True

    async def handle(self, stream: trio.SocketStream) -> None:
        while (data := await self.receive(stream)) is not None:
            await stream.send_all(data)


class Stateful(Stateless):
    stateless_connections = False


@pytest.mark.parametrize("policy", POLICIES)
async def test_stateless_connections_move_to_another_acceptor_through_reloads_and_scaling(
    policy: str,
) -> None:
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Stateless, count=3, policy=policy,  # type: ignore[arg-type]
                 max_restarts=50),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            clients = KeepAliveClients(system.listener("root/echo").port)
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(clients.run, i)
                await clients.served(200)
                await system.reload("root/echo")
                await clients.served(200)
                await system.reload("root/echo")
                await clients.served(200)
                await system.scale("root/echo", 2)
                await clients.served(200)
                clients.stop.set()
            assert clients.failures == []
            assert (clients.closed, clients.connects) == (0, 16)  # nobody noticed


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_drain_serves_what_was_sent_then_closes_idle_connections(policy: str) -> None:
    # Without stateless_connections, a drain closes idle connections; a request already
    # sent is served first. The drain used to close them at once, dropping that request.
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Stateful, count=2, policy=policy,  # type: ignore[arg-type]
                 max_restarts=50),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            clients = KeepAliveClients(system.listener("root/echo").port)
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(clients.run, i)
                await clients.served(200)
                await system.reload("root/echo")
                await clients.served(200)
                await system.reload("root/echo")
                await clients.served(200)
                clients.stop.set()
            assert clients.failures == []
            assert clients.closed >= 16  # the idle ones were closed (and came back)


class Pipelined(Acceptor):
    """Works on each request until told it may answer (a drain begins meanwhile)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        while (data := await self.receive(stream, 5)) is not None:
            if data == b"one..":
                while not os.path.exists(os.environ["PIPELINED_GO"]):  # noqa: ASYNC110, ASYNC240
                    await trio.sleep(0.01)
            await stream.send_all(data)


async def test_a_request_sent_before_a_drain_is_served_before_the_connection_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = tmp_path / "go"
    monkeypatch.setenv("PIPELINED_GO", str(go))
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Pipelined, count=1, shutdown=20.0),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            events = system.events()
            port = system.listener("root/echo").port
            (old,) = await system.acceptor_stats("root/echo")
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream, trio.open_nursery() as nursery:
                await stream.send_all(b"one..")  # the handler works on it...
                nursery.start_soon(system.reload, "root/echo")
                ready = await next_event(events, ActorReady, "root/echo/0")
                assert ready.pid != old.pid  # ...while its acceptor is replaced, and drains
                await stream.send_all(b"two..")  # the next request, sent during the drain
                go.touch()
                got = b""
                while chunk := await stream.receive_some():
                    got += chunk
            assert got == b"one..two.."  # both served, then the idle connection closed


async def test_recycled_acceptors_hand_their_idle_connections_on() -> None:
    # max_connections_per_worker recycles drain the same way as a reload: 18-21 of 600
    # keep-alive requests were reset over ~13 recycles.
    spec = supervisor("root", children=[
        listener("echo", port=0, acceptor=Stateless, count=2, max_connections_per_worker=40),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(spec) as system:
            events = system.events()
            port = system.listener("root/echo").port
            clients = KeepAliveClients(port)
            churn = Keeper(port)  # new connections, which make the acceptors recycle
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(clients.run, i)
                for i in range(4):
                    nursery.start_soon(churn.connect_each_time, i)
                recycled = 0
                async for event in events:
                    if isinstance(event, ActorExited) and event.reason.kind == "recycled":
                        recycled += 1
                        if recycled >= 6:
                            break
                await clients.served(100)
                clients.stop.set()
                churn.stop.set()
            assert clients.failures == []
            assert churn.failures == []
            assert (clients.closed, clients.connects) == (0, 8)
