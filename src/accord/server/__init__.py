"""The network server: REST under /v1 (FastAPI), authenticated by API key (DESIGN §6)."""

from .app import create_app

__all__ = ["create_app"]
