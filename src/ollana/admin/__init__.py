"""What a running ollana shows of itself: /status, /metrics, /healthz and a dashboard.

- status: `StatusSource` (what a mode offers) and `status_document` (the /status JSON)
- api: `create_admin_app` and `AdminListener`, which serves it on the admin address
"""

from __future__ import annotations

from ollana.admin.api import AdminListener, create_admin_app
from ollana.admin.status import SCHEMA_VERSION, OllamaView, PoolView, StatusSource, status_document

__all__ = [
    "SCHEMA_VERSION",
    "AdminListener",
    "OllamaView",
    "PoolView",
    "StatusSource",
    "create_admin_app",
    "status_document",
]
