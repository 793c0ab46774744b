"""A small supervision tree with a flaky worker; prints the lifecycle events as they happen.

    python examples/supervision_tree.py [--rounds 30] [--failure-rate 0.25] [--seed N]

The tree: a root supervisor (one_for_one, at most 5 restarts in 10 s, with backoff) over a
steady ``counter`` and a ``flaky`` worker, each in its own process. The master sends work to
the flaky one by path (the ref follows the restarts). A failing job fails in one of two
ways, and the supervisor treats them differently:

- its handler raises: the asker gets a RemoteError, the worker asks to be replaced (the
  suicide signal) and the supervisor starts the new one at once, while the old one
  drains. Backoff does not apply (``delay 0.00 s``): the old worker is still serving what
  it had in hand, and nothing is gained by waiting.
- its process dies (here it kills itself, as a segfault or the OOM killer would): the
  asker gets ActorGone, and the supervisor restarts the worker after a backoff that grows
  with each consecutive abnormal exit (0.1 s, 0.2 s, 0.4 s, ... up to 1 s), as a failed
  start would.

Every restart counts against the intensity: with too many failures the tree gives up,
and says so.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from typing import Literal

import trio

from actors import (
    Actor,
    ActorExited,
    ActorGone,
    ActorReady,
    ActorRestarted,
    ActorSuicided,
    Backoff,
    Event,
    RemoteError,
    RestartLimitExceeded,
    SupervisorGaveUp,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message


class Work(Message):
    n: int


class Done(Message):
    n: int
    pid: int


def failure(seed: int, n: int, failure_rate: float) -> Literal["raise", "die"] | None:
    """Whether job ``n`` fails, and how: decided by the seed and the job, whichever process
    runs it (half of the failures raise, the other half kill the worker's process)."""
    draw = random.Random(f"{seed}:{n}").random()
    if draw >= failure_rate:
        return None
    return "raise" if draw < failure_rate / 2 else "die"


class Flaky(Actor):
    def __init__(self, failure_rate: float, seed: int) -> None:
        self.failure_rate = failure_rate
        self.seed = seed

    @handler
    async def work(self, msg: Work) -> Done:
        how = failure(self.seed, msg.n, self.failure_rate)
        if how == "raise":
            raise RuntimeError(f"flaky failed on job {msg.n}")
        if how == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return Done(n=msg.n, pid=os.getpid())


class Counter(Actor):
    def __init__(self) -> None:
        self.count = 0

    @handler
    async def work(self, msg: Work) -> Done:
        if msg.n >= 0:  # a negative job only asks for the count
            self.count += 1
        return Done(n=self.count, pid=os.getpid())


def describe(event: Event) -> str:
    if isinstance(event, ActorReady):
        return f"ready      {event.path} (pid {event.pid})"
    if isinstance(event, ActorExited):
        return f"exited     {event.path} (pid {event.pid}): {event.reason.describe()}"
    if isinstance(event, ActorSuicided):
        return f"suicide    {event.path} (pid {event.pid}): {event.reason.detail}"
    if isinstance(event, ActorRestarted):
        return (f"restarting {event.path} after {event.reason.kind} "
                f"(restart {event.restarts}, delay {event.delay:.2f} s)")
    if isinstance(event, SupervisorGaveUp):
        return f"GAVE UP    {event.path}: {event.restarts} restarts within {event.within} s"
    return f"{type(event).__name__:10} {event.path}"


async def print_events(events: trio.MemoryReceiveChannel[Event]) -> None:
    async for event in events:
        print(f"  [event] {describe(event)}", flush=True)


async def main(rounds: int, failure_rate: float, seed: int) -> None:
    tree = supervisor(
        "root", strategy="one_for_one", max_restarts=5, within=10.0,
        backoff=Backoff(initial=0.1, factor=2.0, cap=1.0),
        children=[
            worker(Counter, name="counter", process=True),
            worker(Flaky, name="flaky", process=True, failure_rate=failure_rate, seed=seed),
        ],
    )
    try:
        async with open_system(tree) as system, trio.open_nursery() as nursery:
            nursery.start_soon(print_events, system.events(history=True))
            flaky = system.ref("root/flaky")
            counter = system.ref("root/counter")
            for n in range(rounds):
                try:
                    done = await flaky.ask(Work(n=n), Done)
                    print(f"job {n}: done by pid {done.pid}", flush=True)
                except RemoteError as exc:  # it raised: the worker is replaced at once
                    print(f"job {n}: {exc.type_name}: {exc.message}", flush=True)
                except ActorGone:  # its process died: restarted after the backoff
                    print(f"job {n}: its worker died", flush=True)
                await counter.tell(Work(n=n))
                await trio.sleep(0.1)
            total = await counter.ask(Work(n=-1), Done)
            print(f"counter saw {total.n} jobs", flush=True)
            nursery.cancel_scope.cancel()
    except RestartLimitExceeded as exc:
        print(f"the tree gave up: {exc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--failure-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30),
                        help="which jobs fail (the same seed fails the same jobs)")
    arguments = parser.parse_args()
    trio.run(main, arguments.rounds, arguments.failure_rate, arguments.seed)
