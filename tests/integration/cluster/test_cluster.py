"""Two masters in one process, joined through a real redis-server: membership, tell and ask
across nodes, refs that travel, failures as typed errors, names and monitors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from actors import (
    ActorError,
    ActorGone,
    ActorNotFound,
    ActorSystem,
    NodeDown,
    NodeJoined,
    NodeLeft,
    RemoteError,
    open_system,
)
from tests.events import next_event
from tests.integration.cluster.actors_for_tests import (
    AskAlong,
    Call,
    Collector,
    Echo,
    Fail,
    Me,
    Ping,
    Pong,
    Relay,
    Seen,
    SeenSoFar,
    Unwatch,
    Watching,
    WatchThis,
    WhoAreYou,
)
from tests.waiting import TIMEOUT, eventually

TTL = 1.0


@asynccontextmanager
async def node(cluster: str, name: str, **options: object) -> AsyncIterator[ActorSystem]:
    async with open_system(cluster=cluster, node=name, name=f"cluster-{name}",
                           handle_signals=False, control=False, node_ttl=TTL,
                           **options) as system:  # type: ignore[arg-type]
        yield system


async def seen(ref_system: ActorSystem, path: str) -> SeenSoFar:
    return await ref_system.ref(path).ask(Seen(), SeenSoFar)


async def test_nodes_see_each_other_join_and_leave(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a:
            events = a.events()
            assert list(a.nodes()) == ["a"]
            async with node(cluster, "b") as b:
                joined = await next_event(events, NodeJoined, "cluster")
                assert (joined.node, joined.incarnation) == ("b", b.nodes()["b"])
                assert set(a.nodes()) == set(b.nodes()) == {"a", "b"}
                assert a.nodes()["a"] != b.nodes()["b"]
            left = await next_event(events, NodeLeft, "cluster")  # b left: at once
            assert left.node == "b"
            assert list(a.nodes()) == ["a"]


async def test_ten_thousand_tells_arrive_in_order(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            await b.spawn(Collector, name="collector")
            await _until_both(a, b)
            remote = a.ref("collector@b")
            for n in range(10_000):
                await remote.tell(Pong(n=n))
            await eventually(lambda: _count(b, 10_000), what="10,000 tells")
            assert (await seen(b, "collector")).numbers == list(range(10_000))


async def test_asks_get_typed_replies_and_boxed_errors(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            await b.spawn(Echo, name="echo", process=True)
            await b.spawn(Echo, name="doomed")
            await _until_both(a, b)
            echo = a.ref("echo@b")
            assert a.ref("echo", node="b") == echo
            replies = [await echo.ask(Ping(n=n), Pong) for n in range(20)]
            assert [r.n for r in replies] == list(range(20))  # from a worker process of b
            with pytest.raises(RemoteError) as raised:
                await a.ref("doomed@b").ask(Fail(text="no luck"))
            assert raised.value.type_name == "ValueError"
            assert raised.value.message == "no luck"
            assert "no luck" in raised.value.traceback
            with pytest.raises(ActorNotFound):
                await a.ref("nobody@b").ask(Ping(n=1))
            with pytest.raises(NodeDown) as down:
                await a.ref("echo@c").ask(Ping(n=1))
            assert not down.value.in_doubt  # never sent: c is in no cluster
            assert isinstance(down.value, ActorGone)


async def test_refs_travel_both_ways(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            collector = await a.spawn(Collector, name="collector")
            await b.spawn(Echo, name="echo", process=True)
            await _until_both(a, b)
            # An address of a's travels to a worker of b, which tells it back 100 times.
            await a.ref("echo@b").ask(Call(back=collector, count=0))
            await a.ref("echo@b").tell(Call(back=collector, count=100))
            await eventually(lambda: _count(a, 100), what="100 tells back")
            assert (await seen(a, "collector")).numbers == list(range(100))


async def test_an_address_of_an_earlier_incarnation_is_gone(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a:
            async with node(cluster, "b") as b:
                await b.spawn(Echo, name="echo")
                await _until_both(a, b)
                path_ref = a.ref("echo@b")
                address_ref = (await path_ref.ask(WhoAreYou(), Me)).ref
                assert address_ref.node == "b"
                assert address_ref.incarnation == b.nodes()["b"]
                assert (await address_ref.ask(Ping(n=1), Pong)).n == 1
            async with node(cluster, "b") as b2:
                await b2.spawn(Echo, name="echo")
                await eventually(lambda: _live(a, "b", b2.nodes()["b"]))
                with pytest.raises(ActorGone, match="earlier incarnation"):
                    await address_ref.ask(Ping(n=2))
                with pytest.raises(ActorGone, match="earlier incarnation"):
                    await address_ref.tell(Ping(n=2))
                assert (await path_ref.ask(Ping(n=7), Pong)).n == 7  # follows the node


async def _until_both(a: ActorSystem, b: ActorSystem) -> None:
    async def both() -> bool:
        return set(a.nodes()) == set(b.nodes()) == {"a", "b"}

    await eventually(both, what="both nodes see each other")


async def _live(system: ActorSystem, name: str, incarnation: int) -> bool:
    return system.nodes().get(name) == incarnation


async def _count(system: ActorSystem, count: int) -> bool:
    return len((await seen(system, "collector")).numbers) >= count


async def test_a_flood_to_a_slow_node_stays_within_its_bound(cluster: str) -> None:
    import coredis

    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b", inbox_bound=50) as b:
            await b.spawn(Collector, name="collector", delay=0.001)
            await _until_both(a, b)
            prefix = cluster.rpartition("prefix=")[2]
            lengths: list[int] = []
            async with coredis.Redis.from_url(cluster.partition("?")[0]) as redis:
                async def measure() -> None:
                    while True:
                        lengths.append(await redis.xlen(f"{prefix}:cluster:inbox:b"))
                        await trio.sleep(0.005)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(measure)
                    remote = a.ref("collector@b")
                    for n in range(3000):
                        await remote.tell(Pong(n=n))
                    await eventually(lambda: _count(b, 3000), what="3,000 tells")
                    nursery.cancel_scope.cancel()
            longest = max(lengths)
            assert longest == 50  # full: the sender waited, and never went past it
            assert (await seen(b, "collector")).numbers == list(range(3000))  # none lost


async def test_names_across_the_cluster(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a:
            async with node(cluster, "b") as b:
                echo = await b.spawn(Echo, name="echo")
                await _until_both(a, b)
                assert await b.register("the-echo", echo)
                other = await a.spawn(Echo, name="other")
                assert not await a.register("the-echo", other)  # held by a live node
                found = await a.whereis("the-echo")
                assert found is not None
                assert found.node == "b"
                assert (await found.ask(Ping(n=3), Pong)).n == 3
                assert await b.whereis("the-echo") == echo  # at home: a local ref
                assert await a.whereis("nobody") is None
            # b left: its names went with it.
            assert await a.whereis("the-echo") is None
            assert await a.register("the-echo", other)
            assert await a.whereis("the-echo") == other
            assert await a.unregister("the-echo", other)
            assert await a.whereis("the-echo") is None


async def test_monitors_across_nodes(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a:
            watcher = await a.spawn(Collector, name="collector")
            assert a.cluster is not None
            async with node(cluster, "b") as b:
                await b.spawn(Echo, name="doomed")
                await b.spawn(Echo, name="calm")
                await _until_both(a, b)
                doomed = (await a.ref("doomed@b").ask(WhoAreYou(), Me)).ref
                await a.cluster.monitor(doomed, watcher)
                await a.cluster.monitor(a.ref("nobody@b"), watcher)
                stopped = await a.cluster.monitor(a.ref("calm@b"), watcher)
                await a.cluster.demonitor(stopped)
                await a.cluster.monitor(a.ref("calm@b"), watcher)
                await a.cluster.monitor(a.ref("calm@c"), watcher)  # no such node
                with pytest.raises(RemoteError):
                    await doomed.ask(Fail(text="down it goes"))
                await eventually(lambda: _downs(a, 3), what="crashed, noproc, nodedown")
                downs = (await seen(a, "collector")).downs
                by_reason = {down.reason: down for down in downs}
                assert by_reason["crashed"].ref == doomed
                exit = by_reason["crashed"].exit
                assert exit is not None
                assert exit.error_type == "ValueError"
                assert by_reason["noproc"].ref == a.ref("nobody@b")
                assert by_reason["nodedown"].ref == a.ref("calm@c")
            # b stopped: the monitor of calm fires once, with calm's own end if b could
            # still report it, else as b left (test_cluster_faults kills a node).
            await eventually(lambda: _downs(a, 4), what="the end of calm@b")
            await trio.testing.wait_all_tasks_blocked()
            downs = (await seen(a, "collector")).downs
            assert len(downs) == 4
            assert downs[-1].reason in ("shutdown", "nodedown")
            assert downs[-1].ref == a.ref("calm@b")


async def test_an_actor_in_a_worker_process_monitors_an_actor_of_another_node(
    cluster: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            watcher = await a.spawn(Collector, name="collector", process=True)
            await b.spawn(Echo, name="doomed")
            await _until_both(a, b)
            doomed = a.ref("doomed@b")
            watching = await watcher.ask(WatchThis(target=doomed), Watching)
            assert watching.id.startswith("a:")  # the master's node holds it
            with pytest.raises(RemoteError):
                await doomed.ask(Fail(text="watched"))
            await eventually(lambda: _downs(a, 1), what="ActorDown in the worker")
            down = (await seen(a, "collector")).downs[0]
            assert (down.reason, down.ref) == ("crashed", doomed)


async def test_ctx_monitor_and_demonitor_take_an_actor_of_another_node(cluster: str) -> None:
    """``ctx.monitor`` of a ref with a node watches it through the cluster, from the master
    as from a worker process; ``ctx.demonitor`` takes that monitor's id back."""
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            here = await a.spawn(Collector, name="collector")
            await b.spawn(Echo, name="doomed")
            await b.spawn(Echo, name="calm")
            await _until_both(a, b)
            doomed, calm = a.ref("doomed@b"), a.ref("calm@b")
            dropped = await here.ask(WatchThis(target=calm), Watching)
            await here.ask(Unwatch(id=dropped.id))
            await here.ask(WatchThis(target=doomed), Watching)
            await here.ask(WatchThis(target=a.ref("nobody@b")), Watching)
            with pytest.raises(RemoteError):
                await doomed.ask(Fail(text="watched"))
            await eventually(lambda: _downs(a, 2), what="crashed and noproc")
            await b.ref("calm").ask(Ping(n=1), Pong)  # calm still runs: nothing for it
            downs = (await seen(a, "collector")).downs
            assert sorted((down.reason, down.ref.path) for down in downs) == [
                ("crashed", "doomed"), ("noproc", "nobody"),
            ]


async def test_an_actor_names_an_actor_of_another_node_by_path(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            await a.spawn(Relay, name="relay", process=True)
            await b.spawn(Echo, name="echo")
            await _until_both(a, b)
            reply = await a.ref("relay").ask(AskAlong(path="echo@b", n=5), Pong)
            assert reply.n == 5
            with pytest.raises(RemoteError, match="NodeDown"):  # its own crash, boxed
                await a.ref("relay").ask(AskAlong(path="echo@c", n=6))


async def _downs(system: ActorSystem, count: int) -> bool:
    return len((await seen(system, "collector")).downs) >= count


async def test_a_redis_that_lost_its_data_is_joined_again(
    cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    import coredis

    caplog.set_level(logging.CRITICAL, logger="actors")
    with trio.fail_after(TIMEOUT):
        async with node(cluster, "a") as a, node(cluster, "b") as b:
            await b.spawn(Echo, name="echo")
            await _until_both(a, b)
            echo = a.ref("echo@b")
            assert (await echo.ask(Ping(n=1), Pong)).n == 1
            async with coredis.Redis.from_url(cluster.partition("?")[0]) as redis:
                await redis.flushall()  # membership, streams, groups: all gone

            async def answered() -> bool:
                try:
                    return (await echo.ask(Ping(n=2), Pong)).n == 2
                except ActorError:
                    return False

            await eventually(answered, what="asks across nodes again")
            await _until_both(a, b)
