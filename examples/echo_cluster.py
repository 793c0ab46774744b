"""An echo server: one listening socket in the master, connections served by worker processes.

    python examples/echo_cluster.py [--host 127.0.0.1] [--port 7000] [--workers N]
                                    [--policy round_robin|least_busy|shared|reuseport]

Prints one line once every acceptor is ready (the address, the policy, the worker pids).
Ctrl-C or SIGTERM drains the connections and exits 0; SIGHUP replaces the workers one at a
time (a rolling reload) without dropping a connection. A port already in use ends it at
once with a message and exit status 1. Try it with ``examples/echo_client.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from actors import Acceptor, BindError, RestartLimitExceeded, listener, open_system, supervisor

POLICIES = ("round_robin", "least_busy", "shared", "reuseport")


class Echo(Acceptor):
    """Sends back every byte it receives, until the client closes (or, between two
    requests, until the acceptor drains: an idle client does not hold up a shutdown)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        while (data := await self.receive(stream)) is not None:
            await stream.send_all(data)


async def serve(host: str, port: int, workers: int, policy: str) -> None:
    tree = supervisor("root", children=[
        listener("echo", host=host, port=port, acceptor=Echo, count=workers,
                 policy=policy),  # type: ignore[arg-type]
    ])
    async with open_system(tree) as system:
        echo = system.listener("root/echo")
        pids = sorted(stats.pid for stats in await system.acceptor_stats("root/echo"))
        print(f"echo_cluster listening on {echo.host}:{echo.port} master={os.getpid()} "
              f"policy={policy} workers={len(pids)} pids={','.join(map(str, pids))}",
              flush=True)
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for number in signals:
                if number == signal.SIGHUP:
                    print("reloading the workers one at a time", flush=True)
                    await system.reload("root/echo")
                    pids = sorted(s.pid for s in await system.acceptor_stats("root/echo"))
                    print(f"reloaded: pids={','.join(map(str, pids))}", flush=True)
                else:
                    print(f"{signal.Signals(number).name}: draining and stopping", flush=True)
                    break


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=7000, help="0 picks a free port")
    parser.add_argument("--workers", type=positive, default=os.cpu_count() or 1)
    parser.add_argument("--policy", choices=POLICIES, default="round_robin")
    arguments = parser.parse_args()
    try:
        trio.run(serve, arguments.host, arguments.port, arguments.workers, arguments.policy)
    except RestartLimitExceeded as exc:
        print(f"echo_cluster: {exc}", file=sys.stderr)
        return 1
    except BindError as exc:
        print(f"echo_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
