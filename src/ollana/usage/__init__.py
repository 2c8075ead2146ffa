"""Usage per device and model: a meter read off the answers, and a SQLite store."""

from ollana.usage.meter import HEAD_BYTES, METERED_PATHS, TAIL_BYTES, Usage, UsageMeter

__all__ = ["HEAD_BYTES", "METERED_PATHS", "TAIL_BYTES", "Usage", "UsageMeter"]
