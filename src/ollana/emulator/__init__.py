"""An Ollama-API server with a deterministic model, for tests, benchmarks and the demo.

It answers every route of Ollama 0.5 with Ollama's status codes, headers, NDJSON and SSE
framing and error bodies; the same request always gets the same tokens and embeddings.
"""

from ollana.emulator.app import (
    STATS_KEY,
    STORE_KEY,
    EmulatorConfig,
    create_app,
    run_emulator,
    serving,
)
from ollana.emulator.catalogue import DEFAULT_MODELS
from ollana.emulator.state import EmulatorStats, ModelStore

__all__ = [
    "DEFAULT_MODELS",
    "STATS_KEY",
    "STORE_KEY",
    "EmulatorConfig",
    "EmulatorStats",
    "ModelStore",
    "create_app",
    "run_emulator",
    "serving",
]
