"""Transports between clients and the hub."""

from .base import Connection, Link
from .inbox import Inbox
from .local import LocalLink
from .ws import WsLink

__all__ = ["Connection", "Inbox", "Link", "LocalLink", "WsLink"]
