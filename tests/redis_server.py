"""A real redis-server for the tests: on a free port, in a temporary directory, stopped
afterwards. Tests that need one skip (saying why) where redis-server is not installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVERS: set[int] = set()
"""pids of the servers that outlive one test (session fixtures): not leaks."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` it again on the same port and
    data (``durable``: appendonly, fsync always, so what it acknowledged survives a
    restart; otherwise no persistence at all, as a benchmark wants)."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0, *,
                 durable: bool = True) -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, *, wrap: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(wrap or []), "redis-server", "--bind", self.host, "--port", str(self.port),
             "--dir", str(self.directory),
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable
               else ["--appendonly", "no"]),
             "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        SERVERS.add(self.process.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            if self._answers(wrap):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on {self.host}:{self.port}")

    def _answers(self, wrap: list[str] | None) -> bool:
        if wrap:  # it listens in another network namespace: ask from there
            probe = subprocess.run(
                [*wrap, "redis-cli", "-h", self.host, "-p", str(self.port), "ping"],
                capture_output=True, check=False,
            )
            return probe.stdout.strip() == b"PONG"
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            SERVERS.discard(process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def require_redis_server() -> None:
    """Skip the test (saying why) where redis-server is not installed."""
    if shutil.which("redis-server") is None:
        import pytest  # here: the benchmarks use this module too

        pytest.skip("redis-server is not installed (.ci/run installs it)")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, in a temporary directory, for the block."""
    require_redis_server()
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def unique_prefix() -> str:
    return f"test{os.getpid()}x{time.monotonic_ns()}"
