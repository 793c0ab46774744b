"""Start an external command so that it dies with the master: run as a file,
``python -I -S _launch.py MASTER_PID FDS NAMES -- argv...``, it sets the parent-death
signal (SIGKILL, kept across exec), checks that the master is still there, moves the
listening sockets it was given (``FDS``: their fd numbers, comma-separated, or ``-``) to fds
3, 4, ... in blocking mode (as systemd passes them) and points the systemd
socket-activation variables at itself (``LISTEN_PID`` must be the pid of the program that
reads them, which only the process itself knows before it execs; ``NAMES``: the
colon-separated ``LISTEN_FDNAMES``), then execs the program. It imports nothing of the
runtime (it runs isolated, ``-I -S``, so it starts in milliseconds): only the standard
library.

Why a launcher rather than a ``preexec_fn``: the master runs threads (trio's, the fork
server's watchers), and running Python code between fork and exec in a threaded process
can deadlock; the parent-death signal must be set by the process that then execs.

Exit statuses before the exec (the program's own after it): 127 the program cannot be
found, 126 it cannot be run, 125 the launcher was called wrongly, 124 the master is gone.
"""

import ctypes
import fcntl
import os
import signal
import sys
from typing import NoReturn

_PR_SET_PDEATHSIG = 1


def _fail(status: int, text: str) -> NoReturn:
    sys.stderr.write(f"trio-actors: {text}\n")
    sys.stderr.flush()
    os._exit(status)


def main(arguments: list[str]) -> None:
    try:
        separator = arguments.index("--")
        master_pid, names = int(arguments[0]), arguments[2]
        given = [int(fd) for fd in arguments[1].split(",")] if arguments[1] != "-" else []
    except (ValueError, IndexError):
        _fail(125, "usage: _launch.py MASTER_PID FDS NAMES -- argv...")
    argv = arguments[separator + 1:]
    if not argv:
        _fail(125, "no command to run")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        _fail(125, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != master_pid:
        _fail(124, "the master is gone")  # it died before the signal was set
    if given:
        _move_to_three(given)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = str(len(given))
        os.environ["LISTEN_FDNAMES"] = names
    else:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # (the master's own, if it was socket-activated)
    # Python ignores these at start, and an ignored signal stays ignored across exec: the
    # program gets the dispositions a shell would give it.
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        _fail(127, f"{argv[0]}: command not found")
    except PermissionError:
        _fail(126, f"{argv[0]}: permission denied")
    except OSError as exc:
        _fail(126, f"{argv[0]}: {exc.strerror or exc}")


def _move_to_three(given: list[int]) -> None:
    """Put the fds ``given`` at 3, 4, ..., inherited by the program and blocking."""
    # Out of the way of 3.. first (a given fd may sit where another one must go).
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(given)) for fd in given]
    for fd in given:
        os.close(fd)
    for target, fd in enumerate(high, start=3):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
        # The flag is the open file's, shared with the master's copy: the master never
        # accepts on a socket it passes to commands, so only the program reads it.
        os.set_blocking(target, True)


if __name__ == "__main__":
    main(sys.argv[1:])
