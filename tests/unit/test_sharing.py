"""Device names and shares: rules by name or ID prefix, looked up once per device."""

from __future__ import annotations

from pathlib import Path

from ollana.config import DeviceRule
from ollana.identity import DeviceStore
from ollana.modes.sharing import DeviceBook
from ollana.proxy.fairqueue import DeviceLimit

LAPTOP, BUILD, OTHER = "ab" * 32, "cd" * 32, "ef" * 32


def test_rules_match_by_name_or_id_prefix_and_the_first_wins(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.allow(LAPTOP, name="Laptop")
    store.allow(BUILD)
    rules = (
        DeviceRule("laptop", max_concurrent=2),
        DeviceRule("cdcd-cdcd", weight=3.0),
        DeviceRule("cdcdcdcd", max_concurrent=9),  # after a match: never used
        DeviceRule("anonymous", max_concurrent=1),
        DeviceRule("abc", max_concurrent=5),  # neither a name nor 8+ digits: matches nothing
    )
    book = DeviceBook(store, rules)
    assert book.limit_of(LAPTOP) == DeviceLimit(max_concurrent=2)
    assert book.limit_of(BUILD) == DeviceLimit(weight=3.0)
    assert book.limit_of(OTHER) == DeviceLimit()
    assert book.limit_of("") == DeviceLimit(max_concurrent=1)
    assert book.describe(LAPTOP) == ("abababab", "Laptop")
    assert book.describe(BUILD) == ("cdcdcdcd", "")
    assert book.describe("") == ("anonymous", "")


def test_a_device_is_read_once_and_an_unreadable_list_leaves_it_nameless(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.allow(LAPTOP, name="laptop")
    book = DeviceBook(store, ())
    assert book.describe(LAPTOP) == ("abababab", "laptop")
    store.devices_path.write_text("this is not toml [[[")
    assert book.describe(LAPTOP) == ("abababab", "laptop")  # kept from the first look
    assert book.describe(BUILD) == ("cdcdcdcd", "")
