"""Transports between clients and the hub."""

from .base import Connection, Link
from .inbox import Inbox
from .local import LocalLink

__all__ = ["Connection", "Inbox", "Link", "LocalLink"]
