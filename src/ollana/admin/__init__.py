"""What a running ollana shows of itself: /status, /metrics, /healthz and a dashboard.

- metrics: `Metrics`, the Prometheus families of one mode, and the calls its request path makes
- status: `StatusSource` (what a mode offers) and `status_document` (the /status JSON)
- api: `create_admin_app` and `AdminListener`, which serves it on the admin address
"""

from __future__ import annotations

from ollana.admin.api import AdminListener, create_admin_app
from ollana.admin.metrics import LOCAL_OLLAMA, NO_SERVER, Metrics, PoolView
from ollana.admin.status import SCHEMA_VERSION, OllamaView, StatusSource, status_document

__all__ = [
    "LOCAL_OLLAMA",
    "NO_SERVER",
    "SCHEMA_VERSION",
    "AdminListener",
    "Metrics",
    "OllamaView",
    "PoolView",
    "StatusSource",
    "create_admin_app",
    "status_document",
]
