"""ollana: every Ollama on the LAN, at 127.0.0.1:11434 on every machine."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ollana")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
