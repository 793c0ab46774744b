"""Two masters, two hosts (or two terminals): a dispatcher on node ``a`` spreads jobs over a
pool of worker processes on node ``b``, through Redis, and carries on when ``b`` restarts.

    python examples/cluster_work.py --node b                  # first terminal: the pool
    python examples/cluster_work.py --node a --jobs 200       # second: the dispatcher

Both need the same ``--cluster redis://host:port/db`` (default: a Redis on this machine;
``rediss://`` and a password in the URL for one elsewhere). Kill node ``b`` (Ctrl-C, or
``kill -9`` its master) while ``a`` runs, start it again: ``a`` says that ``b`` went, waits
for it, and sends the jobs that failed again (to the new incarnation), so that every job
is done once it exits. A job may then run twice (at-most-once delivery per send, and an
ask that failed with ``NodeDown`` may have been handled): these jobs can be, as jobs sent
across hosts should be.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys

import trio

from actors import (
    Actor,
    ActorGone,
    ActorNotFound,
    BrokerUnavailable,
    NodeJoined,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message

DEFAULT_CLUSTER = "redis://127.0.0.1:6379/0?prefix=cluster_work"


class Job(Message, tag="examples.cluster_work.Job"):
    id: int
    n: int


class Result(Message, tag="examples.cluster_work.Result"):
    id: int
    value: int
    pid: int


class Worker(Actor):
    """Sums the squares below ``n``: a stand-in for real work, in a process of its own."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    @handler
    async def work(self, job: Job) -> Result:
        if self.delay:
            await trio.sleep(self.delay)
        return Result(id=job.id, value=sum(i * i for i in range(job.n)), pid=os.getpid())


async def pool(cluster: str, node: str, workers: int, delay: float) -> None:
    tree = supervisor("root", children=[
        supervisor("pool", children=[
            worker(Worker, name=f"w{i}", process=True, delay=delay) for i in range(workers)
        ]),
    ])
    async with open_system(tree, cluster=cluster, node=node, name=f"cluster_work-{node}"
                           ) as system:
        print(f"pool of {workers} on node {node} (incarnation {system.nodes()[node]}) "
              "ready", flush=True)
        await system.until_signalled()


async def dispatch(cluster: str, node: str, pool_node: str, workers: int, jobs: int,
                   parallel: int) -> int:
    async with open_system(cluster=cluster, node=node, name=f"cluster_work-{node}") as system:
        refs = itertools.cycle([system.ref(f"root/pool/w{i}@{pool_node}")
                                for i in range(workers)])
        back = trio.Event()  # set each time the pool's node (re)joins
        done: dict[int, Result] = {}
        retried = 0

        async def follow() -> None:
            nonlocal back
            async for event in system.events(history=True):
                if isinstance(event, NodeJoined) and event.node == pool_node:
                    print(f"node {pool_node} is up (incarnation {event.incarnation})",
                          flush=True)
                    back.set()
                    back = trio.Event()

        async def run(job: Job) -> None:
            nonlocal retried
            while True:
                ref = next(refs)
                try:
                    with trio.fail_after(10):
                        result = await ref.ask(job, Result)
                except (ActorGone, BrokerUnavailable) as exc:  # NodeDown is an ActorGone
                    print(f"job {job.id}: {type(exc).__name__}: {exc}", flush=True)
                    retried += 1
                    if pool_node not in system.nodes():
                        await back.wait()
                    continue
                except (ActorNotFound, trio.TooSlowError):  # its pool is still starting
                    retried += 1
                    await trio.sleep(0.2)
                    continue
                done[job.id] = result
                print(f"job {job.id}: {result.value} (pid {result.pid})", flush=True)
                return

        async def runner(queue: trio.MemoryReceiveChannel[Job]) -> None:
            async for job in queue:
                await run(job)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            send, receive = trio.open_memory_channel[Job](0)
            async with trio.open_nursery() as runners:
                for _ in range(parallel):
                    runners.start_soon(runner, receive.clone())
                async with send:
                    for i in range(jobs):
                        await send.send(Job(id=i, n=1000 + i))
            nursery.cancel_scope.cancel()
        ok = len(done) == jobs
        print(f"done: {len(done)} of {jobs} jobs, {retried} sent again", flush=True)
        return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node", required=True, help="this master's node name (a, b...)")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help="the Redis URL")
    parser.add_argument("--pool-node", default="b", help="the node that runs the pool")
    parser.add_argument("--workers", type=int, default=4, help="worker processes of the pool")
    parser.add_argument("--jobs", type=int, default=100, help="jobs to dispatch, then exit")
    parser.add_argument("--parallel", type=int, default=8, help="jobs in flight at once")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each job takes more")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if arguments.node == arguments.pool_node:
        trio.run(pool, arguments.cluster, arguments.node, arguments.workers, arguments.delay)
    else:
        sys.exit(trio.run(dispatch, arguments.cluster, arguments.node, arguments.pool_node,
                          arguments.workers, arguments.jobs, arguments.parallel))


if __name__ == "__main__":
    main()
