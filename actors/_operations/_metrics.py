"""Prometheus metrics of a running system (``open_system(metrics=(host, port))``).

Served in the Prometheus text format by ``prometheus-client``'s exposition: each scrape
takes the system's status (the same figures as ``trio-actors status``) and the counts of
exits by reason, and renders them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Protocol

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .._running._mailbox import ASK_BUCKETS
from ._protocol import ActorStatus

__all__ = ["Measurable", "open_metrics_server", "render"]

log = logging.getLogger("actors")

_MAX_REQUEST = 8192


class Measurable(Protocol):
    """What the metrics need of the system."""

    async def status(self) -> list[ActorStatus]: ...

    @property
    def exits(self) -> dict[str, int]: ...


class _Snapshot:
    """A collector over one status snapshot (prometheus-client collects synchronously)."""

    def __init__(self, rows: list[ActorStatus], exits: dict[str, int]) -> None:
        self.rows = rows
        self.exits = exits

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily("actors_restarts", "Restarts of a supervised actor",
                                       labels=["path"])
        exits = CounterMetricFamily("actors_exits", "Actor instances that ended, by reason",
                                    labels=["reason"])
        mailbox = GaugeMetricFamily("actors_mailbox_depth", "Messages waiting in a mailbox",
                                    labels=["path"])
        handled = CounterMetricFamily("actors_messages", "Messages an actor handled",
                                      labels=["path"])
        asks = CounterMetricFamily("actors_asks", "Asks an actor answered", labels=["path"])
        latency = HistogramMetricFamily("actors_ask_handling_seconds",
                                        "Time an actor's handlers took on asks",
                                        labels=["path"])
        opened = GaugeMetricFamily("actors_connections_open", "Open connections",
                                   labels=["path"])
        total = CounterMetricFamily("actors_connections", "Connections served",
                                    labels=["path"])
        rss = GaugeMetricFamily("actors_resident_memory_bytes", "Resident memory of a worker",
                                labels=["path", "pid"])
        cpu = GaugeMetricFamily("actors_cpu_percent", "CPU use of a worker", labels=["path"])
        for kind, count in sorted(self.exits.items()):
            exits.add_metric([kind], count)
        for row in self.rows:
            path = [row.path]
            if row.kind in ("worker", "acceptor", "actor", "supervisor", "listener", "command"):
                restarts.add_metric(path, row.restarts)
            if row.mailbox is not None:
                mailbox.add_metric(path, row.mailbox)
            if row.handled is not None:
                handled.add_metric(path, row.handled)
            if row.asks is not None:
                asks.add_metric(path, row.asks)
            if row.ask_buckets is not None and row.ask_seconds is not None:
                cumulative, buckets = 0, []
                for bound, count in zip([*map(str, ASK_BUCKETS), "+Inf"], row.ask_buckets,
                                        strict=True):
                    cumulative += count
                    buckets.append((bound, float(cumulative)))
                latency.add_metric(path, buckets, row.ask_seconds)
            if row.open is not None:
                opened.add_metric(path, row.open)
            if row.total is not None:
                total.add_metric(path, row.total)
            if row.rss is not None:
                rss.add_metric([row.path, str(row.pid)], row.rss)
            if row.cpu is not None:
                cpu.add_metric(path, row.cpu)
        yield from (restarts, exits, mailbox, handled, asks, latency, opened, total, rss, cpu)


async def render(system: Measurable) -> bytes:
    """The system's metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(await system.status(), dict(system.exits)))
    return generate_latest(registry)


@asynccontextmanager
async def open_metrics_server(system: Measurable, address: tuple[str, int]
                              ) -> AsyncIterator[int]:
    """Serve ``GET /metrics`` on ``address`` for the duration of the block (the port)."""
    listeners = await trio.open_tcp_listeners(address[1], host=address[0])
    port = int(listeners[0].socket.getsockname()[1])
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, _handler(system), [listener])
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


def _handler(system: Measurable):  # type: ignore[no-untyped-def]
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) < 2 or line[0] != b"GET":
                await _respond(stream, 405, b"only GET\n", "text/plain")
            elif line[1].split(b"?")[0] not in (b"/metrics", b"/"):
                await _respond(stream, 404, b"see /metrics\n", "text/plain")
            else:
                try:
                    body = await render(system)
                except Exception as exc:  # a scrape must never take the system down
                    log.error("rendering metrics failed: %r", exc)
                    await _respond(stream, 500, b"metrics failed\n", "text/plain")
                    return
                await _respond(stream, 200, body, CONTENT_TYPE_LATEST)

    return handle


async def _respond(stream: trio.SocketStream, code: int, body: bytes, content_type: str
                   ) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Server Error"}
    head = (f"HTTP/1.1 {code} {reason[code]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        await stream.send_all(head + body)
    except trio.BrokenResourceError:
        pass
