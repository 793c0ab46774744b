"""What a new user runs into in the first hour: every field type across a process,
mistakes with clear errors, and the echo server as a user runs it."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest
import trio

from actors import (
    Actor,
    ActorExited,
    ActorGone,
    ActorRef,
    RemoteError,
    handler,
    open_system,
)
from protocol import FdHandle, Message
from tests.events import next_event
from tests.repository import ROOT
from tests.waiting import TIMEOUT


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(Message):
    x: float
    y: float


class Circle(Message):
    kind: Literal["circle"] = "circle"
    r: float


class Square(Message):
    kind: Literal["square"] = "square"
    side: float


class Everything(Message):
    raw: bytes
    text: str
    when: dt.datetime
    day: dt.date
    delay: dt.timedelta
    price: Decimal
    ident: uuid.UUID
    colour: Colour
    level: Level
    where: Point
    path: list[Point]
    shape: Circle | Square
    maybe: int | None
    tags: dict[str, int]
    pair: tuple[int, str]
    who: ActorRef


class WriteTo(Message):
    fd: FdHandle
    text: bytes


class Mirror(Actor):
    @handler
    async def mirror(self, msg: Everything) -> Everything:
        return msg

    @handler
    async def write(self, msg: WriteTo) -> None:
        os.write(msg.fd.fileno(), msg.text)
        msg.fd.close()


def everything(who: ActorRef, raw: bytes) -> Everything:
    return Everything(
        raw=raw, text="héllo ✓", when=dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.UTC),
        day=dt.date(2026, 12, 1), delay=dt.timedelta(seconds=1.5),
        price=Decimal("19.99"), ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        colour=Colour.BLUE, level=Level.HIGH, where=Point(x=1.5, y=-2),
        path=[Point(x=0, y=0), Point(x=1, y=1)], shape=Square(side=2), maybe=None,
        tags={"a": 1}, pair=(1, "one"), who=who,
    )


@pytest.mark.parametrize("raw", [bytes(range(256)), os.urandom(1024 * 1024)],
                         ids=["all-bytes", "1MiB-random"])
async def test_every_field_type_arrives_as_sent_in_a_process(raw: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            local = await system.spawn(Mirror, name="local")
            remote = await system.spawn(Mirror, name="remote", process=True)
            sent = everything(local, raw)
            for target in (local, remote):
                assert await target.ask(sent) == sent
                await target.tell(sent)  # one way too
            read_end, write_end = os.pipe()
            try:
                await remote.ask(WriteTo(fd=FdHandle(write_end), text=b"through a handle"))
                assert os.read(read_end, 100) == b"through a handle"
            finally:
                os.close(read_end)
                os.close(write_end)


async def test_sending_something_that_is_not_a_message_is_a_type_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            for process in (False, True):
                ref = await system.spawn(Mirror, name=f"m{process}", process=process)
                with pytest.raises(TypeError, match="only Message instances can be sent, not str"):
                    await ref.tell("text")  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="not dict"):
                    await ref.ask({"a": 1})  # type: ignore[arg-type]


class Crashy(Actor):
    @handler
    async def crash(self, msg: Point) -> None:
        raise ValueError("bad point")


@pytest.mark.parametrize("process", [False, True])
async def test_tell_and_ask_to_a_crashed_actor_both_say_who_and_why(
    process: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            crashy = await system.spawn(Crashy, name="crashy", process=process)
            with pytest.raises(RemoteError, match="bad point"):
                await crashy.ask(Point(x=0, y=0))
            await next_event(events, ActorExited, "crashy")
            for send in (crashy.tell, crashy.ask):
                with pytest.raises(ActorGone, match=r"crashy .* is gone: it crashed \(.*bad point"):
                    await send(Point(x=1, y=1))
    if process:  # nothing supervises it: it stops, and the log says so (not "replaced")
        assert "nothing supervises it, so it stops" in caplog.text
        assert "asked to be replaced" not in caplog.text
    events_lines = [r.getMessage() for r in caplog.records if r.name == "actors.events"]
    assert all("\n" not in line for line in events_lines)  # one line each
    assert caplog.text.count("Traceback") <= 1  # the crash's traceback, once at most


def test_a_handler_that_returns_a_plain_value_fails_when_defined() -> None:
    with pytest.raises(TypeError, match=r"Bad.count returns <class 'int'>"):

        class Bad(Actor):
            @handler
            async def count(self, msg: Point) -> int:
                return 1


UNGUARDED = '''
import trio
from actors import Actor, handler, open_system
from protocol import Message

class Add(Message):
    a: int

class Adder(Actor):
    @handler
    async def add(self, msg: Add) -> Add:
        return msg

async def main() -> None:
    async with open_system() as system:
        ref = await system.spawn(Adder, name="adder", process=True)
        print(await ref.ask(Add(a=1)))

trio.run(main)
'''


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_a_script_without_the_main_guard_is_told_what_to_do(
    tmp_path: Path, start_method: str
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.replace("open_system()",
                                        f"open_system(start_method={start_method!r})"))
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process([sys.executable, str(script)], capture_stdout=True,
                                        capture_stderr=True, check=False, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "SpawnError" in err
    assert 'put the code that starts the system under `if __name__ == "__main__":`' in err
    assert "has no attribute 'Adder'" not in err
    assert "collided" not in err  # no warning from trio's signal handling


def _start_echo(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "echo_cluster.py"), "--port", "0",
         "--workers", "2", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _ready_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline()


async def test_the_echo_server_names_its_master_and_stops_at_once_with_idle_clients() -> None:
    process = _start_echo()
    try:
        line = await trio.to_thread.run_sync(_ready_line, process)
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert int(fields["master"]) == process.pid  # the pid to signal
        port = int(line.split()[3].rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for conn in idle:  # served once, then idle (keep-alive)
            conn.sendall(b"hi")
            assert conn.recv(10) == b"hi"
        started = trio.current_time()
        process.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(process.wait, 30)
        elapsed = trio.current_time() - started
        assert code == 0
        assert elapsed < 5, f"an idle client held the shutdown for {elapsed:.1f} s"
        for conn in idle:
            assert conn.recv(10) == b""  # closed by the server
            conn.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("arguments", [["--workers", "0"], ["--workers", "-1"],
                                       ["--port", "70000"]])
def test_the_echo_server_refuses_bad_arguments_in_one_line(arguments: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "echo_cluster.py"), *arguments],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("echo_cluster.py: error:")


def test_a_port_in_use_is_one_clean_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "echo_cluster.py"), "--port",
             str(taken.getsockname()[1]), "--workers", "1"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )
    finally:
        taken.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "address already in use" in lines[0]


@pytest.mark.parametrize("same_port", [True, False], ids=["name-and-port", "name"])
async def test_a_second_echo_server_names_each_clash_in_one_line(same_port: bool) -> None:
    name = f"echo{os.getpid()}{'p' if same_port else 'n'}"
    first = _start_echo("--name", name)
    try:
        line = await trio.to_thread.run_sync(_ready_line, first)
        port = line.split()[3].rsplit(":", 1)[1]
        with trio.fail_after(TIMEOUT):
            second = await trio.run_process(
                [sys.executable, str(ROOT / "examples" / "echo_cluster.py"), "--workers", "1",
                 "--name", name, "--port", port if same_port else "0"],
                capture_stdout=True, capture_stderr=True, check=False,
            )
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=TIMEOUT)
    assert second.returncode == 1
    lines = second.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"a system named {name!r} is already running" in lines[0]
    assert "--name" in lines[0]
    assert (f"127.0.0.1:{port} is already in use" in lines[0]) == same_port
    assert ("--port" in lines[0]) == same_port
