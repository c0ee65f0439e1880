"""Keep one plugin process running: restart it when it dies, and only then.

A plugin started in the background is alone: if it crashes, is killed with ``kill -9`` or by
the kernel's out-of-memory killer, nothing notices, and what depends on it (a group asking a
flavor about health) goes on with stale answers. So ``infrakit plugin start`` runs each
plugin under one of these, detached in its own session, as::

    python -m infrakit.supervise [--first-delay SECONDS] SOCKET -- COMMAND [ARG...]

The supervisor runs COMMAND as its child, with the same standard output and error (the
plugin's log), and:

- restarts it when it exits with a non-zero status or is killed by a signal, 1 s after the
  first failure, doubling up to 60 s while it keeps failing, back to 1 s once a run has
  lasted 60 s; each restart is one line in the log that says what happened;
- ends when it exits with status 0, which is what a plugin does on SIGTERM;
- passes SIGTERM and SIGINT on to it, and ends once it has exited, without restarting it
  whatever its status (``plugin stop`` stops a supervised plugin this way);
- does not restart a first run that never came up (bound SOCKET with its own pid in
  ``SOCKET.pid``, which a plugin does once its start-up has gone well): it ends with the same
  status, writing nothing, so ``plugin start`` reports the failure as it would without it,
  and a plugin that cannot start does not fail over and over in the background.

It holds a lock on ``.NAME.supervisor.pid`` beside the socket for its whole life, as a plugin
does on its own pid file: a second supervisor for the name is refused, and the pid written
there is believed only while the lock is held. The dot keeps the name apart from every
plugin's files, since a plugin name cannot start with one.

One runs per plugin, so it stays small: a few modules of the standard library, with paths as
strings and files looked at with :func:`os.stat`; ``pathlib``, ``socket`` and the rest of
infrakit would take it from about 10.5 MB resident to 12.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import sys
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (and re)

if TYPE_CHECKING:
    from types import FrameType

    PathLike = str | os.PathLike[str]

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
#: A run at least this long resets the delay to the first one.
STEADY = 60.0
#: How often the first run is checked for having come up.
POLL = 0.02
#: How often a wait between restarts looks whether it was asked to stop.
TICK = 0.05
USAGE = "usage: python -m infrakit.supervise [--first-delay SECONDS] SOCKET -- COMMAND [ARG...]"
_STOPPING = (signal.SIGTERM, signal.SIGINT)


def pid_file(sock: PathLike) -> str:
    """The supervisor's pid file for the plugin at ``sock``."""
    head, name = os.path.split(os.fspath(sock))
    return os.path.join(head, f".{name}.supervisor.pid")


class Running:
    """The live supervisor of a plugin, its pid file held open: :meth:`exited` says when it
    has exited (the kernel drops its lock then), even once it has removed the file."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd = fd

    def exited(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        os.close(self._fd)


def find_supervisor(sock: PathLike) -> Running | None:
    """The live supervisor of the plugin at ``sock``, if there is one; close it when done."""
    try:
        fd = os.open(pid_file(sock), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return Running(int(text), fd)
    os.close(fd)
    return None


def supervisor_pid(sock: PathLike) -> int | None:
    """The pid of the live supervisor of the plugin at ``sock``; None if there is none."""
    found = find_supervisor(sock)
    if found is None:
        return None
    found.close()
    return found.pid


def backoff(previous: float | None, ran: float, first: float = FIRST_DELAY) -> float:
    """The wait before the next restart: ``first`` after the first failure or after a run of
    :data:`STEADY` seconds or more, else twice ``previous``, at most :data:`MAX_DELAY`."""
    if previous is None or ran >= STEADY:
        return first
    return min(previous * 2, MAX_DELAY)


def describe(status: int) -> str:
    """What a wait status says happened, as a user reads it."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = f" ({signal.Signals(sig).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {sig}{name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def came_up(sock: str, pid: int) -> bool:
    """Whether the plugin ``pid`` has come up at ``sock``: it writes its pid in ``SOCK.pid``
    (after removing a socket left by a dead one) and binds ``sock`` once its start-up has
    gone well. One that fails removes both; one that is killed leaves them behind."""
    try:
        with open(sock + ".pid", "rb") as f:
            written = f.read(32).strip()
        return written == str(pid).encode() and stat.S_ISSOCK(os.stat(sock).st_mode)
    except OSError:
        return False


def say(text: str) -> None:
    """One line in the plugin's log, stamped as the plugin stamps its own."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    sys.stderr.write(f"{stamp},{int(now % 1 * 1000):03d} supervisor: {text}\n")
    sys.stderr.flush()


class Supervisor:
    """Runs ``command``, the plugin serving at ``sock``, again each time it fails."""

    def __init__(self, sock: str, command: list[str], first_delay: float = FIRST_DELAY):
        self.sock = sock
        self.name = os.path.basename(sock)
        self.command = command
        self.first_delay = first_delay
        self.child: int | None = None
        self.stopping: int | None = None
        """The signal that asked the supervisor to stop, once one has."""

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT: pass it on, and restart nothing after. A ``waitpid`` or a
        ``sleep`` it interrupts goes on when it returns (PEP 475)."""
        self.stopping = self.stopping or signum
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)

    def run(self) -> int:
        """Supervise until the plugin exits for good; its last wait status."""
        delay: float | None = None
        restarts = 0
        came_up = False
        while True:
            started = time.monotonic()
            pid = self.spawn()
            if came_up:
                status = self.wait(pid)
            else:
                status, came_up = self.wait_first(pid)
            ran = time.monotonic() - started
            if self.stopping is not None:
                return status
            if status == 0:  # even before it was seen up: a stop, said as such
                say(f"{self.name} (pid {pid}) exited with status 0 after {ran:.1f}s; "
                    "not restarting it")
                return status
            if not came_up:  # `plugin start` tells its caller the first run's failure
                return status
            delay = backoff(delay, ran, self.first_delay)
            restarts += 1
            say(f"{self.name} (pid {pid}) {describe(status)} after {ran:.1f}s; "
                f"restarting in {delay:g}s (restart {restarts})")
            if not self.pause(delay):
                return 0  # stopped with nothing running

    def spawn(self) -> int:
        """Start the plugin; a stop asked for meanwhile is passed on to it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
        try:
            self.child = os.posix_spawnp(
                self.command[0], self.command, os.environ, setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
            if self.stopping is not None:
                os.kill(self.child, self.stopping)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
        return self.child

    def wait(self, pid: int) -> int:
        _, status = os.waitpid(pid, 0)
        self.child = None
        return status

    def wait_first(self, pid: int) -> tuple[int, bool]:
        """Wait for the first run; (status, whether it came up before it exited)."""
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # killed before we looked? Its socket and pid file are still there
                self.child = None
                return status, came_up(self.sock, pid)
            if came_up(self.sock, pid):
                return self.wait(pid), True
            time.sleep(POLL)

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as a stop is asked for."""
        deadline = time.monotonic() + seconds
        while self.stopping is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(TICK, left))
        return False


def _lock(path: str) -> int | None:
    """Lock the supervisor's pid file and write our pid in it; None if another holds it."""
    while True:
        # never through a link: whatever it leads to would be truncated
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # removed by a supervisor on its way out: lock the new one


def _exit_like(status: int) -> None:
    """End as the plugin ended: with its exit status, or killed by the same signal (with no
    core dump of our own), so that ``plugin start`` reports what it would without us. At
    once, with nothing to tidy, so that the lock on the pid file goes with the process."""
    sys.stderr.flush()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        import resource

        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(
                resource.RLIMIT_CORE)[1]))
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _parse(args: list[str]) -> tuple[str, list[str], float] | None:
    first = FIRST_DELAY
    if args[:1] == ["--first-delay"] and len(args) > 1:
        try:
            first = float(args[1])
        except ValueError:
            return None
        args = args[2:]
    if len(args) < 3 or args[1] != "--" or first <= 0:
        return None
    return args[0], args[2:], first


def main(args: list[str]) -> None:
    parsed = _parse(args)
    if parsed is None:
        sys.exit(USAGE)
    sock, command, first = parsed
    name = os.path.basename(sock)
    try:
        lock = _lock(pid_file(sock))
    except OSError as exc:
        why = ("it is a symbolic link: refusing to write through it; remove it"
               if exc.errno == errno.ELOOP else exc.strerror)
        sys.exit(f"supervisor: cannot write {pid_file(sock)}: {why}")
    if lock is None:
        sys.exit(f"supervisor: {name} already has a supervisor (pid "
                 f"{supervisor_pid(sock) or 'unknown'}); stop both with "
                 f"`infrakit plugin stop {name}`")
    supervisor = Supervisor(sock, command, first)
    for sig in _STOPPING:
        signal.signal(sig, supervisor.on_signal)
    try:
        status = supervisor.run()
    except OSError as exc:
        say(f"cannot run {command[0]} for {name}: {exc}; giving up")
        status = 127 << 8
    finally:  # the lock stays held until the process is gone
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file(sock))
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
