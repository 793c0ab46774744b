"""External programs under supervision: real programs (``/bin/sh``, Python, Node), their
exits, restarts, output, stops, and the sockets they take by socket activation."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import trio

from actors import (
    ActorExited,
    ActorReady,
    ActorRestarted,
    ActorStarted,
    RestartLimitExceeded,
    SpawnError,
    command,
    listener,
    open_system,
    supervisor,
)
from tests.events import next_event, received
from tests.waiting import TIMEOUT, eventually

HERE = Path(__file__).parent
PYTHON_ECHO = [sys.executable, str(HERE / "activated_echo.py")]
NODE_ECHO = ["node", str(HERE / "activated_echo.js")]


async def echo_once(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        received = b""
        while len(received) < len(payload):
            chunk = await stream.receive_some()
            if not chunk:
                break
            received += chunk
        return received


async def test_a_shell_command_exit_status_and_output() -> None:
    """Its exit status is its exit reason; its lines reach the logs with its path."""
    tree = supervisor("root", children=[
        command("sh", ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], restart="temporary"),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events(history=True)
            started = await next_event(events, ActorStarted, "root/sh")
            await next_event(events, ActorReady, "root/sh")
            exited = await next_event(events, ActorExited, "root/sh")
            assert exited.pid == started.pid
            assert exited.reason.kind == "crashed"
            assert exited.reason.exit_code == 3
            lines = system.output.lines

            async def both_lines() -> bool:
                return len([line for line in lines if line.path == "root/sh"]) == 2

            await eventually(both_lines, what="the command's two lines")
            assert {(line.stream, line.text, line.pid) for line in lines
                    if line.path == "root/sh"} == {
                ("stdout", "out", started.pid), ("stderr", "err", started.pid),
            }


async def test_a_killed_command_is_restarted_and_shows_in_status() -> None:
    tree = supervisor("root", children=[
        command("sleeper", ["/bin/sh", "-c", "exec sleep 600"], env={"WHO": "me"}),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events(history=True)
            first = await next_event(events, ActorReady, "root/sleeper")
            assert first.pid is not None
            assert first.address is None
            rows = {row.path: row for row in await system.status()}
            assert rows["root/sleeper"].kind == "command"
            assert rows["root/sleeper"].state == "running"
            assert rows["root/sleeper"].pid == first.pid
            os.kill(first.pid, signal.SIGKILL)
            exited = await next_event(events, ActorExited, "root/sleeper")
            assert exited.reason.kind == "killed"
            assert exited.reason.signal == signal.SIGKILL
            restarted = await next_event(events, ActorRestarted, "root/sleeper")
            assert restarted.reason.signal == signal.SIGKILL
            second = await next_event(events, ActorReady, "root/sleeper")
            assert second.pid != first.pid
            rows = {row.path: row for row in await system.status()}
            assert rows["root/sleeper"].restarts == 1
            assert rows["root/sleeper"].last_exit is not None
            assert "signal 9" in rows["root/sleeper"].last_exit
        gone = [e for e in received(events) if isinstance(e, ActorExited)
                and e.path == "root/sleeper"]
        assert [e.reason.kind for e in gone] == ["shutdown"]  # the stop's SIGTERM, obeyed


async def test_a_command_that_keeps_failing_exhausts_the_intensity() -> None:
    tree = supervisor("root", max_restarts=2, within=60, children=[
        command("failing", ["/bin/sh", "-c", "exit 1"]),
    ])
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RestartLimitExceeded, match="exit status 1"):
            async with open_system(tree):
                await trio.sleep_forever()  # (the root gives up before the block is entered)


@pytest.mark.parametrize(("program", "why"), [
    ("no-such-program-here", "not found in PATH"),
    ("./no/such/file", "no such file"),
    ("{tmp}/plain.txt", "not executable"),
    ("{tmp}", "not executable"),
])
async def test_a_program_that_cannot_run_is_a_spawn_error_at_start(
    tmp_path: Path, program: str, why: str
) -> None:
    """Checked in the master before anything starts: the supervisor fails at once instead
    of restarting a program that cannot run."""
    plain = tmp_path / "plain.txt"
    plain.write_text("echo not a program\n")
    plain.chmod(0o644)
    tree = supervisor("root", children=[command("bad", [program.format(tmp=tmp_path)])])
    with trio.fail_after(TIMEOUT):
        with pytest.raises(SpawnError, match=why):
            async with open_system(tree):
                pass


async def test_a_command_that_ignores_sigterm_is_killed_at_its_shutdown(
    tmp_path: Path,
) -> None:
    armed = tmp_path / "armed"
    program = [
        sys.executable, "-c",
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(600)\n",
        str(armed),
    ]
    tree = supervisor("root", children=[command("stubborn", program, shutdown=0.5)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()

            async def ignoring() -> bool:
                return armed.exists()

            await eventually(ignoring, what="the program to ignore SIGTERM")
        exited = [e for e in received(events) if isinstance(e, ActorExited)
                  and e.path == "root/stubborn"]
        assert len(exited) == 1
        assert exited[0].reason.kind == "killed"
        assert exited[0].reason.signal == signal.SIGKILL
        assert "did not stop within 0.5 s" in exited[0].reason.detail


def _servers() -> list[object]:
    servers: list[object] = [pytest.param(PYTHON_ECHO, id="python")]
    if shutil.which("node") is not None:
        servers.append(pytest.param(NODE_ECHO, id="node"))
    return servers


@pytest.mark.parametrize("program", _servers())
async def test_socket_activation_keeps_the_port_open_across_a_sigkill(
    program: list[str],
) -> None:
    """An unmodified socket-activated server serves the port the master owns; clients
    connecting in a loop while it is SIGKILLed and restarted are never refused: their
    connections wait in the master's socket for the next instance."""
    tree = supervisor("root", max_restarts=10, children=[
        listener("web", port=0, acceptor=None),
        command("echo", program, sockets=("root/web",)),
    ])
    refused: list[BaseException] = []
    served = 0
    progress = trio.Event()  # set (and replaced) at every echo served

    async def served_at_least(count: int) -> None:
        while served < count:
            await progress.wait()
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            port = system.listener("root/web").port
            events = system.events(history=True)
            first = await next_event(events, ActorReady, "root/echo")
            assert first.pid is not None
            assert await echo_once(port, b"hello") == b"hello"
            stop = trio.Event()

            async def client(n: int) -> None:
                nonlocal served, progress
                while not stop.is_set():
                    payload = f"{n}:{served}".encode()
                    try:
                        answer = await echo_once(port, payload)
                    except ConnectionRefusedError as exc:
                        refused.append(exc)
                        return
                    except (trio.BrokenResourceError, ConnectionResetError):
                        continue  # in flight in the instance that was killed
                    if answer == payload:
                        served += 1
                        progress.set()
                        progress = trio.Event()

            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(client, n)
                await served_at_least(50)
                os.kill(first.pid, signal.SIGKILL)
                exited = await next_event(events, ActorExited, "root/echo")
                assert exited.reason.signal == signal.SIGKILL
                second = await next_event(events, ActorReady, "root/echo")
                assert second.pid != first.pid
                await served_at_least(served + 50)
                stop.set()
            lines = [line.text for line in system.output.lines if line.path == "root/echo"]
            assert any("root/web" in line for line in lines)  # its LISTEN_FDNAMES
    assert not refused


async def test_a_command_needs_a_listener_without_acceptors() -> None:
    tree = supervisor("root", children=[command("echo", PYTHON_ECHO, sockets=("root/web",))])
    with trio.fail_after(TIMEOUT):
        with pytest.raises(SpawnError, match="no listener at 'root/web'"):
            async with open_system(tree):
                pass


async def test_stdin_and_cwd_and_env(tmp_path: Path) -> None:
    tree = supervisor("root", children=[
        command("cat", ["/bin/sh", "-c", "cat > got; echo \"$GREETING\" >> got; pwd >> got"],
                stdin=b"fed\n", cwd=str(tmp_path), env={"GREETING": "hi"},
                restart="transient"),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events(history=True)
            exited = await next_event(events, ActorExited, "root/cat")
            assert exited.reason.kind == "normal", exited.reason
    assert (tmp_path / "got").read_text() == f"fed\nhi\n{tmp_path}\n"


async def test_a_command_started_at_runtime_is_supervised_and_terminated() -> None:
    """``start_child`` takes a command as it takes a worker; ``terminate_child`` stops its
    process group, and the spec stays until ``delete_child``."""
    tree = supervisor("root", children=[supervisor("jobs")])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events(history=True)
            await system.start_child(
                "root/jobs", command("sleeper", ["/bin/sh", "-c", "exec sleep 600"]),
            )
            started = await next_event(events, ActorStarted, "root/jobs/sleeper")
            assert started.pid is not None
            [row] = await system.which_children("root/jobs")
            assert (row.name, row.kind, row.pid, row.state) == (
                "sleeper", "command", started.pid, "running",
            )
            await system.terminate_child("root/jobs/sleeper")
            exited = await next_event(events, ActorExited, "root/jobs/sleeper")
            assert exited.reason.kind == "shutdown"
            [row] = await system.which_children("root/jobs")
            assert row.state == "terminated"
            await system.delete_child("root/jobs/sleeper")
            assert await system.which_children("root/jobs") == []
