"""The master's signals: SIGTERM and SIGINT stop the system in order (a second SIGINT at
once), SIGHUP reloads. ``open_system`` starts ``obey_signals`` in its nursery."""

from __future__ import annotations

import logging
import signal
from typing import Protocol

import trio

from .._base._errors import ReloadFailed

__all__ = ["obey_signals"]

log = logging.getLogger("actors")


class Signalled(Protocol):
    """What the signals act on: the ``ActorSystem``."""

    nursery: trio.Nursery
    stopped_by: str | None

    def request_stop(self, why: str = "stop") -> None: ...

    def kill_now(self) -> None: ...

    async def reload(self, path: str | None = None) -> list[str]: ...


async def obey_signals(
    system: Signalled, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """SIGTERM/SIGINT: stop in order; a second SIGINT: at once. SIGHUP: reload."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for number in signals:
            what = signal.Signals(number).name
            if number == signal.SIGHUP:
                system.nursery.start_soon(_reload_on_signal, system)
            elif system.stopped_by is None:
                log.warning("%s: stopping (every actor drains, then the system exits)", what)
                system.request_stop(what)
            elif number == signal.SIGINT:
                log.warning("%s again: stopping at once", what)
                system.kill_now()


async def _reload_on_signal(system: Signalled) -> None:
    try:
        await system.reload()
    except ReloadFailed:
        pass  # published and logged (ReloadAborted); the old workers serve on
