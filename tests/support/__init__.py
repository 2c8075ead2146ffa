"""Shared test support: real ollana processes, free ports, proxy-free environments."""

from tests.support.process import OllanaProcess, ollana_env

__all__ = ["OllanaProcess", "ollana_env"]
