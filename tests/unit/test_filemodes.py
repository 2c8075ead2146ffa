"""Files others can change are refused, with the command that fixes them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ollana.filemodes import unsafe_file

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
