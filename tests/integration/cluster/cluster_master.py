"""A master of a cluster for the tests that kill one or cut it off:
``python -m tests.integration.cluster.cluster_master --cluster URL --node NAME [--peer P]``.

It runs ``echo`` (an Echo actor), prints ``ready <incarnation>``, then, with ``--peer``,
asks ``echo@P`` every 50 ms and prints each change of outcome, flushed: ``ok`` or
``error <type>`` (``NodeDown``, ``BrokerUnavailable``...). It runs until killed or
SIGTERMed.
"""

from __future__ import annotations

import argparse
import logging

import trio

from actors import ActorError, open_system
from tests.integration.cluster.actors_for_tests import Echo, Ping, Pong


async def main(arguments: argparse.Namespace) -> None:
    async with open_system(cluster=arguments.cluster, node=arguments.node,
                           name=f"cluster-master-{arguments.node}", control=False,
                           node_ttl=arguments.ttl, store_timeout=arguments.ttl) as system:
        await system.spawn(Echo, name="echo")
        print(f"ready {system.nodes()[arguments.node]}", flush=True)
        if arguments.peer is None:
            await system.until_signalled()
            return
        peer = system.ref(f"echo@{arguments.peer}")
        last = ""
        while True:
            try:
                with trio.fail_after(arguments.ttl * 4):
                    await peer.ask(Ping(n=1), Pong)
                outcome = "ok"
            except ActorError as exc:
                outcome = f"error {type(exc).__name__}"
            except trio.TooSlowError:
                outcome = "error hang"  # what must never be: a test fails on it
            if outcome != last:
                print(outcome, flush=True)
                last = outcome
            await trio.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--peer")
    parser.add_argument("--ttl", type=float, default=1.0)
    logging.basicConfig(level=logging.CRITICAL)
    trio.run(main, parser.parse_args())
