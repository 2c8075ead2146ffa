"""The remembered-servers store: survives a restart, refuses a corrupt file by name."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ollana.wake import FILE_NAME, MemoryFileError, ServerMemory

GPU = "ab" * 32
OTHER = "cd" * 32


def test_servers_are_remembered_across_a_restart(tmp_path: Path) -> None:
    memory = ServerMemory.in_home(tmp_path)
    memory.load()  # no file yet: an empty memory
    assert len(memory) == 0
    memory.seen(GPU, address="10.0.0.7:11435", mac="aa:bb:cc:dd:ee:ff", name="gpu-box", when=100.0)
    memory.seen(GPU, models=["llama3.2:latest", "qwen3:8b"], when=200.0)
    memory.woken(GPU, when=300.0)
    memory.save()
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = ServerMemory.in_home(tmp_path)  # as a restarted client reads it
    again.load()
    server = again.get(GPU)
    assert server is not None
    assert server.addresses == ("10.0.0.7:11435",)
    assert (server.mac, server.name) == ("aa:bb:cc:dd:ee:ff", "gpu-box")
    assert server.models == ("llama3.2:latest", "qwen3:8b")
    assert (server.last_seen, server.last_woken) == (200.0, 300.0)
    assert server.label == "gpu-box (abababab)"


def test_a_new_address_comes_first_and_an_unknown_mac_keeps_the_old_one(tmp_path: Path) -> None:
    memory = ServerMemory.in_home(tmp_path)
    memory.seen(GPU, address="10.0.0.7:11435", mac="aa:bb:cc:dd:ee:ff")
    server = memory.seen(GPU, address="192.168.1.7:11435", mac="")
    assert server.addresses == ("192.168.1.7:11435", "10.0.0.7:11435")
    assert server.mac == "aa:bb:cc:dd:ee:ff"


def test_only_changes_make_it_worth_a_write(tmp_path: Path) -> None:
    memory = ServerMemory.in_home(tmp_path)
    memory.seen(GPU, address="10.0.0.7:11435", when=1.0)
    memory.save()
    assert not memory.dirty
    memory.seen(GPU, address="10.0.0.7:11435", when=2.0)  # seen again, nothing new
    assert not memory.dirty
    memory.seen(GPU, models=["llama3.2:latest"])
    assert memory.dirty


def test_a_server_is_found_by_name_or_id_prefix(tmp_path: Path) -> None:
    memory = ServerMemory.in_home(tmp_path)
    memory.seen(GPU, name="gpu-box")
    memory.seen(OTHER, name="laptop")
    assert memory.find("gpu-box").device_id == GPU
    assert memory.find("cdcdcdcd").device_id == OTHER
    with pytest.raises(LookupError, match="no remembered server"):
        memory.find("nas")


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"format": 1, "servers": [{"device": "nope"}]}).encode(),
        json.dumps({"format": 1, "servers": [{"device": GPU, "mac": "zz"}]}).encode(),
        json.dumps({"format": 1, "servers": [{"device": GPU, "last_seen": "x"}]}).encode(),
        json.dumps({"format": 99, "servers": []}).encode(),
    ],
)
def test_a_corrupt_file_is_a_clear_error_naming_it_and_is_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(content)
    memory = ServerMemory.in_home(tmp_path)
    with pytest.raises(MemoryFileError, match=str(path)):
        memory.load()
    assert path.read_bytes() == content


def test_a_later_wake_time_on_disk_is_kept(tmp_path: Path) -> None:
    client = ServerMemory.in_home(tmp_path)
    client.seen(GPU, address="10.0.0.7:11435")
    client.save()
    command = ServerMemory.in_home(tmp_path)  # `ollana wake` beside the running client
    command.load()
    command.woken(GPU, when=500.0)
    command.save()
    client.seen(GPU, models=["llama3.2:latest"])
    client.save()
    again = ServerMemory.in_home(tmp_path)
    again.load()
    server = again.get(GPU)
    assert server is not None and server.last_woken == 500.0
    assert server.models == ("llama3.2:latest",)
