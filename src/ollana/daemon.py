"""Running in the background: detaching, the pid file, and telling the caller we are up.

POSIX: double fork and setsid; the daemon reports "ready …" or "error …" on a pipe to the
process that started it, which exits 0 or 1 accordingly. The pid file is locked with flock()
for the daemon's life, so two daemons racing for it cannot both win; a pid file nobody holds
the lock on is stale and is replaced. Windows: the daemon is a detached `ollana serve` child
whose ready line (or error) comes back on its stdout; its pid file is guarded by a liveness
check only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import platformdirs

from ollana.filemodes import open_private

__all__ = [
    "READY_TIMEOUT",
    "AlreadyRunning",
    "PidFile",
    "ReadyPipe",
    "default_log_file",
    "default_pid_file",
    "detach",
    "pid_alive",
    "redirect_output",
]

# How long the starting process waits for the daemon's ready line (mode detection and
# binding take about a second; this is only there so that a wedged start cannot hang it).
READY_TIMEOUT: Final = 120.0


def default_pid_file() -> Path:
    """The pid file used with -d when none is given: in the user state dir."""
    return platformdirs.user_state_path("ollana", appauthor=False) / "ollana.pid"


def default_log_file() -> Path:
    """The log file used with -d when none is given: in the user log dir."""
    return platformdirs.user_log_path("ollana", appauthor=False) / "ollana.log"


class AlreadyRunning(RuntimeError):
    """Another live ollana holds the pid file."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"ollana is already running ({who} holds {path})")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and, on Linux, is not a zombie)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    else:  # noqa: RET505 (mypy checks each platform's branch on its own)
        return _posix_pid_alive(pid)


def _parse_pid(text: bytes) -> int | None:
    try:
        pid = int(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return None
    return pid if pid > 0 else None


class PidFile:
    """This process's pid in a file, locked while held and removed on release."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.replaced: int | None = None
        self._fd: int | None = None
        self._owner = 0

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the pid file or raise AlreadyRunning; `replaced` is the stale pid, if any."""
        if sys.platform == "win32":
            fd, self.replaced = _open_checked(self.path)
        else:
            fd, self.replaced = _open_locked(self.path)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._owner = fd, os.getpid()

    def release(self) -> None:
        """Remove the pid file and drop the lock; safe to call twice, a no-op in a fork."""
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._owner:
            return
        with contextlib.suppress(OSError):
            if sys.platform == "win32":
                os.close(fd)  # Windows cannot remove an open file
                fd = -1
            self.path.unlink()
        if fd >= 0:
            os.close(fd)


class ReadyPipe:
    """The daemon's end of the pipe to the process that started it: one line, then closed."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def ready(self, line: str) -> None:
        """Report that we listen; `line` is what the starting process prints."""
        self._send(f"ready {os.getpid()} {line}")

    def error(self, message: str) -> None:
        """Report why we could not start."""
        self._send(f"error {message}")

    def _send(self, text: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The starting process may be gone (killed): the daemon goes on regardless.
        with contextlib.suppress(OSError):
            os.write(fd, (" ".join(text.splitlines()) + "\n").encode())
        os.close(fd)

    def close(self) -> None:
        """Close without a word; the starting process then reports an early exit."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def redirect_output(log_file: Path) -> None:
    """Point stdin at /dev/null, and stdout and stderr at the log file (appending)."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = open_private(log_file, os.O_WRONLY | os.O_APPEND)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def detach(pid_file: Path, log_file: Path, argv: Sequence[str]) -> ReadyPipe:
    """Go to the background; returns only in the daemon, the caller exits with its outcome.

    `argv` is the command line after the program name (used on Windows to start the
    detached process). OSError, before anything starts, when the files cannot be written.
    """
    pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(open_private(log_file, os.O_WRONLY | os.O_APPEND))
    if sys.platform == "win32":
        sys.exit(_spawn_detached(pid_file, log_file, argv))
    else:  # mypy checks each platform branch on its own
        return _fork_detached(log_file)


def _await_ready(fd: int, log_file: Path) -> int:
    """In the starting process: print the daemon's ready line or error; return the exit code."""
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                print(
                    f"Error: ollana did not report ready in {READY_TIMEOUT:g}s; see {log_file}",
                    file=sys.stderr,
                )
                return 1
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    kind, _, rest = data.decode(errors="replace").strip().partition(" ")
    if kind == "ready":
        pid, _, line = rest.partition(" ")
        print(f"{line} (pid {pid}, log {log_file})", flush=True)
        return 0
    reason = rest if kind == "error" else f"ollana exited before it was ready; see {log_file}"
    print(f"Error: {reason}", file=sys.stderr)
    return 1


if sys.platform == "win32":

    def _windows_pid_alive(pid: int) -> bool:
        # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return bool(kernel32.GetLastError() == 5)  # ERROR_ACCESS_DENIED: it exists
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)

    def _open_checked(path: Path) -> tuple[int, int | None]:
        """Open the pid file unless a live ollana's pid is in it; no locking here."""
        try:
            old = _parse_pid(path.read_bytes())
        except OSError:
            old = None
        if old and old != os.getpid() and pid_alive(old):
            raise AlreadyRunning(path, old)
        return open_private(path, os.O_RDWR | os.O_BINARY), old

    def _spawn_detached(pid_file: Path, log_file: Path, argv: Sequence[str]) -> int:
        """Start `ollana serve` (without -d) detached; wait for its ready line."""
        args = [sys.executable, "-m", "ollana", *(a for a in argv if a not in ("-d", "--daemon"))]
        args += ["--pid-file", str(pid_file), "--log-file", str(log_file)]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OLLANA_DAEMON": "0"},
            creationflags=subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP,
        )
        assert proc.stdout is not None
        said: list[str] = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if " listening on " in line:
                print(f"{line} (pid {proc.pid}, log {log_file})", flush=True)
                return 0
            if line:
                said.append(line)
        code = proc.wait()
        reason = said[-1] if said else f"Error: ollana exited with {code}; see {log_file}"
        print(reason, file=sys.stderr)
        return code or 1

else:
    import fcntl

    def _posix_pid_alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rpartition(")")[2].split()[:1] != ["Z"]

    def _fork_detached(log_file: Path) -> ReadyPipe:
        """Double fork and setsid; returns in the daemon only."""
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        first = os.fork()
        if first:
            os.close(write_end)
            os.waitpid(first, 0)
            sys.exit(_await_ready(read_end, log_file))
        os.close(read_end)
        os.setsid()  # no controlling terminal: a closed terminal does not stop us
        if os.fork():
            os._exit(0)  # the session leader goes, so we can never acquire a terminal again
        redirect_output(log_file)
        os.chdir("/")  # hold no directory (or its mount) busy
        return ReadyPipe(write_end)

    def _open_locked(path: Path) -> tuple[int, int | None]:
        """Open and flock the pid file; returns it and the stale pid it held, if any."""
        while True:
            fd = open_private(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _parse_pid(os.pread(fd, 64, 0))
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise AlreadyRunning(path, holder) from None
                raise
            # The holder unlinks the file on its way out: a lock on that old file is no lock.
            with contextlib.suppress(FileNotFoundError):
                here, ours = os.stat(path), os.fstat(fd)
                if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                    return fd, _parse_pid(os.pread(fd, 64, 0))
            os.close(fd)
