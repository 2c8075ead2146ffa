"""`ollana device show | list | allow | disable`, in process and as real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ollana.cli import main
from ollana.identity import DeviceStore, format_device_id
from tests.support.certs import make_cert


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["device", *args], env={"OLLANA_HOME": str(home)})


def test_show_makes_the_identity_once(tmp_path: Path) -> None:
    first = run(tmp_path, "show")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("Device ID: ")
    shown = first.stdout.removeprefix("Device ID: ").strip()
    assert len(shown.split("-")) == 8
    assert run(tmp_path, "show").stdout == first.stdout
    if sys.platform != "win32":
        assert stat.S_IMODE((tmp_path / "device.key").stat().st_mode) == 0o600


def test_home_option_wins_over_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["device", "--home", str(tmp_path / "flag"), "show"],
        env={"OLLANA_HOME": str(tmp_path / "env")},
    )
    assert result.exit_code == 0
    assert (tmp_path / "flag" / "device.crt").exists()
    assert not (tmp_path / "env").exists()


def test_allow_list_disable_round_trip(tmp_path: Path) -> None:
    device_id, _ = make_cert()
    grouped = format_device_id(device_id)
    added = run(tmp_path, "allow", device_id.upper())
    assert (added.exit_code, added.stdout) == (0, f"Added Device ID: {grouped}\n")
    assert "not known yet" in added.stderr
    again = run(tmp_path, "allow", grouped)
    assert (again.exit_code, again.stdout) == (0, f"Device ID {grouped} is already allowed\n")
    listed = run(tmp_path, "list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[lines.index("Allowed devices:") + 1].strip().startswith(grouped)
    removed = run(tmp_path, "disable", device_id[:16])
    assert (removed.exit_code, removed.stdout) == (
        0,
        f"Disabled Device ID {grouped}: removed from the allow list"
        " (`ollana device allow` adds it back)\n",
    )
    assert device_id not in DeviceStore(tmp_path).allowed()  # removed, not kept disabled
    missing = run(tmp_path, "remove", device_id[:16])  # another name for the same
    assert missing.exit_code == 1
    assert missing.stdout == f"Device ID {format_device_id(device_id[:16])} is not allowed\n"


def test_list_shows_nearby_devices_and_allow_takes_their_prefix(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    near_id, near_der = make_cert()
    store.record_seen(near_id, "192.0.2.20:11435", "server", near_der)
    last_line = run(tmp_path, "list").stdout.splitlines()[-1].split()
    assert last_line[:5] == [
        format_device_id(near_id),
        "192.0.2.20:11435",
        "server",
        "last",
        "seen",
    ]
    assert run(tmp_path, "allow", near_id[:16], "--name", "gpu box").exit_code == 0
    document = json.loads(run(tmp_path, "list", "--json").stdout)
    assert document["nearby"] == []
    assert [(d["id"], d["name"], d["cert_known"]) for d in document["allowed"]] == [
        (near_id, "gpu box", True)
    ]
    assert len(document["device"]) == 64


def test_prefix_errors_are_clear(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.allow("abcdef01" * 2 + "1" * 48)
    store.allow("abcdef01" * 2 + "2" * 48)
    ambiguous = run(tmp_path, "disable", "abcdef01" * 2)
    assert ambiguous.exit_code == 1
    assert "matches 2 devices" in ambiguous.stderr
    short = run(tmp_path, "allow", "abc")
    assert short.exit_code == 1
    assert "too short" in short.stderr
    unknown = run(tmp_path, "allow", "12345678" * 2)
    assert unknown.exit_code == 1
    assert "no known device" in unknown.stderr
    assert len(store.allowed()) == 2


def test_corrupt_allow_list_is_reported_and_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nid = "abc\n')
    for args in (("list",), ("allow", "a" * 64), ("disable", "a" * 8)):
        result = run(tmp_path, *args)
        assert result.exit_code == 1, args
        assert str(path) in result.stderr
        assert "line 2" in result.stderr
    assert path.read_text() == '[[device]]\nid = "abc\n'


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    assert run(tmp_path, "show").exit_code == 0
    key = tmp_path / "device.key"
    key.chmod(0o644)
    result = run(tmp_path, "show")
    assert result.exit_code == 1
    assert f"chmod 600 {key}" in result.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o644


def _ollana(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLANA_", "OLLAMA_"))}
    env["OLLANA_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "ollana", "device", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_real_processes_allowing_at_once_all_land(tmp_path: Path) -> None:
    ids = [make_cert()[0] for _ in range(6)]
    processes = [_ollana(tmp_path, "allow", device_id) for device_id in ids]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * len(ids), outputs
    assert sorted(out for out, _ in outputs) == sorted(
        f"Added Device ID: {format_device_id(i)}\n" for i in ids
    )
    assert set(DeviceStore(tmp_path).allowed()) == set(ids)
    shown = _ollana(tmp_path, "show").communicate(timeout=120)[0]
    assert shown.startswith("Device ID: ")
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers == []


def test_allow_prints_the_full_id_and_the_name_it_announced(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    near_id, near_der = make_cert()
    store.record_seen(near_id, "192.0.2.20:11435", "server", near_der, name="gpu box")
    assert "gpu box" in run(tmp_path, "list").stdout
    added = run(tmp_path, "allow", near_id[:16])
    assert (added.exit_code, added.stdout) == (
        0,
        f"Added Device ID: {format_device_id(near_id)} (gpu box)\n",
    )
    # 8 digits, which the README once suggested, are no longer enough.
    short = run(tmp_path, "allow", near_id[:8])
    assert short.exit_code == 1
    assert "at least 16" in short.stderr
