"""The cluster when things go wrong: a master SIGKILLed and restarted, Redis going away,
and a partition between two network namespaces. Every failure is a typed error, never a
hang, and everything works again once the fault is gone."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors import (
    ActorGone,
    ActorSystem,
    BrokerUnavailable,
    NodeDown,
    NodeLeft,
    open_system,
)
from tests.events import next_event
from tests.integration.cluster.actors_for_tests import (
    Collector,
    Me,
    Ping,
    Pong,
    Seen,
    SeenSoFar,
    Slow,
    WhoAreYou,
)
from tests.processes import wait_exited
from tests.redis_server import RedisServer, require_redis_server, unique_prefix
from tests.repository import ROOT
from tests.waiting import TIMEOUT, eventually

TTL = 1.0


def master(cluster: str, node: str, *arguments: str, prefix: list[str] | None = None
           ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "tests.integration.cluster.cluster_master",
         "--cluster", cluster, "--node", node, "--ttl", str(TTL), *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def next_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = await trio.to_thread.run_sync(process.stdout.readline)
    if not line:
        assert process.stderr is not None
        raise AssertionError(f"the master ended: {process.stderr.read()}")
    return line.strip()


async def lines_until(process: subprocess.Popen[str], wanted: str) -> list[str]:
    """Its lines up to (and with) ``wanted``; a hang is a failure at once."""
    found = []
    while True:
        line = await next_line(process)
        found.append(line)
        assert line != "error hang", found
        if line == wanted:
            return found


async def finish(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    await trio.to_thread.run_sync(lambda: process.communicate(timeout=TIMEOUT))


async def test_a_killed_master_fails_asks_fires_monitors_and_comes_back_new(
    cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="actors")
    with trio.fail_after(TIMEOUT):
        async with open_system(cluster=cluster, node="a", control=False, node_ttl=TTL,
                               handle_signals=False) as a:
            events = a.events()
            watcher = await a.spawn(Collector, name="collector")
            assert a.cluster is not None
            b = master(cluster, "b")
            try:
                first = int((await next_line(b)).split()[1])
                await eventually(lambda: _live(a, "b", first))
                echo = a.ref("echo@b")
                address = (await echo.ask(WhoAreYou(), Me)).ref
                await a.cluster.monitor(echo, watcher)
                outcomes: list[BaseException] = []

                async def pending() -> None:
                    try:
                        await echo.ask(Slow(seconds=3600))
                    except ActorGone as exc:
                        outcomes.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pending)
                    await eventually(lambda: _handling(a))
                    b.send_signal(signal.SIGKILL)
                    await wait_exited(b.pid)
                # The ask in flight: NodeDown, in doubt (it reached the actor).
                assert len(outcomes) == 1
                assert isinstance(outcomes[0], NodeDown)
                assert outcomes[0].in_doubt
                left = await next_event(events, NodeLeft, "cluster")
                assert (left.node, left.incarnation) == ("b", first)
                with pytest.raises(NodeDown):  # a new one, at once
                    await echo.ask(Ping(n=1))
                await eventually(lambda: _downs(a, 1))
                down = (await a.ref("collector").ask(Seen(), SeenSoFar)).downs[0]
                assert (down.reason, down.ref) == ("nodedown", echo)
            finally:
                await finish(b)
            b = master(cluster, "b")  # restarted: a new incarnation
            try:
                second = int((await next_line(b)).split()[1])
                assert second > first
                await eventually(lambda: _live(a, "b", second))
                with pytest.raises(ActorGone, match="earlier incarnation"):
                    await address.ask(Ping(n=2))
                assert (await echo.ask(Ping(n=3), Pong)).n == 3  # by path: the new one
            finally:
                await finish(b)


async def test_redis_going_away_fails_remote_sends_and_they_resume(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="actors")
    cluster = f"{own_redis.url}?prefix={unique_prefix()}"
    with trio.fail_after(TIMEOUT):
        async with (
            open_system(cluster=cluster, node="a", control=False, node_ttl=TTL,
                        store_timeout=TTL, handle_signals=False, name="fault-a") as a,
            open_system(cluster=cluster, node="b", control=False, node_ttl=TTL,
                        store_timeout=TTL, handle_signals=False, name="fault-b") as b,
        ):
            await b.spawn(Collector, name="collector")
            local = await a.spawn(Collector, name="collector")
            await eventually(lambda: _both(a, b))
            remote = a.ref("collector@b")
            await remote.ask(Seen(), SeenSoFar)
            own_redis.stop()

            async def refused() -> bool:
                try:
                    await remote.ask(Seen())
                except BrokerUnavailable:
                    return True
                except NodeDown:
                    return False  # a heartbeat failed first: the broker is next
                return False

            await eventually(refused, what="BrokerUnavailable")
            with pytest.raises(BrokerUnavailable):
                await remote.tell(Pong(n=1))
            await local.tell(Pong(n=7))  # the local system runs on
            assert (await local.ask(Seen(), SeenSoFar)).numbers == [7]
            own_redis.start()

            async def answered() -> bool:
                try:
                    await remote.ask(Seen(), SeenSoFar)
                except (BrokerUnavailable, NodeDown):
                    return False
                return True

            await eventually(answered, what="remote asks again")
            await remote.tell(Pong(n=8))
            await eventually(lambda: _numbers(b, [8]))


async def test_a_partition_is_typed_errors_on_both_sides_and_heals(
    two_hosts: tuple[str, str], tmp_path: Path
) -> None:
    require_redis_server()
    one, two = two_hosts
    server = RedisServer(tmp_path, host="10.77.0.1", port=6381, durable=False)
    server.start(wrap=["ip", "netns", "exec", one])
    try:
        cluster = f"{server.url}?prefix={unique_prefix()}"
        a = master(cluster, "a", "--peer", "b", prefix=["ip", "netns", "exec", one])
        b = master(cluster, "b", "--peer", "a", prefix=["ip", "netns", "exec", two])
        try:
            with trio.fail_after(TIMEOUT):
                await lines_until(a, "ok")
                await lines_until(b, "ok")
                veth = _veth(two)
                await trio.run_process(["ip", "-n", two, "link", "set", veth, "down"])
                # a still reaches Redis: b is down for it. b does not: the broker is.
                await lines_until(a, "error NodeDown")
                await lines_until(b, "error BrokerUnavailable")
                await trio.run_process(["ip", "-n", two, "link", "set", veth, "up"])
                await lines_until(a, "ok")
                await lines_until(b, "ok")
        finally:
            await finish(a)
            await finish(b)
    finally:
        server.stop()


def _veth(namespace: str) -> str:
    found = subprocess.run(["ip", "-n", namespace, "-o", "link", "show", "type", "veth"],
                           capture_output=True, text=True, check=True).stdout
    return found.split(":")[1].strip().split("@")[0]


async def _live(system: ActorSystem, name: str, incarnation: int) -> bool:
    return system.nodes().get(name) == incarnation


async def _both(a: ActorSystem, b: ActorSystem) -> bool:
    return set(a.nodes()) == set(b.nodes()) == {"a", "b"}


async def _handling(system: ActorSystem) -> bool:
    assert system.cluster is not None
    return bool(system.cluster._sending.pending)  # the ask left: nothing public says so


async def _downs(system: ActorSystem, count: int) -> bool:
    return len((await system.ref("collector").ask(Seen(), SeenSoFar)).downs) >= count


async def _numbers(system: ActorSystem, numbers: list[int]) -> bool:
    return (await system.ref("collector").ask(Seen(), SeenSoFar)).numbers == numbers
