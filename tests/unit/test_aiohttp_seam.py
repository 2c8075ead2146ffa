"""The one module that touches aiohttp's internals checks them at import, by name."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from ollana.http import _aiohttp

SRC = Path(_aiohttp.__file__).resolve().parents[1]


def test_the_installed_aiohttp_has_every_internal_ollana_uses() -> None:
    _aiohttp.check()  # raises ImportError naming what is missing


def test_a_missing_internal_is_named_with_the_supported_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Renamed:
        __slots__ = ("_messages_v2",)

    monkeypatch.setattr(_aiohttp, "_REQUIRED", ((Renamed, "_messages"),))
    with pytest.raises(ImportError) as raised:
        _aiohttp.check()
    text = str(raised.value)
    assert "Renamed._messages" in text
    assert aiohttp.__version__ in text
    assert _aiohttp.SUPPORTED in text


def test_the_supported_range_is_the_one_pyproject_installs() -> None:
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()
    assert f'"aiohttp{_aiohttp.SUPPORTED}"' in pyproject


def test_no_other_module_imports_aiohttp_internals() -> None:
    private = re.compile(
        r"from aiohttp\.(web_protocol|base_protocol|http_parser) import|\b_ErrInfo\b"
    )
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "_aiohttp.py" and private.search(path.read_text())
    ]
    assert offenders == []
