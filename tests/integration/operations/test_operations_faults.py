"""Operations under faults: a master out of file descriptors, clients that send what they
should not, masters that do not answer, outputs too large to carry, pipes that close.

Real masters (tests/integration/operations/ops_master.py) and real CLI subprocesses, as in
test_operations.py; the fd limits are lowered on the running master (``prlimit``)."""

from __future__ import annotations

import array
import fcntl
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from actors import Actor, ActorExited, RemoteError, handler, open_system
from actors._operations._protocol import Answer, LogLine, Note, Request, Status, send_control
from actors._operations._server import socket_path
from protocol import (
    FrameDecoder,
    FrameKind,
    Message,
    decode_message,
    encode_message,
    open_channel,
)
from tests.events import next_event
from tests.integration.operations.test_operations import Master, _wait_gone, cli, master
from tests.repository import ROOT
from tests.waiting import TIMEOUT, eventually, wait_until

__all__ = ["master"]  # the fixture, shared with test_operations


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def limit_fds(pid: int, limit: int) -> None:
    """Lower the running process ``pid``'s fd limit (soft and hard) to ``limit``."""
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))


class Stderr:
    """What a master wrote to its stderr so far, read without waiting for it to exit."""

    def __init__(self, running: Master) -> None:
        assert running.process.stderr is not None
        self._fd = running.process.stderr.fileno()
        os.set_blocking(self._fd, False)
        self.text = ""

    def read(self) -> str:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text


@contextmanager
def idle_clients(path: Path, most: int) -> Iterator[list[socket.socket]]:
    """Up to ``most`` connections to the control socket at ``path`` that say nothing,
    fewer if its backlog fills first; all closed on the way out."""
    clients: list[socket.socket] = []
    try:
        for _ in range(most):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                client.connect(str(path))
            except BlockingIOError:  # its backlog is full: nobody accepts
                client.close()
                break
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            client.close()


def statuses(running: Master) -> dict[str, dict[str, object]]:
    found = json.loads(cli("status", running.name, "--json", check=True).stdout)
    return {row["path"]: row for row in found["actors"]}


# -- a master out of fds -------------------------------------------------------------------


def test_the_control_server_backs_off_when_the_master_is_out_of_fds(master: Master) -> None:
    pid = master.process.pid
    before = statuses(master)
    stderr = Stderr(master)
    limit = fd_count(pid) + 48
    limit_fds(pid, limit)
    free = limit - fd_count(pid)
    with idle_clients(socket_path(master.name), 4 * limit) as clients:
        assert len(clients) > free  # more than it can take: the rest wait in its backlog
        wait_until(lambda: "cannot accept" in stderr.read() or master.process.poll() is not None,
                   what="the master to back off")
        assert master.process.poll() is None, stderr.read()  # alive
        # A TCP client meanwhile waits in the listener's queue (the master accepts those
        # too, and cannot either).
        waiting = socket.create_connection(("127.0.0.1", master.port), timeout=TIMEOUT)
    with waiting:
        assert waiting.recv(100).decode().startswith("one")  # served once fds came back
    after = statuses(master)  # it answers, and nothing was restarted meanwhile
    assert {p: r["pid"] for p, r in after.items()} == {p: r["pid"] for p, r in before.items()}
    assert master.greeting() == "one"
    assert json.loads(cli("stop", master.name, "--json", check=True).stdout)["ok"]
    code, _, err = master.finish(wait=30)
    assert code == 0
    err = stderr.text + err
    backing_off = [line for line in err.splitlines()
                   if "control socket" in line and "cannot accept" in line]
    assert len(backing_off) == 1, err  # logged once, not once per try
    assert "Traceback" not in err


# -- fds sent to the control socket --------------------------------------------------------


def _frame(message: Message, fds: int = 0) -> bytes:
    """``message`` as a frame that announces ``fds`` fds."""
    data, _ = encode_message(FrameKind.SYSTEM, message)
    return data[:5] + bytes([fds]) + data[6:]  # the header's nfds byte


def _send(client: socket.socket, data: bytes, fds: list[int]) -> None:
    rights = array.array("i", fds).tobytes()
    client.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)] if fds else [])


def _answer(client: socket.socket) -> Message:
    decoder = FrameDecoder()
    while (frame := decoder.next_frame()) is None:
        chunk = client.recv(1 << 20)
        assert chunk, "closed without an answer"
        decoder.feed(chunk)
    return decode_message(frame)


def unread(client: socket.socket) -> int:
    """Bytes ``client`` sent that its peer has not read yet (SIOCOUTQ, as TIOCOUTQ)."""
    queued = fcntl.ioctl(client.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", queued)[0])


@contextmanager
def control_client(running: Master) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(str(socket_path(running.name)))
        yield client


def test_fds_sent_to_the_control_socket_are_closed_and_refused(master: Master) -> None:
    pid = master.process.pid
    statuses(master)
    settled = fd_count(pid)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        many = [null] * 200
        for _ in range(5):  # a request, and a second frame with fds in the same write
            with control_client(master) as client:
                status = _frame(Request(verb="status"))
                _send(client, status + _frame(Request(verb="status"), fds=200), many)
                assert isinstance(_answer(client), Status)
        assert fd_count(pid) < settled + 50
        with control_client(master) as client:  # fds with the request itself
            _send(client, _frame(Request(verb="status"), fds=200), many)
            refused = _answer(client)
            assert isinstance(refused, Answer)
            assert not refused.ok
            assert "file descriptors" in (refused.error or "")
        for verb in ("logs", "events"):  # frames with fds while a stream is followed
            with control_client(master) as client:
                _send(client, _frame(Request(verb=verb, follow=True)), [])
                assert _answer(client) is not None  # the stream has begun
                for _ in range(5):
                    _send(client, _frame(Request(verb="status"), fds=200), many)
                wait_until(lambda: unread(client) == 0, what="the master to read them")
                wait_until(lambda: fd_count(pid) < settled + 50,
                           what="the master to close the fds it was sent")
    finally:
        os.close(null)
    assert statuses(master)["root/noter"]["pid"]  # and it serves on
    assert master.greeting() == "one"


# -- scaling past the fd limit -------------------------------------------------------------


def acceptors(rows: dict[str, dict[str, object]]) -> dict[str, object]:
    return {path: row["pid"] for path, row in rows.items() if row["kind"] == "acceptor"}


def test_a_scale_past_the_fd_limit_is_answered_and_undone(master: Master) -> None:
    pid = master.process.pid
    before = acceptors(statuses(master))
    stderr = Stderr(master)
    limit_fds(pid, fd_count(pid) + 16)  # room for a few more acceptors, not 40
    failed = cli("scale", master.name, "root/greet", "40")
    assert failed.returncode == 1, failed
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith("trio-actors: scale failed: "), failed.stderr
    assert "Too many open files" in failed.stderr
    assert "back to 2 acceptors" in failed.stderr
    assert acceptors(statuses(master)) == before  # the acceptors it added are gone
    assert master.greeting() == "one"
    assert statuses(master)["root/noter"]["pid"]  # and the next calls find it serving
    assert json.loads(cli("stop", master.name, "--json", check=True).stdout)["ok"]
    code, _, err = master.finish(wait=30)
    assert code == 0
    assert "Traceback" not in stderr.text + err


# -- a master that does not answer ---------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, result
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("trio-actors: "), result.stderr
    assert text in result.stderr, result.stderr


def test_the_cli_names_a_stopped_master_and_says_it_does_not_answer(tmp_path: Path) -> None:
    stamp = f"{os.getpid()}x{time.monotonic_ns() % 10**6}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Master(tmp_path / "a", f"stopped{stamp}")
    b = Master(tmp_path / "b", f"running{stamp}")
    try:
        b_before = {p: r["pid"] for p, r in statuses(b).items()}
        a_socket = str(socket_path(a.name))
        silent = f"system {a.name!r} does not answer (its control socket is {a_socket}"
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            # A NAME is a system's socket, whether it answers or not: never a path for B.
            one_line(cli("reload", a.name), 1, silent)
            one_line(cli("status", a.name, "--timeout", "1"), 1, silent)
            one_line(cli("status", "--timeout", "1"), 2, "several systems are running")
            listed = {s["name"]: s for s in json.loads(cli("ls", "--json", "--timeout", "1",
                                                           check=True).stdout)}
            assert listed[a.name]["answering"] is False
            assert listed[a.name]["pid"] == a.process.pid
            assert listed[b.name]["answering"] is True
            with idle_clients(socket_path(a.name), 1000) as clients:
                assert len(clients) < 1000  # its backlog is full: connect() says EAGAIN
                one_line(cli("status", a.name, "--timeout", "1"), 1, silent)
                one_line(cli("reload", a.name, "root/greet", "--timeout", "1"), 1, silent)
                shown = cli("ls", "--timeout", "1")
                assert shown.returncode == 0, shown
                assert a.name in shown.stdout
                assert "not answering" in shown.stdout
                assert b.name in shown.stdout
                assert "Traceback" not in shown.stderr
            # B was not touched by any of it.
            assert {p: r["pid"] for p, r in statuses(b).items()} == b_before
            reloads = [json.loads(line) for line in cli("events", b.name, "--json",
                                                        check=True).stdout.splitlines()]
            assert not [e for e in reloads if e["type"] == "actors.SystemReloaded"]
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        assert statuses(a)["root/noter"]["pid"]  # awake, it answers again
        for running in (a, b):
            assert json.loads(cli("stop", running.name, "--json", check=True).stdout)["ok"]
            code, _, err = running.finish(wait=30)
            assert code == 0, err
    finally:
        if a.process.poll() is None:
            os.kill(a.process.pid, signal.SIGCONT)
        a.finish()
        b.finish()
        _wait_gone()


# -- lines and events too long to carry, readers too slow ----------------------------------


class Say(Message):
    what: str


def _binary(size: int) -> bytes:
    return os.urandom(size).replace(b"\n", b"x")  # one line: no newline in it


class Printer(Actor):
    """Prints what the tests need: a 10 MiB binary line between two short ones, 20 MiB with
    no newline at all (then, later, the end of that line), or 30,000 lines at once."""

    @handler
    async def say(self, msg: Say) -> None:
        out = sys.stdout.buffer
        if msg.what == "long":
            out.write(b"before\n" + _binary(10 * 2**20) + b"\nafter\n")
        elif msg.what == "many":
            for i in range(30_000):
                out.write(f"line {i:06d} {'x' * 90}\n".encode())
        elif msg.what == "endless":
            for _ in range(20):
                out.write(_binary(2**20))
                out.flush()
        else:
            out.write(msg.what.encode())
        out.flush()


class Boom(Actor):
    @handler
    async def boom(self, msg: Say) -> None:
        raise RuntimeError(msg.what * (20 * 2**20))  # an exit reason over the frame limit


async def run_cli(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "actors", *arguments], capture_stdout=True, capture_stderr=True,
        check=False, cwd=ROOT,
    )


async def test_a_long_line_is_cut_and_nothing_after_it_is_lost() -> None:
    name = f"long-lines{os.getpid()}"
    with trio.fail_after(TIMEOUT):
        async with open_system(name=name) as system:
            printer = await system.spawn(Printer, name="printer", process=True)
            await printer.ask(Say(what="long"))
            await printer.ask(Say(what="endless"))
            await printer.ask(Say(what="\nlater\n"))

            async def printed() -> bool:
                return any(line.text == "later" for line in system.output.lines)

            await eventually(printed, what="the worker's output to reach the master")
            result = await run_cli("logs", name, "--json")
    assert result.returncode == 0, result.stderr
    assert not result.stderr
    texts = [json.loads(line)["text"] for line in result.stdout.decode().splitlines()]
    assert texts[0] == "before"
    assert texts[2] == "after"  # what came after the long line is all there
    assert texts[4] == "later"
    for cut, size in ((texts[1], 10 * 2**20), (texts[3], 20 * 2**20)):
        kept, _, marker = cut.rpartition(" … ")
        assert len(kept) <= 64 * 1024, len(kept)
        assert marker == f"[cut: {size - 64 * 1024} more bytes]"


async def test_an_event_too_large_to_send_is_cut_and_the_stream_goes_on() -> None:
    name = f"large-events{os.getpid()}"
    with trio.fail_after(TIMEOUT):
        async with open_system(name=name) as system:
            boom = await system.spawn(Boom, name="boom")
            with pytest.raises(RemoteError):
                await boom.ask(Say(what="x"))
            events = system.events(history=True)
            await next_event(events, ActorExited, "boom")
            await system.spawn(Printer, name="after")  # an event after the large one
            result = await run_cli("events", name, "--json")
            status = await run_cli("status", name, "--json")
    assert result.returncode == 0, result.stderr
    seen = [json.loads(line) for line in result.stdout.decode().splitlines()]
    exited = [e for e in seen if e["type"] == "actors.ActorExited" and e["path"] == "boom"]
    assert exited  # there, cut
    assert len(exited[0]["reason"]["detail"]) < 100 * 1024
    assert exited[0]["reason"]["detail"].endswith("more characters]")
    assert any(e["path"] == "after" for e in seen)  # and the stream went on after it
    assert status.returncode == 0, status.stderr  # a status row carries its last exit, cut
    rows = json.loads(status.stdout)["actors"]
    assert all(len(row["last_exit"] or "") < 100 * 1024 for row in rows)


async def test_a_follower_too_slow_for_the_output_is_told_what_it_missed() -> None:
    name = f"slow-follower{os.getpid()}"
    with trio.fail_after(TIMEOUT):
        async with open_system(name=name) as system:
            printer = await system.spawn(Printer, name="printer", process=True)
            client = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await client.connect(str(socket_path(name)))
            async with open_channel(socket.socket(fileno=client.detach())) as channel:
                await send_control(channel, Request(verb="logs", follow=True))
                await printer.ask(Say(what="many"))  # while this reader reads nothing

                async def printed() -> bool:
                    return system.output.lines[-1].text.startswith("line 029999")

                await eventually(printed, what="the worker's output to reach the master")
                seen: list[Message] = []

                async def read_until(done: object) -> None:
                    while True:
                        for frame in await channel.receive_some():
                            seen.append(decode_message(frame))
                            if done(seen[-1]):  # type: ignore[operator]
                                return

                await read_until(lambda item: isinstance(item, Note))
                notes = [item for item in seen if isinstance(item, Note)]
                assert "left out" in notes[0].text
                await printer.ask(Say(what="after\n"))  # the stream goes on after it
                await read_until(lambda item: isinstance(item, LogLine) and item.text == "after")
    texts = [item.text for item in seen if isinstance(item, LogLine)]
    assert texts[0].startswith("line 000000 ")
    assert len(texts) < 30_000  # some were left out, and said so


# -- the CLI's rough edges -----------------------------------------------------------------


async def test_logs_piped_into_head_end_quietly() -> None:
    name = f"piped{os.getpid()}"
    with trio.fail_after(TIMEOUT):
        async with open_system(name=name) as system:
            printer = await system.spawn(Printer, name="printer", process=True)
            await printer.ask(Say(what="many"))  # far more than a pipe holds

            async def printed() -> bool:
                return system.output.lines[-1].text.startswith("line 029999")

            await eventually(printed, what="the worker's output to reach the master")
            command = (f"{sys.executable} -m actors logs {name} --json | head -1; "
                       "exit ${PIPESTATUS[0]}")
            result = await trio.run_process(["bash", "-c", command], capture_stdout=True,
                                            capture_stderr=True, check=False, cwd=ROOT)
    assert result.stderr.decode() == ""  # no BrokenPipeError, not even at exit
    assert result.returncode == 0
    assert json.loads(result.stdout)["path"] == "printer"


def test_status_shows_no_cpu_before_there_is_an_interval(master: Master) -> None:
    first = statuses(master)
    workers = [row for row in first.values() if row["kind"] in ("worker", "acceptor")]
    assert workers
    assert all(row["cpu"] is None for row in workers), workers  # not a made-up 0
    table = cli("status", master.name, check=True).stdout
    assert all(f" {row['pid']} " in table for row in workers)
    second = statuses(master)
    assert all(isinstance(row["cpu"], float) for row in second.values()
               if row["kind"] in ("worker", "acceptor"))


def test_reload_of_one_acceptor_replaces_that_one(master: Master) -> None:
    before = acceptors(statuses(master))
    reloaded = json.loads(cli("reload", master.name, "root/greet/0", "--json", check=True).stdout)
    assert reloaded["detail"] == ["root/greet/0"]
    after = acceptors(statuses(master))
    assert after["root/greet/0"] != before["root/greet/0"]
    assert after["root/greet/1"] == before["root/greet/1"]
    one_line(cli("reload", master.name, "root/greet/7"), 1, "nothing to reload at 'root/greet/7'")


def test_a_path_not_found_suggests_the_one_it_ends(master: Master) -> None:
    one_line(cli("scale", master.name, "greet", "3"), 1,
             "no listener at 'greet' (did you mean 'root/greet'?)")
    one_line(cli("restart", master.name, "noter"), 1,
             "no supervised actor at 'noter' (did you mean 'root/noter'?)")
    one_line(cli("reload", master.name, "greet"), 1,
             "nothing to reload at 'greet' (did you mean 'root/greet'?)")
    one_line(cli("scale", master.name, "nobody", "3"), 1, "no listener at 'nobody'")


def test_top_quits_on_q_and_on_ctrl_c_and_gives_the_terminal_back(master: Master) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    # A tmux server of our own, with no configuration (a server the user runs would start
    # the command in its own environment, and its configuration could change the screen);
    # the environment that matters is given to the command itself.
    tmux = ["tmux", "-L", f"top-quits-{os.getpid()}-{time.monotonic_ns()}", "-f", "/dev/null"]
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in (
        ("PYTHONPATH", str(ROOT)), ("XDG_RUNTIME_DIR", os.environ["XDG_RUNTIME_DIR"]),
    ))
    # Once top is gone: its exit status, and the terminal's modes (back to line by line,
    # echoed: "icanon echo", not "-icanon -echo").
    modes = "stty -a | tr ' ;' '\\n\\n' | grep -x -E -- '-?(icanon|echo)' | tr '\\n' ' '"
    command = (f"env {env} {shlex.quote(sys.executable)} -m actors top {master.name}; "
               f'code=$?; modes=$({modes}); echo "exited=$code $modes."; sleep 600')

    def screen(session: str) -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True, check=True).stdout

    def quit_with(session: str, key: str) -> str:
        subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                        command], check=True)
        wait_until(lambda: "root/noter" in screen(session), what="the table in the terminal")
        subprocess.run([*tmux, "send-keys", "-t", session, key], check=True)
        wait_until(lambda: "exited=" in screen(session), what=f"top to quit on {key}")
        return screen(session)

    try:
        for session, key in (("q", "q"), ("ctrl-c", "C-c")):
            shown = quit_with(session, key)
            assert "exited=0 icanon echo ." in shown, shown
            assert "Traceback" not in shown, shown
    finally:
        found = subprocess.run([*tmux, "display-message", "-p", "#{socket_path}"],
                               capture_output=True, text=True, check=False).stdout.strip()
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        if found:
            Path(found).unlink(missing_ok=True)  # (the server leaves it behind)
