"""Files others can change are refused, with the command that fixes them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ollana.filemodes import open_private, unsafe_directory, unsafe_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and owners")


def made(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "file"
    path.write_text("x")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_only_its_owner_reads_is_safe(tmp_path: Path, mode: int) -> None:
    assert unsafe_file(made(tmp_path, mode), private=True) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_private_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = made(tmp_path, mode)
    why = unsafe_file(path, private=True)
    assert why is not None
    assert f"chmod 600 {path}" in why
    assert f"{mode:04o}" in why


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o444])
def test_a_shared_file_only_its_owner_writes_is_safe(tmp_path: Path, mode: int) -> None:
    assert unsafe_file(made(tmp_path, mode)) is None


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = made(tmp_path, mode)
    why = unsafe_file(path)
    assert why is not None
    assert f"chmod go-w {path}" in why


def test_a_missing_file_is_not_unsafe(tmp_path: Path) -> None:
    assert unsafe_file(tmp_path / "absent") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = made(tmp_path, 0o600)
    os.chown(path, 65534, 65534)
    why = unsafe_file(path, private=True)
    assert why is not None
    assert "another user (uid 65534)" in why
    assert f"chown {os.geteuid()} {path}" in why


def test_open_private_creates_0600_and_narrows_an_older_file(tmp_path: Path) -> None:
    new, old = tmp_path / "d" / "new", tmp_path / "old"
    os.close(open_private(new, os.O_WRONLY))
    assert new.stat().st_mode & 0o777 == 0o600
    assert new.parent.stat().st_mode & 0o777 == 0o700
    old.write_text("x")
    old.chmod(0o644)
    os.close(open_private(old, os.O_WRONLY | os.O_APPEND))
    assert old.stat().st_mode & 0o777 == 0o600


def test_open_private_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError, match=r"symbolic link|Too many levels"):
        open_private(tmp_path / "link", os.O_WRONLY)
    assert target.read_text() == "keep"


@pytest.mark.parametrize(("mode", "refused"), [(0o700, False), (0o755, False), (0o777, True)])
def test_a_directory_others_can_write_cannot_hold_our_files(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    path = tmp_path / "dir"
    path.mkdir()
    path.chmod(mode)
    why = unsafe_directory(path, "the pid file")
    assert (why is not None) is refused
    if why is not None:
        assert f"chmod o-w {path}" in why and "the pid file" in why
    assert unsafe_directory(tmp_path / "missing", "x") is None
