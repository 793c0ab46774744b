"""``Publisher``: where the lifecycle events of a process go.

The master owns the system's event sink (``system.events()`` reads it); every other process
sends its events up the tree in an :class:`EventReport`, and each process on the way checks
that the worker it came from may report on that path before passing it on.
"""

from __future__ import annotations

import logging

from protocol import ProtocolError, registry

from .._base._control import EventReport
from .._base._events import ActorExited, ActorReady, ActorStarted, Event, EventSink
from ._link import Link, Links

__all__ = ["Publisher"]

log = logging.getLogger("actors")


class Publisher:
    """Publishes this process's events: to ``events`` in the master, up ``links.parent``
    elsewhere (``links`` is set once by the process's :class:`Router`)."""

    def __init__(self, events: EventSink | None) -> None:
        self.events = events
        self.links: Links | None = None
        # Instances reported from behind each child link that started and hold no name (a
        # supervisor, an actor still in its setup): if the link's process dies, the names
        # it drops say nothing of them, so their exits are reported from here (`unnamed`).
        self._unnamed: dict[Link, dict[tuple[str, int | None], None]] = {}

    def publish(self, event: Event) -> None:
        """Report a lifecycle event: to ``events()`` in the master, up the tree elsewhere."""
        if self.events is not None:
            self.events.publish(event)
            return
        parent = None if self.links is None else self.links.parent
        if parent is not None:
            parent.notify(EventReport(tag=event.message_tag, body=event.model_dump_json()))

    def on_report(self, link: Link, report: EventReport) -> None:
        """An event from the worker behind ``link`` (its handler in the control table)."""
        try:
            event = registry.decode(report.tag, report.body.encode())
        except ProtocolError as exc:
            log.error("node %s reported an event that cannot be read: %s", link.peer, exc)
            return
        if not isinstance(event, Event) or not link.covers(event.path):
            log.error("node %s (%s) may not report %r: refused", link.peer, link.subtree,
                      event)
            return
        self._track(link, event)
        self.publish(event)

    def _track(self, link: Link, event: Event) -> None:
        if isinstance(event, ActorStarted):
            self._unnamed.setdefault(link, {})[(event.path, event.pid)] = None
        elif isinstance(event, ActorExited) or (
                isinstance(event, ActorReady) and event.address is not None):
            unnamed = self._unnamed.get(link)
            if unnamed is not None:
                unnamed.pop((event.path, event.pid), None)

    def unnamed(self, link: Link) -> list[tuple[str, int | None]]:
        """Forget ``link`` (it is down): the instances behind it (path, pid) that started,
        have not ended, and hold no name."""
        return list(self._unnamed.pop(link, {}))
