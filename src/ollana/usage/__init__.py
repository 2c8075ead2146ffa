"""Usage per device and model: a meter read off the answers, and a SQLite store."""

from ollana.usage.meter import HEAD_BYTES, METERED_PATHS, NO_USAGE, TAIL_BYTES, Usage, UsageMeter
from ollana.usage.store import (
    USAGE_FILE,
    Grouping,
    UsageStore,
    UsageStoreError,
    UsageTotal,
    read_usage,
)

__all__ = [
    "HEAD_BYTES",
    "METERED_PATHS",
    "NO_USAGE",
    "TAIL_BYTES",
    "USAGE_FILE",
    "Grouping",
    "Usage",
    "UsageMeter",
    "UsageStore",
    "UsageStoreError",
    "UsageTotal",
    "read_usage",
]
