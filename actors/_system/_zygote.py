"""The fork server's own process (see ``_forkserver``): ``python -m actors._system._zygote``,
or, for a system's first server, a fork of the master itself (:func:`fork_server`).

Single-threaded and without an event loop: it preloads, then forks a worker per request and
reports each worker's exit status. Kept apart from ``_forkserver`` (which the package imports)
so that running it as ``__main__`` does not define the message classes twice.

A fresh interpreter has to import trio, pydantic, the runtime and the main script before
its first fork (~0.2-0.5 s here, the whole wait for a system's first worker); a fork of the
master has all of it already, in a few milliseconds. The fork is made only while no thread
runs beside the master's event loop (a fork copies other threads' locks in whatever state
they are, and not the threads), and the forked server is made to look like a fresh one: it
keeps only its socket and stdio of the master's fds (the others become /dev/null), resets
the master's signal handlers and logging handlers, forgets the master's event loop, and
loads the main script anew (as ``__mp_main__``, as the fresh one does), so that workers
forked from either are alike.
"""

from __future__ import annotations

import array
import contextvars
import fcntl
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import traceback

from trio._core import _run as trio_run_state

from protocol import (
    MAX_FDS_PER_FRAME,
    FrameDecoder,
    FrameKind,
    Message,
    decode_message,
    encode_message,
)

from .._running._forkserver import ChildExited, Forked, ForkFailed, ForkRequest, Preload, Preloaded
from .._running._processes import CHANNEL_FD_ENV, PARENT_PID_ENV, ForkedChild, SpawnedProcess
from ._bootstrap import _die_with_parent, _name_process, load_main, run_worker

PROCESS_NAME = "actors-zygote"
"""How a fork server shows in ``ps -o comm`` (a forked one has the master's command line)."""


def _serve_forever(sock: socket.socket, parent_pid: int) -> None:
    decoder = FrameDecoder()
    fifo: list[int] = []
    # The Preload request comes first: import before any signal handling is set up here,
    # so that a main script that misbehaves at import meets a plain process.
    error = _preload(_first_request(sock, decoder, fifo))
    _send(sock, Preloaded(error=error))
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # delivered through the wakeup fd
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        # Requests that came with the Preload (or in one read) are served before waiting.
        for frame in decoder.frames():
            frame.fds = [fifo.pop(0) for _ in range(frame.nfds)]
            message = decode_message(frame)
            if not isinstance(message, ForkRequest):
                raise SystemExit(f"fork server: unexpected {type(message).__name__}")
            output = None
            if message.stdout is not None and message.stderr is not None:
                output = (message.stdout.detach(), message.stderr.detach())
            _fork(sock, selector, wake_read, wake_write, message, message.channel.detach(),
                  parent_pid, output)
        for key, _ in selector.select():
            if key.fileobj == wake_read:
                os.read(wake_read, 4096)
                _reap(sock)
                continue
            data = _receive(sock, fifo)
            if not data:
                return  # the master closed us: done
            decoder.feed(data)


def _receive(sock: socket.socket, fifo: list[int]) -> bytes:
    """One read, the fds that came with it appended to ``fifo``."""
    data, ancdata, flags, _ = sock.recvmsg(
        65536, socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4), socket.MSG_CMSG_CLOEXEC
    )
    if flags & socket.MSG_CTRUNC:
        raise SystemExit("fork server: the kernel truncated the fds sent to it")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % 4])
            fifo.extend(received)
    return data


def _first_request(sock: socket.socket, decoder: FrameDecoder, fifo: list[int]) -> Preload:
    while True:
        data = _receive(sock, fifo)
        if not data:
            raise SystemExit(0)  # the master closed us before we started
        decoder.feed(data)
        frame = decoder.next_frame()
        if frame is not None:
            message = decode_message(frame)
            if not isinstance(message, Preload):
                raise SystemExit(f"fork server: expected Preload, got {type(message).__name__}")
            return message


def _preload(message: Preload) -> str | None:
    """Import what workers will need; what failed, in words (None: everything imported).

    A failure does not stop the server: each worker that needs what failed tries again
    and reports it to the master, where its start fails with the reason. A reload uses the
    report to refuse new code that does not import."""
    for entry in reversed(message.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    failures = []
    for name in message.modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failures.append(f"importing {name} failed: {type(exc).__name__}: {exc}")
            _print_failure(failures[-1], exc)
    try:
        load_main(message.main_path, message.main_module)
    except ImportError as exc:
        failures.append(str(exc))
        # No cause for a script without its main guard: the failed start gives that
        # advice, once.
        if exc.__cause__ is not None:
            _print_failure(str(exc), exc.__cause__)
    return "; ".join(failures) or None


def _print_failure(summary: str, exc: BaseException) -> None:
    """The traceback of an import that failed, on this server's stderr: the master keeps
    it for ``trio-actors logs`` (the summary alone goes into the error it reports), where
    it shows the file and line of a syntax error, say."""
    print(f"fork server: {summary}", file=sys.stderr)
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_RUNTIME):
        frames = frames.tb_next  # the runtime's own frames (load_main) say nothing to a user
    traceback.print_exception(type(exc), exc, frames, file=sys.stderr)
    sys.stderr.flush()


_RUNTIME = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _fork(
    sock: socket.socket,
    selector: selectors.BaseSelector,
    wake_read: int,
    wake_write: int,
    request: ForkRequest,
    fd: int,
    master_pid: int,
    output: tuple[int, int] | None,
) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(fd)
        for descriptor in output or ():
            os.close(descriptor)
        _send(sock, ForkFailed(request=request.request, error=str(exc)))
        return
    if pid == 0:  # the worker
        status = 1
        try:
            selector.close()
            sock.close()
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setpgid(0, 0)
            if output is not None:  # its own stdout and stderr, read by the master
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(output[0], 1)
                os.dup2(output[1], 2)
                os.close(output[0])
                os.close(output[1])
            status = run_worker(fd, os.getppid(), master_pid=master_pid)
        finally:
            os._exit(status)
    os.close(fd)
    for descriptor in output or ():
        os.close(descriptor)
    _send(sock, Forked(request=request.request, pid=pid))


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, ChildExited(pid=pid, status=status))


def _send(sock: socket.socket, message: Message) -> None:
    data, _ = encode_message(FrameKind.SYSTEM, message)
    sock.sendall(data)


def _serve(fd: int, parent_pid: int) -> None:
    _name_process(PROCESS_NAME)
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        _serve_forever(sock, parent_pid)
    except ConnectionError:
        pass  # the master went away (reset or closed while we wrote): so do we


def main() -> None:
    fd = int(os.environ.pop(CHANNEL_FD_ENV))
    parent_pid = int(os.environ.pop(PARENT_PID_ENV))
    _serve(fd, parent_pid)


def fork_server(fd: int, output: tuple[int, int] | None) -> SpawnedProcess | None:
    """The master's :class:`ServerFork`: this process, forked into a fork server serving
    on ``fd`` (its stdout and stderr: ``output``); None while another thread runs."""
    if _threads() != 1:
        return None
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:  # (what the master printed is not printed again by the server)
            stream.flush()
    parent_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        return None  # (out of processes or memory now: a fresh interpreter may yet start)
    if pid == 0:
        status = 1
        try:
            kept = _become_fresh(fd, output)
            # Its own context, empty: the master's task's context variables stay behind.
            contextvars.Context().run(_serve, fd, parent_pid)
            del kept
            status = 0
        except SystemExit as exc:
            print(f"fork server: {exc}", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    return ForkedChild(pid)


def _threads() -> int:
    """The threads of this process, as the kernel counts them (helpers of trio's thread
    cache included, which threading.enumerate would not show)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _become_fresh(fd: int, output: tuple[int, int] | None) -> list[object]:
    """In the forked server: leave behind what was the master's, as far as the server and
    its workers could meet it. Returns what must never be freed here (see below)."""
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        try:
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    os.setpgid(0, 0)  # its own process group, as a fresh one (the master's Ctrl-C is not its)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    if output is not None:
        os.dup2(output[0], 1)
        os.dup2(output[1], 2)
    # The interpreter's own streams, on fds 0-2, as a fresh one has: the master's may be
    # someone's stand-ins (a test runner's capture, writing to a file let go of below).
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
    # The master's other fds (its sockets, pipes, files) are let go of, each replaced by
    # /dev/null rather than closed: a listening socket no longer holds its port, a pipe's
    # reader sees its end, and yet no fd number a master's object (inherited, and reachable
    # from code a worker runs: a module's connection, a logging file) still names is ever
    # reused for something of the server's or a worker's, which such an object would then
    # read or write.
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        inherited = int(name)
        if inherited in (0, 1, 2, fd, null):
            continue
        try:
            fcntl.fcntl(inherited, fcntl.F_GETFD)
        except OSError:
            continue  # (the listing's own, closed already)
        os.dup2(null, inherited)
    os.close(null)
    # The master's event loop runs no more here; a worker's trio.run must not find it.
    trio_run_state.GLOBAL_RUN_CONTEXT.__dict__.clear()
    # What the master's objects held (sockets, files) is closed now: none of them may be
    # freed (a finalizer would close an fd number that is someone else's by then), so what
    # the server lets go of is kept here, and the collector never walks the rest.
    kept: list[object] = [sys.modules.get("__main__")]
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            kept.extend(logger.handlers)
            logger.handlers.clear()
    gc.freeze()
    return kept


if __name__ == "__main__":
    main()
