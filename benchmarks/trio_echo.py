"""A hand-written trio echo server: the no-runtime baseline of ``echo.py``.

    python benchmarks/trio_echo.py [--host 127.0.0.1] [--port 0] [--workers 2]

The parent binds and listens, then forks ``--workers`` children that share the listening
socket; each child runs ``trio.serve_listeners`` on it (every child accepts on the same
socket, as Node's SCHED_NONE or our ``shared`` policy do, with no master in the path and no
runtime: no actors, no supervision, no hand-off, no validation). The handler is the same loop
as ``examples/echo_cluster.py``'s ``Echo.handle``, and a connection the client resets ends
quietly.

Prints ``trio_echo listening on HOST:PORT workers=N pids=...`` once every child is accepting.
SIGTERM or SIGINT stops the children (SIGTERM), reaps them and exits 0; a child that dies on
its own makes the parent stop the others and exit 1. Children die with the parent
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys

import trio


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def _handle(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client reset the connection


async def _serve(sock: socket.socket, ready_fd: int) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, _handle, [listener])
        os.write(ready_fd, b"r")
        os.close(ready_fd)


def _child(sock: socket.socket, ready_fd: int, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        trio.run(_serve, sock, ready_fd)
    finally:
        os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.setblocking(False)
    host, port = sock.getsockname()[:2]

    # Block the stop signals before forking: the parent waits for them with sigwait().
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    children: list[int] = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
            os.close(read_fd)
            _child(sock, write_fd, parent)
        children.append(pid)
    os.close(write_fd)
    sock.close()  # the children have it

    ready = 0
    while ready < len(children):
        chunk = os.read(read_fd, 16)
        if not chunk:
            break  # a child died before it was ready
        ready += len(chunk)
    os.close(read_fd)
    status = 0
    if ready == len(children):
        print(
            f"trio_echo listening on {host}:{port} workers={len(children)} "
            f"pids={','.join(map(str, sorted(children)))}",
            flush=True,
        )
        while True:
            number = signal.sigwait(stop)
            if number != signal.SIGCHLD:
                break
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid in children:
                print(f"trio_echo: worker {pid} died", file=sys.stderr, flush=True)
                children.remove(pid)
                status = 1
                break
    else:
        print("trio_echo: a worker died while starting", file=sys.stderr, flush=True)
        status = 1
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return status


if __name__ == "__main__":
    sys.exit(main())
