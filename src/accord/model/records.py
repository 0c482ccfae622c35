"""Organization-level records kept in the registry log: orgs and API keys.

An API key's secret is shown once, at creation, and never stored: the registry keeps its SHA-256.
A plain (unsalted, fast) hash is right here because the secret is 256 random bits — there is nothing
to brute-force — and it lets the hub find a key by hash in O(1) on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from .errors import InvalidInput

KeyScope = Literal["admin", "agent", "user"]
KEY_SCOPES: Final = ("admin", "agent", "user")
KEY_PREFIX: Final = "ak_"
_ORG_NAME_MAX: Final = 128


def new_key_secret() -> str:
    """A fresh API key: ``ak_`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_org_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("an organization needs a non-empty name")
    if len(name) > _ORG_NAME_MAX:
        raise InvalidInput(f"an organization name is at most {_ORG_NAME_MAX} characters")
    return name.strip()


@dataclass(slots=True)
class Org:
    org_id: str
    name: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Org:
        return cls(str(data["org_id"]), str(data["name"]), float(data["created_at"]))


@dataclass(slots=True)
class ApiKey:
    """An API key as the registry knows it (never the secret). ``subject`` is the agent or person a
    scoped key acts for; admin keys act for their whole org."""

    key_id: str
    org_id: str
    scope: KeyScope
    subject: str | None
    hash: str
    hint: str  # the first characters of the secret, so people can tell their keys apart
    label: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What listing shows: everything but the hash."""
        data = self.to_dict()
        data.pop("hash")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKey:
        scope = data["scope"]
        if scope not in KEY_SCOPES:
            raise InvalidInput(f"unknown key scope {scope!r}")
        return cls(
            key_id=str(data["key_id"]),
            org_id=str(data["org_id"]),
            scope=scope,
            subject=data.get("subject"),
            hash=str(data["hash"]),
            hint=str(data.get("hint", "")),
            label=str(data.get("label", "")),
            created_at=float(data["created_at"]),
            revoked_at=data.get("revoked_at"),
        )
