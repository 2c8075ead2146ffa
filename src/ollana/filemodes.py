"""Who may change the files ollana trusts: the key, the allow list, the config file.

A file another local user can write (or owns, and so can chmod) would let that user allow a
device, turn on `--open`, or swap the key: such a file is refused, with the command that
fixes it, as ssh refuses an `authorized_keys` others can write.

The files ollana writes outside its home (the pid file, the log file) are opened without
following a symbolic link, created 0600, and refused in a directory others can write: there
another user could put a link in their place and have ollana write wherever it may.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

__all__ = ["PRIVATE_MODE", "open_private", "unsafe_directory", "unsafe_file"]

PRIVATE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def unsafe_file(path: Path, *, private: bool = False) -> str | None:
    """Why `path` cannot be trusted (owned by someone else, or writable — readable too, when
    `private` — by others), with the fix; None when it can, or does not exist."""
    if sys.platform == "win32":
        return None  # the profile's ACL guards it
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return (
            f"{path} belongs to another user (uid {st.st_uid}); refusing to use it."
            f" Fix it with: chown {me} {path}"
        )
    if st.st_uid == 0 and me != 0 and private:
        return (
            f"{path} belongs to root, not to this user (uid {me}); refusing to use it."
            f" Fix it with: sudo chown {me} {path}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if private and mode & 0o077:
        return (
            f"{path} is accessible by other users (mode {mode:04o}); refusing to use it."
            f" Fix it with: chmod 600 {path}"
        )
    if mode & 0o022:
        return (
            f"{path} can be changed by other users (mode {mode:04o}); refusing to use it."
            f" Fix it with: chmod go-w {path}"
        )
    return None


def unsafe_directory(path: Path, what: str) -> str | None:
    """Why a directory cannot hold `what` (other users can write to it), with the fix; None
    when it can, or does not exist (it is made private)."""
    if sys.platform == "win32":
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002 or st.st_uid not in (os.geteuid(), 0):
        whose = "other users can write to it" if mode & 0o002 else f"it belongs to uid {st.st_uid}"
        return (
            f"{path} cannot hold {what}: {whose} (mode {mode:04o}), so one of them could put a "
            f"link there in its place. Fix it with: chmod o-w {path}, or choose a directory "
            "only you can write"
        )
    return None


def open_private(path: Path, flags: int) -> int:
    """Open (creating it 0600) a file this user owns, never through a symbolic link.

    OSError (ELOOP) for a link; PermissionError for a file of another user. A file of ours
    that others could read is made 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, flags | os.O_CREAT | _NOFOLLOW | _CLOEXEC, PRIVATE_MODE)
    try:
        if sys.platform != "win32":
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise PermissionError(
                    f"{path} belongs to another user (uid {st.st_uid}); refusing to write it"
                )
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, PRIVATE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
