"""Starting a worker process, up to its actor being ready.

The parent creates a socketpair and starts the worker (through a :class:`Spawner`) with the
child end, its output on pipes the parent relays line by line; then they handshake: the
worker says Hello (protocol version, pid), the parent answers Start (class path, JSON
arguments, where the main script is), and the worker answers Ready once its actor's
``setup`` returned (or StartFailed). All of it within the start's deadline.
"""

from __future__ import annotations

import os
import socket

import trio

from protocol import PROTOCOL_VERSION, Message, VersionMismatch

from .._base._control import Failure, Hello, Ready, Start, StartFailed, Stopping, Suicide
from .._base._errors import SpawnError
from .._base._events import ExitKind, ExitReason
from .._messaging._link import Link
from ._processes import OutputSink, SpawnedProcess, Spawner, output_pipes, relay_lines

__all__ = ["failure_reason", "handshake", "spawn", "timed_out"]


async def spawn(
    spawner: Spawner,
    *,
    path: str,
    deadline: float,
    start_timeout: float,
    output: OutputSink | None,
    relays: trio.Nursery,
) -> tuple[SpawnedProcess, socket.socket]:
    """Start the worker of the actor at ``path`` by ``deadline``: its process, and our end
    of its channel (the caller closes it).

    With ``output``, what the worker prints goes there line by line (relayed by tasks in
    ``relays``); else it writes where this process writes. A start not done by the
    deadline is a :class:`SpawnError`; out of fds (EMFILE), the ``OSError`` is raised as
    it is. Either way nothing is left open."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pipes = None
    try:
        try:
            pipes = None if output is None else output_pipes()
        except BaseException:
            child_sock.close()
            raise
        process = None
        with trio.move_on_at(deadline):
            try:
                process = await spawner.start(
                    child_sock.fileno(), None if pipes is None else (pipes[0][1], pipes[1][1])
                )
            finally:
                child_sock.close()
                if pipes is not None:  # the worker has its own copies now
                    os.close(pipes[0][1])
                    os.close(pipes[1][1])
        if process is None:
            raise timed_out(path, start_timeout)
        if pipes is not None:
            assert output is not None
            relays.start_soon(relay_lines, pipes[0][0], output, path, process.pid, "stdout")
            relays.start_soon(relay_lines, pipes[1][0], output, path, process.pid, "stderr")
            pipes = None
        return process, parent_sock
    except BaseException:
        parent_sock.close()
        if pipes is not None:  # the start failed before anyone read them
            os.close(pipes[0][0])
            os.close(pipes[1][0])
        raise


def timed_out(path: str, start_timeout: float) -> SpawnError:
    """The error of a worker not ready within its start timeout."""
    error = SpawnError(f"actor {path} did not become ready within {start_timeout} s")
    error.reason = ExitReason(kind="timeout", detail=f"not ready within {start_timeout} s")
    return error


async def handshake(
    link: Link, start: Start, *, deadline: float, start_timeout: float
) -> str | SpawnError:
    """Hello, ``start``, then Ready (or StartFailed), by ``deadline``: the address of the
    worker's actor once it is ready, or the error of a failed start (returned, not raised,
    so that it leaves the caller's nurseries as itself)."""
    with trio.move_on_at(deadline):
        try:
            return await _handshake(link, start)
        except SpawnError as exc:
            return exc
    return timed_out(start.path, start_timeout)


async def _handshake(link: Link, start: Start) -> str:
    hello = await _next_control(link, start.path)
    if not isinstance(hello, Hello):
        raise SpawnError(f"worker {start.node} began with {type(hello).__name__}, not Hello")
    if hello.version != PROTOCOL_VERSION:
        raise SpawnError(str(VersionMismatch(PROTOCOL_VERSION, hello.version)))
    link.send_control(start)
    while True:
        message = await _next_control(link, start.path)
        if isinstance(message, Ready):
            if not link.owns(message.address.partition("/")[0]):
                raise SpawnError(f"worker {start.node} claims address {message.address}")
            return message.address
        if isinstance(message, StartFailed | Suicide | Stopping) and (
            failure := message.failure
        ) is not None:
            # A failure of any kind before ready is a failed start.
            text = f"actor {start.path} failed to start: {failure.type_name}: {failure.message}"
            if failure.traceback:
                text += "\n\nWorker traceback:\n" + failure.traceback.rstrip()
            error = SpawnError(text)
            error.reason = failure_reason("crashed", failure)
            raise error
        if not isinstance(message, Stopping):
            raise SpawnError(f"worker {start.node} sent {type(message).__name__} "
                             "before it was ready")


async def _next_control(link: Link, path: str) -> Message:
    try:
        return await link.control_received.receive()
    except (trio.EndOfChannel, trio.ClosedResourceError):
        raise SpawnError(
            f"the worker for {path} went away before it was ready "
            f"({link.down_reason or 'its channel closed'})"
        ) from link.error


def failure_reason(kind: ExitKind, failure: Failure) -> ExitReason:
    """The exit reason that a failure the worker reported gives (``kind``: how it ended)."""
    return ExitReason(
        kind=kind, error_type=failure.type_name, detail=failure.message,
        traceback=failure.traceback,
    )
