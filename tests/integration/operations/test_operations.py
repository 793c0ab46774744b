"""Operating a running system from outside: signals, the CLI against real masters, reloads
with new code, scaling under load, limits, metrics, a live view in a real terminal."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actors import (
    Acceptor,
    ActorExited,
    ActorReady,
    listener,
    open_system,
    supervisor,
)
from tests.events import next_event, received
from tests.integration.listening.test_listener import Echo, Keeper, echo_once
from tests.leaks import descendants
from tests.repository import ROOT
from tests.waiting import TIMEOUT, wait_until

SCRIPT = Path(__file__).with_name("ops_master.py")


def cli(*arguments: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", *arguments], capture_output=True, text=True,
        timeout=TIMEOUT, check=check, cwd=ROOT,
    )


class Master:
    """tests/integration/operations/ops_master.py, run as a user runs a script (in its own
    directory, next to the greeting module it imports)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.journal = directory / "journal"
        shutil.copy(SCRIPT, directory / "ops_master.py")
        self.set_greeting("one")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "ops_master.py", name, str(self.journal)], cwd=directory,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert self.process.stdout is not None
        seen = []
        for line in self.process.stdout:  # (the workers' output comes through it too)
            seen.append(line)
            if line.startswith("ready port="):
                break
        else:
            raise AssertionError(f"the master did not start: {seen}")
        self.port = int(line.split("=")[1])

    def set_greeting(self, text: str) -> None:
        (self.directory / "greeting.py").write_text(f"TEXT = {text!r}\n")

    def greeting(self) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            return conn.recv(100).decode().split()[0]

    def finish(self, wait: float = 0.0) -> tuple[int, str, str]:
        """Its exit status and output, once it exited (killed after ``wait`` seconds)."""
        try:
            out, err = self.process.communicate(timeout=wait if wait else 0.001)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, out, err


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    running = Master(tmp_path, f"ops{os.getpid()}x{time.monotonic_ns() % 10**6}")
    try:
        yield running
    finally:
        running.finish()
        _wait_gone()


def _wait_gone() -> None:
    wait_until(lambda: not descendants(), timeout=15, what="the master's processes to go")


# -- signals on a plain script ---------------------------------------------------------


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_in_order_and_exit_0(master: Master, number: int) -> None:
    master.process.send_signal(number)
    code, out, err = master.finish(wait=30)
    assert code == 0, err
    assert f"stopped by {signal.Signals(number).name}" in out
    assert "Traceback" not in err
    assert "cleanup" in master.journal.read_text()  # the worker's cleanup() ran


def test_a_second_sigint_stops_at_once(master: Master) -> None:
    master.process.send_signal(signal.SIGINT)
    journal = master.journal
    wait_until(lambda: journal.exists() and "drain" in journal.read_text(),
               timeout=15, what="the noter to begin its 2 s drain")
    master.process.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, _, err = master.finish(wait=30)
    assert time.monotonic() - started < 3  # not the drains' time: at once
    assert code == 0
    assert "Traceback" not in err
    assert "stopping at once" in err


def test_sighup_reloads_with_the_code_on_disk(master: Master) -> None:
    assert master.greeting() == "one"
    master.set_greeting("two")
    master.process.send_signal(signal.SIGHUP)
    wait_until(lambda: master.greeting() == "two", what="the reload to bring the new code")


# -- the CLI ------------------------------------------------------------------------------


def test_cli_ls_status_events_logs(master: Master) -> None:
    listed = json.loads(cli("ls", "--json", check=True).stdout)
    mine = [s for s in listed if s["name"] == master.name]
    assert len(mine) == 1
    assert mine[0]["pid"] == master.process.pid

    status = json.loads(cli("status", master.name, "--json", check=True).stdout)
    rows = {row["path"]: row for row in status["actors"]}
    assert status["system"]["name"] == master.name
    assert rows["root"]["kind"] == "supervisor"
    assert rows["root/greet"]["kind"] == "listener"
    assert rows["root/noter"]["kind"] == "worker"
    assert rows["root/noter"]["state"] == "running"
    assert rows["root/noter"]["node"] not in ("0", rows["root"]["node"])  # its own process
    assert rows["root/noter"]["rss"] > 1_000_000
    assert rows["root/noter"]["mailbox"] == 0
    acceptors = [row for path, row in rows.items() if path.startswith("root/greet/")]
    assert [row["kind"] for row in acceptors] == ["acceptor", "acceptor"]
    master.greeting()
    status = json.loads(cli("status", master.name, "--json", check=True).stdout)
    assert sum(row["total"] for row in status["actors"] if row["kind"] == "acceptor") == 1

    table = cli("status", master.name, check=True).stdout
    assert "root/noter" in table
    assert "acceptor" in table
    pids = [str(row["pid"]) for row in status["actors"] if row["pid"]]
    assert pids
    assert all(pid in table for pid in pids), table  # piped, not a terminal: nothing cut

    events = [json.loads(line) for line in cli("events", master.name, "--json",
                                               check=True).stdout.splitlines()]
    assert any(e["type"] == "actors.ActorReady" and e["path"] == "root/noter" for e in events)

    logs = [json.loads(line) for line in cli("logs", master.name, "--json",
                                             check=True).stdout.splitlines()]
    said = [line for line in logs if "says hello" in line["text"]]
    assert said[0]["path"] == "root/noter"
    assert said[0]["stream"] == "stdout"
    assert said[0]["pid"] == rows["root/noter"]["pid"]
    assert any(line["stream"] == "stderr" and "to stderr" in line["text"] for line in logs)
    text = cli("logs", master.name, check=True)
    assert f"[root/noter {said[0]['pid']}] noter" in text.stdout


def test_cli_reload_restart_scale_stop(master: Master) -> None:
    before = json.loads(cli("status", master.name, "--json", check=True).stdout)
    pids = {row["path"]: row["pid"] for row in before["actors"]}

    reloaded = json.loads(cli("reload", master.name, "--json", check=True).stdout)
    assert reloaded["ok"]
    assert sorted(reloaded["detail"]) == ["root/greet/0", "root/greet/1", "root/noter"]

    assert json.loads(cli("restart", master.name, "root/hog", "--json", check=True).stdout)["ok"]
    assert json.loads(cli("scale", master.name, "root/greet", "3", "--json",
                          check=True).stdout)["ok"]
    after = json.loads(cli("status", master.name, "--json", check=True).stdout)
    now = {row["path"]: row["pid"] for row in after["actors"]}
    assert now["root/noter"] != pids["root/noter"]
    assert now["root/hog"] != pids["root/hog"]
    assert [p for p in now if p.startswith("root/greet/")] == [
        "root/greet/0", "root/greet/1", "root/greet/2"
    ]
    assert json.loads(cli("scale", master.name, "root/greet", "1", "--json",
                          check=True).stdout)["ok"]
    after = json.loads(cli("status", master.name, "--json", check=True).stdout)
    assert [r["path"] for r in after["actors"] if r["kind"] == "acceptor"] == ["root/greet/0"]

    assert json.loads(cli("stop", master.name, "--json", check=True).stdout)["ok"]
    code, out, _ = master.finish(wait=30)
    assert code == 0
    assert "stopped by stop" in out


def test_cli_children_terminate_restart_delete(master: Master) -> None:
    def children() -> dict[str, dict[str, object]]:
        rows = json.loads(cli("children", master.name, "root", "--json", check=True).stdout)
        return {row["name"]: row for row in rows}

    rows = children()
    assert [(name, row["kind"], row["state"]) for name, row in rows.items()] == [
        ("noter", "worker", "running"), ("hog", "worker", "running"),
        ("greet", "listener", "running"),
    ]
    assert "hog" in cli("children", master.name, "root", check=True).stdout
    assert json.loads(cli("terminate", master.name, "root/hog", "--json",
                          check=True).stdout)["ok"]
    assert (children()["hog"]["state"], children()["hog"]["pid"]) == ("terminated", None)
    running = cli("delete", master.name, "root/noter")
    assert running.returncode == 1
    assert "terminate it" in running.stderr
    assert len(running.stderr.splitlines()) == 1
    # restart starts a terminated child again (and replaces a running one, as before)
    assert json.loads(cli("restart", master.name, "root/hog", "--json", check=True).stdout)["ok"]
    assert children()["hog"]["state"] == "running"
    cli("terminate", master.name, "root/hog", check=True)
    assert "deleted" in cli("delete", master.name, "root/hog", check=True).stdout
    assert "hog" not in children()
    nobody = cli("children", master.name, "root/nobody")
    assert nobody.returncode == 1
    assert len(nobody.stderr.splitlines()) == 1


def test_cli_errors_are_one_line(master: Master) -> None:
    unknown = cli("status", "no-such-system")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("trio-actors: no system named 'no-such-system'")
    assert len(unknown.stderr.splitlines()) == 1
    bad = cli("scale", master.name, "root/greet", "many")
    assert bad.returncode == 2
    assert "N must be a number" in bad.stderr
    nothing = cli("restart", master.name, "root/nobody")
    assert nothing.returncode == 1
    assert "no supervised actor at 'root/nobody'" in nothing.stderr
    usage = cli("frobnicate")
    assert usage.returncode == 2


def test_a_reload_whose_new_code_fails_leaves_the_old_serving(master: Master) -> None:
    assert master.greeting() == "one"
    (master.directory / "greeting.py").write_text("TEXT = 'two'\nraise ImportError('broken')\n")
    failed = cli("reload", master.name)
    assert failed.returncode == 1
    assert "the new code does not import" in failed.stderr
    assert "broken" in failed.stderr
    assert master.greeting() == "one"  # the old workers serve on
    master.set_greeting("three")
    assert cli("reload", master.name).returncode == 0
    assert master.greeting() == "three"


def test_a_reload_whose_main_script_has_a_syntax_error_says_where(master: Master) -> None:
    script = master.directory / "ops_master.py"
    good = script.read_text()
    line = len(good.splitlines()) + 2
    script.write_text(good + "\nx = = 1\n")  # the master's own script, edited on disk
    failed = cli("reload", master.name)
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trio-actors: reload failed: ")
    assert f"SyntaxError: invalid syntax (ops_master.py, line {line})" in lines[0]
    # The fork server's own output (the traceback, file and line) is in the logs.
    logs = [json.loads(entry) for entry in cli("logs", master.name, "--json",
                                                check=True).stdout.splitlines()]
    server = [entry["text"] for entry in logs if entry["path"] == "@forkserver"]
    assert any(f'ops_master.py", line {line}' in text for text in server), server
    assert any(text.startswith("SyntaxError: invalid syntax") for text in server), server
    assert master.greeting() == "one"  # the old workers serve on
    script.write_text(good)
    master.set_greeting("two")
    assert cli("reload", master.name).returncode == 0
    assert master.greeting() == "two"


def test_a_reload_whose_new_fork_server_dies_says_what_it_said_last(master: Master) -> None:
    script = master.directory / "ops_master.py"
    script.write_text(script.read_text() + "\nos.write(2, b'no place for me here\\n')\n"
                      "os._exit(3)\n")  # (which only the new fork server runs)
    failed = cli("reload", master.name)
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "the fork server exited with status 3 (it said last: no place for me here)" in (
        lines[0])
    assert master.greeting() == "one"


def test_a_reload_whose_new_workers_fail_to_start_stops_there(master: Master) -> None:
    master.set_greeting("crash")
    failed = cli("reload", master.name, "root/greet")
    assert failed.returncode == 1
    assert "did not start" in failed.stderr
    assert master.greeting() == "one"  # both old acceptors serve on
    events = [json.loads(line) for line in cli("events", master.name, "--json",
                                               check=True).stdout.splitlines()]
    aborted = [e for e in events if e["type"] == "actors.ReloadAborted"]
    assert aborted
    assert aborted[-1]["replaced"] == []


def test_a_stale_socket_is_replaced_and_not_listed(master: Master, tmp_path: Path) -> None:
    socket_file = Path(json.loads(cli("ls", "--json", check=True).stdout)[0]["socket"])
    master.process.send_signal(signal.SIGKILL)
    master.finish()
    _wait_gone()
    assert socket_file.exists()  # left behind by the killed master
    assert master.name not in [s["name"] for s in json.loads(cli("ls", "--json").stdout)]
    (tmp_path / "again").mkdir()
    again = Master(tmp_path / "again", master.name)  # the stale socket does not stop it
    try:
        assert master.name in [s["name"] for s in json.loads(cli("ls", "--json").stdout)]
    finally:
        again.finish()


def test_another_user_is_refused(master: Master) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    path = json.loads(cli("ls", "--json", check=True).stdout)[0]["socket"]
    client = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n"
              "    print('refused', e.errno); sys.exit(0)\n"
              "try:\n    s.sendall(b'x' * 64)\n    print('answer', len(s.recv(100)))\n"
              "except (ConnectionResetError, BrokenPipeError):\n    print('answer 0')\n")
    directory = Path(path).parent
    # As it is (a 0700 directory): another user cannot even reach the socket.
    nobody = subprocess.run(["/usr/bin/python3", "-c", client, path], user=65534,
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert nobody.stdout.startswith("refused"), nobody
    # Were the directory and socket open to all, SO_PEERCRED still refuses the peer.
    mode = directory.stat().st_mode
    try:
        os.chmod(directory, 0o711)
        os.chmod(path, 0o666)
        nobody = subprocess.run(["/usr/bin/python3", "-c", client, path], user=65534,
                                capture_output=True, text=True, timeout=TIMEOUT, check=False)
    finally:
        os.chmod(directory, mode & 0o777)
        os.chmod(path, 0o600)
    assert nobody.stdout.strip() == "answer 0", nobody  # closed without a word
    assert cli("status", master.name).returncode == 0  # and the system serves its user


def test_top_shows_the_table_in_a_real_terminal(master: Master, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    # A tmux server of our own (its socket in the test's directory), with no
    # configuration: a server the user already runs would start the command with its own
    # environment (another XDG_RUNTIME_DIR, where no system of this test is), and their
    # configuration could change the screen. The environment that matters is also given
    # to the command itself.
    tmux = ["tmux", "-S", str(tmp_path / "tmux"), "-f", "/dev/null"]
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in (
        ("PYTHONPATH", str(ROOT)), ("XDG_RUNTIME_DIR", os.environ["XDG_RUNTIME_DIR"]),
    ))
    command = f"env {env} {shlex.quote(sys.executable)} -m actors top {master.name}"

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"],
                              capture_output=True, text=True, check=True).stdout

    try:
        subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "200", "-y", "50",
                        command], check=True)
        wait_until(lambda: "root/noter" in screen(), what="the table in the terminal")
        shown = screen()
        assert "root/noter" in shown, shown
        assert "acceptor" in shown, shown
        assert "path" in shown, shown
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def test_a_worker_past_max_memory_is_replaced(master: Master) -> None:
    before = json.loads(cli("status", master.name, "--json", check=True).stdout)
    hog = next(row for row in before["actors"] if row["path"] == "root/hog")
    os.kill(hog["pid"], signal.SIGUSR1)  # it grows past its limit (see ops_master)

    states: set[str] = set()

    def hog_now() -> dict[str, object]:
        now = json.loads(cli("status", master.name, "--json", check=True).stdout)
        # A row at every moment: between two instances (the old one going, the new one not
        # up yet) it is "restarting".
        [row] = [r for r in now["actors"] if r["path"] == "root/hog"]
        states.add(row["state"])
        return row  # type: ignore[no-any-return]

    def replaced() -> bool:
        row = hog_now()
        return row["state"] == "running" and row["pid"] != hog["pid"] and bool(row["last_exit"])

    wait_until(replaced, what="the hog to be replaced")
    assert states <= {"running", "restarting"}
    row = hog_now()
    assert isinstance(row["last_exit"], str)
    assert row["last_exit"].startswith("memory")
    assert row["restarts"] == 1


# -- in one process: scaling under load, recycling, shutdown, metrics -------------------


def tree(**options: object):  # type: ignore[no-untyped-def]
    return supervisor("root", children=[
        listener("echo", port=0, acceptor=Echo, count=2, **options),  # type: ignore[arg-type]
    ])


async def test_scale_up_and_down_under_load_fails_no_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree(), name="scale-test") as system:
            port = system.listener("root/echo").port
            keeper = Keeper(port)
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(keeper.connect_each_time, i)
                await keeper.served(200)
                await system.scale("root/echo", 4)
                await keeper.served(200)
                assert len(await system.acceptor_stats("root/echo")) == 4
                await system.scale("root/echo", 1)
                await keeper.served(200)
                keeper.stop.set()
            assert keeper.failures == []
            assert len(await system.acceptor_stats("root/echo")) == 1


async def test_acceptors_are_recycled_after_their_share_of_connections() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree(max_connections_per_worker=30, max_restarts=1),
                               name="recycle-test") as system:
            events = system.events()
            port = system.listener("root/echo").port
            before = {s.pid for s in await system.acceptor_stats("root/echo")}
            for i in range(150):
                assert await echo_once(port, b"x%d" % i) == b"x%d" % i
            exits: list[ActorExited] = []
            async for event in events:  # 150 connections, 30 each: at least 4 recycles
                if isinstance(event, ActorExited) and event.path.startswith("root/echo/"):
                    exits.append(event)
                    if len(exits) == 4:
                        break
            exits += [e for e in received(events) if isinstance(e, ActorExited)]
            after = {s.pid for s in await system.acceptor_stats("root/echo")}
            assert not after & before
            assert {e.path for e in exits} == {"root/echo/0", "root/echo/1"}
            assert {e.reason.kind for e in exits} == {"recycled"}
            # More recycles than max_restarts=1 allows: they are not failures.


class Slow(Acceptor):
    async def handle(self, stream: trio.SocketStream) -> None:
        await stream.send_all(b"hello\n")
        await trio.sleep(2)  # a request in progress: the drain waits for it


async def test_new_connections_are_refused_at_once_while_the_system_stops() -> None:
    spec = supervisor("root", children=[
        listener("slow", port=0, acceptor=Slow, count=1, policy="round_robin"),
    ])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with open_system(spec, name="refuse-test") as system:
                port = system.listener("root/slow").port
                busy = await trio.open_tcp_stream("127.0.0.1", port)
                assert await busy.receive_some() == b"hello\n"

                async def knock_while_stopping() -> None:
                    await trio.sleep(0.5)  # the system is draining the busy connection
                    started = trio.current_time()
                    with pytest.raises(OSError, match=r"failed|refused"):
                        await trio.open_tcp_stream("127.0.0.1", port)
                    assert trio.current_time() - started < 1  # at once, not at the end

                nursery.start_soon(knock_while_stopping)
            await busy.aclose()


async def test_metrics_are_served_in_the_prometheus_format() -> None:
    from tests.integration.running.test_process_actors import Add, Adder

    with trio.fail_after(TIMEOUT):
        async with open_system(tree(), name="metrics-test",
                               metrics=("127.0.0.1", 0)) as system:
            adder = await system.spawn(Adder, name="adder", process=True)
            for i in range(5):
                await adder.ask(Add(a=i, b=i))
            await echo_once(system.listener("root/echo").port, b"hi")
            assert system.metrics_port is not None
            stream = await trio.open_tcp_stream("127.0.0.1", system.metrics_port)
            async with stream:
                await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                body = b""
                while chunk := await stream.receive_some():
                    body += chunk
    text = body.decode()
    assert text.startswith("HTTP/1.1 200 OK")
    assert 'actors_asks_total{path="root/adder"} 5.0' in text
    assert 'actors_ask_handling_seconds_count{path="root/adder"} 5.0' in text
    assert 'actors_ask_handling_seconds_bucket{le="+Inf",path="root/adder"} 5.0' in text
    assert 'actors_connections_total{path="root/echo/0"}' in text
    assert 'actors_resident_memory_bytes{path="root/adder"' in text
    assert 'actors_exits_total' in text or "actors_exits" in text


async def test_a_second_reuseport_system_on_the_same_port_fails_to_bind() -> None:
    from actors import BindError
    from actors._listening._sockets import runtime_directory

    with trio.fail_after(TIMEOUT):
        async with open_system(tree(policy="reuseport"), name="first") as system:
            port = system.listener("root/echo").port
            spec = supervisor("root", children=[
                listener("echo", port=port, acceptor=Echo, count=1, policy="reuseport"),
            ])
            with pytest.raises(BindError, match="address already in use"):
                async with open_system(spec, name="second"):
                    pytest.fail("two systems on one port")  # pragma: no cover
            assert await echo_once(port, b"still mine") == b"still mine"
            locks = list(runtime_directory().glob(f"port-*-{port}.lock"))
            assert len(locks) == 1
        assert not locks[0].exists()  # the claim goes with the system: nothing piles up


async def test_events_of_reload_arrive(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree(), name="reload-events") as system:
            events = system.events()
            replaced = await system.reload()
            assert replaced == ["root/echo/0", "root/echo/1"]
            await next_event(events, ActorReady, "root/echo/1")
