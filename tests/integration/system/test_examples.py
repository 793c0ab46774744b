"""The examples run as a user would run them (actors defined in ``__main__``)."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.leaks import descendants
from tests.redis_server import redis_server
from tests.repository import EXAMPLES
from tests.waiting import TIMEOUT, eventually


async def test_ping_pong_runs_actors_defined_in_main() -> None:
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "ping_pong.py"), "--rounds", "200"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert b"asks/s" in result.stdout


async def test_supervision_tree_example_shows_when_backoff_applies() -> None:
    # The seed decides which jobs fail, and how: 20 jobs at 0.25 with seed 9 raise once
    # (a suicide) and kill their process three times, 4 restarts, fewer than the 5 in 10 s
    # the tree allows, so it must survive and count every job.
    sys.path.insert(0, str(EXAMPLES))
    try:
        from supervision_tree import failure
    finally:
        sys.path.remove(str(EXAMPLES))
    how = {n: failure(9, n, 0.25) for n in range(20)}
    raising = [n for n, way in how.items() if way == "raise"]
    dying = [n for n, way in how.items() if way == "die"]
    assert len(raising) >= 1
    assert len(dying) >= 3
    assert len(raising) + len(dying) <= 5
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "supervision_tree.py"), "--rounds", "20",
             "--failure-rate", "0.25", "--seed", "9"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "ready      root/flaky" in out
    assert "counter saw 20 jobs" in out
    assert [n for n in range(20) if f"job {n}: RuntimeError" in out] == raising
    assert [n for n in range(20) if f"job {n}: its worker died" in out] == dying
    assert "gave up" not in out
    restarts = [line.split("restarting root/flaky after ")[1] for line in out.splitlines()
                if "restarting root/flaky after " in line]
    delays = {kind: [float(line.split("delay ")[1].split()[0]) for line in restarts
                     if line.startswith(kind + " ")] for kind in ("suicide", "killed")}
    # A suicide is replaced at once; each consecutive death waits longer (0.1, 0.2, 0.4 s
    # give or take the jitter).
    assert delays["suicide"] == [0.0] * len(raising), restarts
    assert len(delays["killed"]) == len(dying), restarts
    assert delays["killed"][0] > 0
    assert delays["killed"] == sorted(set(delays["killed"])), restarts  # strictly growing


@asynccontextmanager
async def _running(
    command: list[str],
) -> AsyncIterator[tuple[trio.Process, trio.lowlevel.FdStream]]:
    """An example started as a user starts it; its output (both streams) in one pipe.
    Killed if the block leaves it running, and waited for either way."""
    receive, send = os.pipe()
    try:
        process = await trio.lowlevel.open_process(command, stdout=send, stderr=send)
    finally:
        os.close(send)
    try:
        async with trio.lowlevel.FdStream(receive) as stdout:
            yield process, stdout
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def _port(ready: bytes) -> int:
    """The port in an example's "listening on HOST:PORT" line."""
    return int(ready.split(b" on ")[1].split()[0].rsplit(b":", 1)[1])


async def _read_until(stdout: trio.lowlevel.FdStream, marker: bytes, seen: bytearray) -> bytes:
    """The whole line of output that contains ``marker`` (waiting for it to end)."""
    while marker not in seen or b"\n" not in seen[seen.index(marker):]:
        chunk = await stdout.receive_some()
        assert chunk, f"exited before {marker!r}: {bytes(seen)!r}"
        seen += chunk
    at = seen.index(marker)
    return bytes(seen[seen.rfind(b"\n", 0, at) + 1 : seen.index(b"\n", at)])


async def test_echo_cluster_serves_reloads_and_stops_cleanly() -> None:
    with trio.fail_after(TIMEOUT):
        async with _running(
            [sys.executable, str(EXAMPLES / "echo_cluster.py"), "--port", "0", "--workers", "2"]
        ) as (process, stdout):
            seen = bytearray()
            ready = await _read_until(stdout, b"echo_cluster listening on", seen)
            port = _port(ready)
            assert b"policy=round_robin" in ready
            assert b"workers=2" in ready
            client = [sys.executable, str(EXAMPLES / "echo_client.py"), "--port", str(port),
                      "--connections", "8", "--seconds", "1"]
            result = await trio.run_process(client, capture_stdout=True, check=False)
            assert result.returncode == 0, result.stdout
            assert b"errors 0" in result.stdout
            process.send_signal(signal.SIGHUP)
            reloaded = await _read_until(stdout, b"reloaded: pids=", seen)
            assert reloaded.split(b"pids=")[1] != ready.split(b"pids=")[1]
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0, bytes(seen)
    assert not descendants()


async def test_echo_cluster_port_in_use_exits_at_once_with_a_message() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            result = await trio.run_process(
                [sys.executable, str(EXAMPLES / "echo_cluster.py"), "--port", str(port)],
                capture_stdout=True, capture_stderr=True, check=False,
            )
        assert result.returncode == 1
        assert b"address already in use" in result.stderr
    finally:
        taken.close()


async def test_shared_config_greets_with_the_greeting_of_the_moment() -> None:
    with trio.fail_after(TIMEOUT):
        async with _running(
            [sys.executable, str(EXAMPLES / "shared_config.py"), "--port", "0",
             "--workers", "2", "--every", "0.5"]
        ) as (process, stdout):
            seen = bytearray()
            ready = await _read_until(stdout, b"shared_config listening on", seen)
            port = _port(ready)
            greetings = set()
            pids = set()
            for _ in range(12):  # 3 s: the greeting changes every 0.5 s
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    line = b""
                    while chunk := await stream.receive_some():
                        line += chunk
                text, _, pid = line.decode().strip().rpartition(" from pid ")
                greetings.add(text)
                pids.add(pid)
                await trio.sleep(0.25)
            # Every worker picked up several greetings, without a restart.
            assert len(greetings) >= 3, greetings
            assert len(pids) == 2, pids
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert not descendants()


async def _greeting(port: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        line = b""
        while chunk := await stream.receive_some():
            line += chunk
    return line.decode().strip().rpartition(" from pid ")[0]


async def test_shared_config_set_changes_the_greeting_of_the_running_server() -> None:
    with redis_server() as redis, trio.fail_after(TIMEOUT):
        store = ["--store", redis.url]
        async with _running(
            [sys.executable, str(EXAMPLES / "shared_config.py"), "--port", "0",
             "--workers", "1", "--every", "3600", *store]
        ) as (process, stdout):
            seen = bytearray()
            port = _port(await _read_until(stdout, b"shared_config listening on", seen))
            await _read_until(stdout, b"greeting is now 'hello'", seen)
            assert await _greeting(port) == "hello"
            # As its docstring says: from another shell, while the server runs.
            result = await trio.run_process(
                [sys.executable, str(EXAMPLES / "shared_config.py"), *store,
                 "--set", "salut"],
                capture_stdout=True, capture_stderr=True, check=False,
            )
            assert result.returncode == 0, result.stderr.decode()
            assert b"Traceback" not in result.stderr
            assert b"greeting set to 'salut'" in result.stdout
            await eventually(lambda: _greets(port, "salut"), what="the new greeting")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0, bytes(seen)
    assert not descendants()


async def _greets(port: int, text: str) -> bool:
    return await _greeting(port) == text


async def test_the_readme_reload_demo_fails_no_keep_alive_client() -> None:
    # As the README tells it: the keep-alive echo_client running, then two reloads (SIGHUP).
    # The client once reported 32 errors ("short or wrong echo") and exited 1.
    with trio.fail_after(TIMEOUT):
        async with _running(
            [sys.executable, str(EXAMPLES / "echo_cluster.py"), "--port", "0", "--workers", "2"]
        ) as (process, stdout):
            seen = bytearray()
            port = _port(await _read_until(stdout, b"echo_cluster listening on", seen))
            client = [sys.executable, str(EXAMPLES / "echo_client.py"), "--port", str(port),
                      "--connections", "32", "--seconds", "6"]
            async with trio.open_nursery() as nursery:
                results: list[trio.CompletedProcess[bytes]] = []

                async def run_client() -> None:
                    results.append(await trio.run_process(client, capture_stdout=True,
                                                          check=False))

                nursery.start_soon(run_client)
                for _ in range(2):
                    await trio.sleep(1.0)  # the client under way
                    process.send_signal(signal.SIGHUP)
                    await _read_until(stdout, b"reloaded: pids=", seen)
                    del seen[:]
            (result,) = results
            assert result.returncode == 0, result.stdout
            assert b"closed by the server 0, errors 0" in result.stdout, result.stdout
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert not descendants()


async def test_udp_echo_answers_every_datagram_from_its_workers() -> None:
    for policy in ("shared", "reuseport"):
        with trio.fail_after(TIMEOUT):
            result = await trio.run_process(
                [sys.executable, str(EXAMPLES / "udp_echo.py"), "--port", "0", "--workers",
                 "2", "--policy", policy, "--check", "200", "--name", f"udp_echo_{policy}"],
                capture_stdout=True, capture_stderr=True, check=False,
            )
        assert result.returncode == 0, result.stderr.decode()
        out = result.stdout.decode()
        assert f"policy={policy} workers=2" in out
        assert "echoed 200/200 datagrams from 8 clients" in out
