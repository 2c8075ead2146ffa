"""The two modes ollana runs in, each an async context manager of its parts."""

from ollana.modes.client import ClientMode
from ollana.modes.server import ServerMode

__all__ = ["ClientMode", "ServerMode"]
