"""Shared test support: real ollana processes, free ports, proxy-free environments."""

from tests.support.ports import free_port, refused_address
from tests.support.process import OllanaProcess, ollana_env

__all__ = ["OllanaProcess", "free_port", "ollana_env", "refused_address"]
