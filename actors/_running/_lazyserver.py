"""The fork server a system uses: started with its first worker, supervised (a server that
dies is started again, with backoff, and meanwhile workers start cold), and renewed by a
reload (a fresh server imports the code as it is on disk)."""


from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._base._errors import SpawnError
from ._forkserver import ForkServer, open_fork_server
from ._processes import (
    ColdSpawner,
    OutputSink,
    ServerFork,
    SpawnedProcess,
)

__all__ = ["LazyForkServer", "open_lazy_fork_server"]

log = logging.getLogger("actors")


class LazyForkServer:
    """A :class:`Spawner` that runs a fork server from the first worker on, supervised.

    A system that never starts a process never pays for a fork server (a process and ~0.3 s
    of imports). If the server dies, running workers carry on (they die with the master,
    not with it); new workers start cold until a new server is up (restarted with a backoff
    of 0.5 s doubling to 30 s). :meth:`renew` replaces the server with one that imports the
    code as it is on disk now (a reload). Get one from :func:`open_lazy_fork_server`.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        preload: list[str],
        output: OutputSink | None = None,
        fork: ServerFork | None = None,
    ) -> None:
        self._nursery = nursery
        self._preload = preload
        self._output = output
        self._fork = fork  # for the first server only: a later one imports the code anew
        self._server: ForkServer | None = None
        self._first: trio.Event | None = None
        self._closing = trio.Event()
        self._cold = ColdSpawner()
        self._generation = 0
        self._scopes: set[trio.CancelScope] = set()
        self.restarts = 0

    @property
    def started(self) -> bool:
        return self._first is not None

    async def start(self, fd: int, output: tuple[int, int] | None = None) -> SpawnedProcess:
        if self._closing.is_set():
            raise SpawnError("the system is closing: no new worker starts")
        if self._first is None:
            self._first = trio.Event()
            self._nursery.start_soon(self._supervise, self._first, self._generation)
        await self._first.wait()
        server = self._server
        if server is not None and server.broken is None:
            try:
                return await server.start(fd, output)
            except SpawnError:
                if server.broken is None:
                    raise  # it is up but could not fork: that is this start's failure
        # No fork server now (it died and is not back yet): a fresh interpreter.
        return await self._cold.start(fd, output)

    async def renew(self) -> None:
        """Start a new fork server from the code on disk; once it imported everything,
        new workers come from it (the old one lives on while its workers do).

        Raises :class:`SpawnError` (the old server stays) if the code does not import."""
        if self._closing.is_set():
            raise SpawnError("the system is closing")
        self._generation += 1
        first = trio.Event()
        ready: list[ForkServer] = []
        self._nursery.start_soon(self._supervise, first, self._generation, ready)
        await first.wait()
        server = ready[0] if ready else None
        if server is None or server.broken is not None:
            raise SpawnError("the new fork server did not start")
        with trio.move_on_after(_PRELOAD_TIMEOUT):
            await server.preloaded.wait()
        error = server.preload_error if server.preloaded.is_set() else (
            f"it did not finish importing within {_PRELOAD_TIMEOUT} s"
        )
        if error is not None:
            self._generation -= 1  # the old one stays current
            server.retire()
            raise SpawnError(f"the new code does not import: {error}")
        previous, self._server = self._server, server
        if previous is not None:
            previous.retire()

    async def _supervise(
        self, first: trio.Event, generation: int, ready: list[ForkServer] | None = None
    ) -> None:
        """Run the fork server of one generation: restart it when it dies (while it is the
        current one); end once it is retired and its last worker is gone.

        Shielded until the system closes: a cancellation of the system's block reaches its
        workers' handles, which must still be told of their workers' exits by the server
        (and closing the server early would leave them to nobody)."""
        with trio.CancelScope(shield=True) as scope:
            self._scopes.add(scope)
            try:
                await self._run_generation(first, generation, ready)
            finally:
                self._scopes.discard(scope)

    async def _run_generation(
        self, first: trio.Event, generation: int, ready: list[ForkServer] | None
    ) -> None:
        delay = _RESTART_DELAY
        while not self._closing.is_set():
            try:
                fork, self._fork = self._fork, None
                async with open_fork_server(self._preload, output=self._output,
                                            fork=fork) as server:
                    if ready is not None and not ready:
                        ready.append(server)  # renew() decides whether it becomes current
                    elif generation == self._generation:
                        self._server = server  # (a restart of the current generation)
                    first.set()
                    up_since = trio.current_time()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_cancel_when, self._closing, nursery.cancel_scope)
                        nursery.start_soon(_cancel_when, server.done_with, nursery.cancel_scope)
                        await server.gone.wait()
                        nursery.cancel_scope.cancel()
                    if server.done_with.is_set() and not server.gone.is_set():
                        return  # retired, and its last worker has exited
                    if trio.current_time() - up_since > _STABLE_AFTER:
                        delay = _RESTART_DELAY
            except Exception as exc:
                log.error("the fork server could not start: %r", exc)
            finally:
                if self._server is not None and self._server.broken is not None:
                    self._server = None
                first.set()
            if self._closing.is_set() or generation != self._generation:
                return  # only the current generation is restarted
            log.error("the fork server is gone: workers start cold until a new one is up "
                      "(in %.1f s)", delay)
            with trio.move_on_after(delay):
                await self._closing.wait()
            delay = min(delay * 2, _MAX_RESTART_DELAY)
            self.restarts += 1


_PRELOAD_TIMEOUT = 60.0
_RESTART_DELAY = 0.5
_MAX_RESTART_DELAY = 30.0
_STABLE_AFTER = 60.0


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@asynccontextmanager
async def open_lazy_fork_server(
    preload: list[str] | None = None,
    *,
    output: OutputSink | None = None,
    fork: ServerFork | None = None,
) -> AsyncIterator[LazyForkServer]:
    """A :class:`LazyForkServer` for the duration of the block; leaving it stops the fork
    server, if one was started (after the block's workers are gone). ``output``: where
    each server's own output goes (see :func:`open_fork_server`); ``fork``: how the first
    server may be a fork of this process (a restarted or renewed one never is)."""
    async with trio.open_nursery() as nursery:
        lazy = LazyForkServer(nursery, list(preload or []), output, fork)
        try:
            yield lazy
        finally:
            lazy._closing.set()  # the system's workers are gone: the servers may go
            for scope in list(lazy._scopes):
                scope.cancel()
