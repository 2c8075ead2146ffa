"""Who may change the files ollana trusts: the key, the allow list, the config file.

A file another local user can write (or owns, and so can chmod) would let that user allow a
device, turn on `--open`, or swap the key: such a file is refused, with the command that
fixes it, as ssh refuses an `authorized_keys` others can write.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

__all__ = ["unsafe_file"]


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
