"""The local guard remembers its verdicts: the same answers, from a table that stays small."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ollana.http.guard import VERDICT_CACHE_KEY_LENGTH, VERDICT_CACHE_SIZE, LocalGuard

HOSTNAME = "workstation"
METHODS = st.sampled_from(["GET", "POST", "OPTIONS", "options", "DELETE", "HEAD"])
HOSTS = st.sampled_from(
    [None, "", "127.0.0.1:11434", "localhost", "workstation:1", "evil.example", "[::1]:80"]
)
ORIGINS = st.sampled_from(
    [
        None,
        "",
        "http://localhost:3000",
        "http://127.0.0.1:11434",
        "https://evil.example",
        "app://obsidian.md",
        "null",
    ]
)


def fresh(method: str, host: str | None, origin: str | None) -> object:
    """The verdict of a guard that has seen nothing before."""
    return LocalGuard(["https://chat.example"], ["ollama.lan"], hostname=HOSTNAME).check(
        method, host, origin
    )


@given(st.lists(st.tuples(METHODS, HOSTS, ORIGINS), max_size=40))
def test_remembered_verdicts_are_those_of_a_fresh_guard(
    requests: list[tuple[str, str | None, str | None]],
) -> None:
    guard = LocalGuard(["https://chat.example"], ["ollama.lan"], hostname=HOSTNAME)
    for method, host, origin in requests:
        assert guard.check(method, host, origin) == fresh(method, host, origin)


def test_same_origin_preflight_and_plain_request_of_one_pair_differ() -> None:
    guard = LocalGuard(hostname=HOSTNAME)
    pair = ("localhost:11434", "http://localhost:3000")
    assert guard.check("GET", *pair).status is None
    assert guard.check("OPTIONS", *pair).status == 204
    assert guard.check("GET", *pair).status is None


def test_many_hosts_keep_the_table_bounded_and_verdicts_right() -> None:
    guard = LocalGuard(hostname=HOSTNAME)
    for n in range(3 * VERDICT_CACHE_SIZE):
        assert guard.check("GET", f"10.0.{n // 250}.{n % 250}:11434", None).status is None
        assert guard.check("GET", f"host{n}.evil.example", None).status == 403
        assert len(guard._verdicts) <= VERDICT_CACHE_SIZE


def test_long_headers_are_judged_every_time_not_kept() -> None:
    guard = LocalGuard(hostname=HOSTNAME)
    host = "a" * VERDICT_CACHE_KEY_LENGTH + ".evil.example"
    for _ in range(2):
        decision = guard.check("GET", host, None)
        assert decision.status == 403 and decision.error is not None and host in decision.error
    assert guard._verdicts == {}
