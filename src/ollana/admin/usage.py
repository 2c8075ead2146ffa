"""The usage report shared by `/usage` on the admin API and `ollana usage`.

It reads the usage store's file (see ollana.usage.store) and names devices from the allow
list, so it works whether or not a server is running; a running one writes every few
seconds, so the last seconds may be missing.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path
from typing import Final

from ollana.identity import DeviceStore, StoreError
from ollana.usage import USAGE_FILE, Grouping, read_usage

__all__ = ["BY", "DEFAULT_SINCE", "parse_since", "usage_document"]

BY: Final = ("device", "model", "day")
DEFAULT_SINCE: Final = "7d"
_UNITS: Final = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$", re.IGNORECASE)


def parse_since(text: str, now: float | None = None) -> float:
    """`7d`, `24h`, `30m`, `2w` ago, or a date (YYYY-MM-DD, UTC): unix seconds."""
    now = time.time() if now is None else now
    match = _SPAN.match(text)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2).lower()]
    try:
        return float(calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d")))
    except ValueError:
        raise ValueError(f"since {text!r}: expected 7d, 24h, 30m, 2w or YYYY-MM-DD") from None


def usage_document(home: Path, since: float, by: Grouping) -> dict[str, object]:
    """Usage since `since`, per device, model or day and device, as a JSON-ready object.

    Raises UsageStoreError (naming the file) when it cannot be read; ValueError for `by`.
    """
    if by not in BY:
        raise ValueError(f"by {by!r}: expected one of {', '.join(BY)}")
    path = home / USAGE_FILE
    totals = read_usage(path, since, by)
    names: dict[str, str] = {}
    if by != "model":
        try:
            names = {k: v.name or "" for k, v in DeviceStore(home).allowed().items()}
        except StoreError:
            names = {}  # the counts stand without names
    rows = []
    for total in totals:
        row: dict[str, object] = {}
        if by == "model":
            row["model"] = total.key
        else:
            device = total.device if by == "day" else total.key
            if by == "day":
                row["day"] = total.key
            row["device"] = device
            row["name"] = names.get(device, "")
        row.update(
            requests=total.requests,
            prompt_tokens=total.prompt_tokens,
            generated_tokens=total.generated_tokens,
            generation_seconds=round(total.generation_seconds, 3),
            errors=total.errors,
        )
        rows.append(row)
    return {
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
        "by": by,
        "file": str(path),
        "rows": rows,
    }
