"""Load an echo server: N connections for T seconds, every echoed byte checked.

    python examples/echo_client.py --port 7000 [--connections 32] [--seconds 5]
                                   [--size 64] [--new-connection-per-request]

Prints round trips/s, latency p50/p99, the connections the server closed and the errors.
A connection the server closes between two echoes (nothing of the echo came back: it
drained an idle connection, as keep-alive servers do) is counted as closed, and the client
reconnects and sends that request again; an error is anything else (a refused connection,
an echo cut short or wrong). Exits 1 if there was any error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import trio


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.closed = 0  # connections the server closed between two echoes
        self.first_error = ""

    def error(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what


class Closed(Exception):
    """The server closed the connection before any byte of the echo came back."""


async def _round_trip(stream: trio.SocketStream, payload: bytes) -> bool:
    """Send ``payload`` and read its echo: True if it came back whole and right."""
    received = b""
    try:
        await stream.send_all(payload)
        while len(received) < len(payload):
            chunk = await stream.receive_some(len(payload) - len(received))
            if not chunk:
                break
            received += chunk
    except (OSError, trio.BrokenResourceError) as exc:
        if not received:
            raise Closed(str(exc)) from exc
        raise
    if not received:
        raise Closed("end of stream")
    return received == payload


async def keep_alive(host: str, port: int, size: int, deadline: float, tally: Tally) -> None:
    payload = os.urandom(size)
    while time.monotonic() < deadline:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            tally.error(f"connect: {exc}")
            return
        async with stream:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    ok = await _round_trip(stream, payload)
                except Closed:
                    tally.closed += 1
                    break  # reconnect, and send this request again
                except (OSError, trio.BrokenResourceError) as exc:
                    tally.error(f"round trip: {exc}")
                    return
                if not ok:
                    tally.error("short or wrong echo")
                    return
                tally.latencies.append(time.perf_counter() - start)
                payload = os.urandom(size)


async def one_per_request(host: str, port: int, size: int, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        payload = os.urandom(size)
        start = time.perf_counter()
        try:
            async with await trio.open_tcp_stream(host, port) as stream:
                ok = await _round_trip(stream, payload)
        except Closed as exc:
            tally.error(f"closed before the echo: {exc}")
            continue
        except (OSError, trio.BrokenResourceError) as exc:
            tally.error(f"connection: {exc}")
            continue
        if not ok:
            tally.error("short or wrong echo")
            continue
        tally.latencies.append(time.perf_counter() - start)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def main(arguments: argparse.Namespace) -> int:
    tally = Tally()
    deadline = time.monotonic() + arguments.seconds
    client = one_per_request if arguments.new_connection_per_request else keep_alive
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(arguments.connections):
            nursery.start_soon(client, arguments.host, arguments.port, arguments.size,
                               deadline, tally)
    elapsed = time.perf_counter() - started
    done = len(tally.latencies)
    line = f"{done / elapsed:,.0f} round trips/s over {arguments.connections} connections"
    if done:
        line += (f", latency p50 {_percentile(tally.latencies, 0.5) * 1e6:,.0f} us"
                 f" p99 {_percentile(tally.latencies, 0.99) * 1e6:,.0f} us")
    line += f", closed by the server {tally.closed}, errors {tally.errors}"
    if tally.first_error:
        line += f" (first: {tally.first_error})"
    print(line)
    return 1 if tally.errors else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--new-connection-per-request", action="store_true")
    sys.exit(trio.run(main, parser.parse_args()))
