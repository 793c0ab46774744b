"""An echo server: one listening socket in the master, connections served by worker processes.

    python examples/echo_cluster.py [--host 127.0.0.1] [--port 7000] [--workers N]
                                    [--policy round_robin|least_busy|shared|reuseport]
                                    [--name echo_cluster]

Prints one line once every acceptor is ready (the address, the master's pid, the policy,
the worker pids). Ctrl-C or SIGTERM to the master drains the connections and exits 0 (a
second Ctrl-C stops at once); SIGHUP (or ``trio-actors reload echo_cluster``) replaces the
workers one at a time with the code on disk, without dropping a connection. A port already
in use, or a name (``--name``) another running system has, ends it at once with one line
and exit status 1. Try it with ``examples/echo_client.py``, and watch it with
``trio-actors status``.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

import trio

from actors import (
    Acceptor,
    BindError,
    ReloadAborted,
    RestartLimitExceeded,
    SystemNameTaken,
    SystemReloaded,
    listener,
    open_system,
    supervisor,
)

POLICIES = ("round_robin", "least_busy", "shared", "reuseport")


class Echo(Acceptor):
    """Sends back every byte it receives, until the client closes.

    An echo carries nothing from one request to the next, so when this acceptor drains (a
    reload, a scale-down) its idle connections go on in another acceptor: the client never
    sees the reload. A protocol with state per connection (a login, a selected database)
    leaves ``stateless_connections`` off: its idle connections are then closed."""

    stateless_connections = True

    async def handle(self, stream: trio.SocketStream) -> None:
        while (data := await self.receive(stream)) is not None:
            await stream.send_all(data)


async def serve(host: str, port: int, workers: int, policy: str, name: str) -> None:
    tree = supervisor("root", children=[
        listener("echo", host=host, port=port, acceptor=Echo, count=workers,
                 policy=policy),  # type: ignore[arg-type]
    ])
    # The runtime handles the signals: SIGTERM or Ctrl-C drains and stops (a second Ctrl-C
    # stops at once), SIGHUP reloads the workers with the code on disk; and so does
    # `trio-actors reload echo_cluster`.
    async with open_system(tree, name=name) as system:
        events = system.events()
        echo = system.listener("root/echo")
        pids = sorted(stats.pid for stats in await system.acceptor_stats("root/echo"))
        print(f"echo_cluster listening on {echo.host}:{echo.port} master={os.getpid()} "
              f"policy={policy} workers={len(pids)} pids={','.join(map(str, pids))}",
              flush=True)
        async for event in events:
            if isinstance(event, SystemReloaded):
                pids = sorted(s.pid for s in await system.acceptor_stats("root/echo"))
                print(f"reloaded: pids={','.join(map(str, pids))}", flush=True)
            elif isinstance(event, ReloadAborted):
                print(f"reload stopped ({event.error}): the old workers serve on", flush=True)
    print(f"stopped ({system.stopped_by})", flush=True)


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


def in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` is taken, as the listener would find it when it binds."""
    if port == 0:
        return False  # any free port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener
            probe.bind(address)
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=7000, help="0 picks a free port")
    parser.add_argument("--workers", type=positive, default=os.cpu_count() or 1)
    parser.add_argument("--policy", choices=POLICIES, default="round_robin")
    parser.add_argument("--name", default="echo_cluster",
                        help="the system's name, for trio-actors (one running system each)")
    arguments = parser.parse_args()
    try:
        trio.run(serve, arguments.host, arguments.port, arguments.workers, arguments.policy,
                 arguments.name)
    except SystemNameTaken:
        # The name is checked before the port is bound: a second copy started as the first
        # was would hear of its name only. Both clashes, and both ways out, in one line.
        clash = f"a system named {arguments.name!r} is already running"
        fix = "--name"
        if in_use(arguments.host, arguments.port):
            clash += f" and {arguments.host}:{arguments.port} is already in use"
            fix += " and --port"
        print(f"echo_cluster: {clash}: start this one with another {fix}", file=sys.stderr)
        return 1
    except (RestartLimitExceeded, BindError) as exc:
        print(f"echo_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
