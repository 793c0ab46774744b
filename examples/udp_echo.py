"""A UDP echo server: one socket owned by the master, datagrams answered by worker processes.

    python examples/udp_echo.py [--host 127.0.0.1] [--port 7001] [--workers N]
                                [--policy shared|reuseport] [--name udp_echo] [--check N]

Prints one line once every acceptor is ready (the address, the policy, the worker pids),
then serves until Ctrl-C or SIGTERM. With ``--check N`` it sends N datagrams itself, from 8
clients at once, prints how many came back and from which workers, and exits (status 1 if
any was lost). Try it by hand with ``nc -u 127.0.0.1 7001``; watch it with
``trio-actors status udp_echo``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections import Counter

import trio

from actors import (
    BindError,
    DatagramAcceptor,
    RestartLimitExceeded,
    SystemNameTaken,
    listener,
    open_system,
    supervisor,
)

POLICIES = ("shared", "reuseport")
CLIENTS = 8


class Echo(DatagramAcceptor):
    """Sends every datagram back to its sender, with the pid of the worker that answered."""

    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        return f"{os.getpid()} ".encode() + data


async def check(host: str, port: int, count: int) -> Counter[int]:
    """Send ``count`` datagrams from ``CLIENTS`` sockets, each waiting for its answer: how
    many each worker answered (a datagram not answered within 5 s counts as lost)."""
    answered: Counter[int] = Counter()

    async def client(n: int) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(n, count, CLIENTS):
                payload = f"datagram {i}".encode()
                await sock.sendto(payload, (host, port))
                with trio.move_on_after(5):
                    pid, _, echoed = (await sock.recv(65535)).partition(b" ")
                    if echoed == payload:
                        answered[int(pid)] += 1

    async with trio.open_nursery() as nursery:
        for n in range(CLIENTS):
            nursery.start_soon(client, n)
    return answered


async def serve(host: str, port: int, workers: int, policy: str, name: str,
                count: int | None) -> bool:
    tree = supervisor("root", children=[
        listener("echo", host=host, port=port, transport="udp", acceptor=Echo, count=workers,
                 policy=policy),  # type: ignore[arg-type]
    ])
    async with open_system(tree, name=name) as system:
        echo = system.listener("root/echo")
        pids = sorted(stats.pid for stats in await system.acceptor_stats("root/echo"))
        print(f"udp_echo listening on {echo.host}:{echo.port} master={os.getpid()} "
              f"policy={policy} workers={len(pids)} pids={','.join(map(str, pids))}",
              flush=True)
        if count is None:
            await trio.sleep_forever()  # until SIGTERM or Ctrl-C (the runtime handles them)
        target = "127.0.0.1" if echo.host in ("0.0.0.0", "") else str(echo.host)
        answered = await check(target, int(echo.port), count)
        total = sum(answered.values())
        spread = ", ".join(f"{pid}: {n}" for pid, n in sorted(answered.items()))
        print(f"echoed {total}/{count} datagrams from {CLIENTS} clients ({spread})",
              flush=True)
        return total == count
    return True  # (stopped by a signal)


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
    parser.add_argument("--port", type=port, default=7001, help="0 picks a free port")
    parser.add_argument("--workers", type=positive, default=os.cpu_count() or 1)
    parser.add_argument("--policy", choices=POLICIES, default="shared")
    parser.add_argument("--name", default="udp_echo",
                        help="the system's name, for trio-actors (one running system each)")
    parser.add_argument("--check", type=positive, default=None, metavar="N",
                        help="send N datagrams, print what came back, and exit")
    arguments = parser.parse_args()
    try:
        ok = trio.run(serve, arguments.host, arguments.port, arguments.workers,
                      arguments.policy, arguments.name, arguments.check)
    except (RestartLimitExceeded, BindError, SystemNameTaken) as exc:
        print(f"udp_echo: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
