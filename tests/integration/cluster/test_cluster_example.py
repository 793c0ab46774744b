"""examples/cluster_work.py as a user runs it: two masters, the pool's master killed and
started again while the dispatcher runs; every job is done."""

from __future__ import annotations

import signal
import subprocess
import sys

import trio

from tests.integration.cluster.test_cluster_faults import finish, next_line
from tests.processes import wait_exited
from tests.repository import ROOT
from tests.waiting import TIMEOUT

EXAMPLE = ROOT / "examples" / "cluster_work.py"


def run(cluster: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(EXAMPLE), "--cluster", cluster, *arguments],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def until(process: subprocess.Popen[str], start: str) -> str:
    while True:
        line = await next_line(process)
        if line.startswith(start):
            return line


async def test_the_dispatcher_survives_the_pool_node_restarting(cluster: str) -> None:
    with trio.fail_after(TIMEOUT):
        pool = run(cluster, "--node", "b", "--workers", "2", "--delay", "0.05")
        dispatcher = None
        try:
            await until(pool, "pool of 2 on node b")
            dispatcher = run(cluster, "--node", "a", "--jobs", "60", "--parallel", "4")
            await until(dispatcher, "job ")
            pool.send_signal(signal.SIGKILL)
            await wait_exited(pool.pid)
            await finish(pool)
            await until(dispatcher, "job ")  # NodeDown (or ActorGone) for what was in flight
            pool = run(cluster, "--node", "b", "--workers", "2")
            await until(pool, "pool of 2 on node b")
            last = await until(dispatcher, "done:")
            assert last.startswith("done: 60 of 60 jobs"), last
            assert await trio.to_thread.run_sync(dispatcher.wait) == 0
        finally:
            if dispatcher is not None:
                await finish(dispatcher)
            await finish(pool)
