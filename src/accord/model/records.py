"""Organization-level records kept in the registry log: orgs and API keys.

An API key's secret is shown once, at creation, and never stored: the registry keeps its SHA-256.
A plain (unsalted, fast) hash is right here because the secret is 256 random bits — there is nothing
to brute-force — and it lets the hub find a key by hash in O(1) on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field
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


TeamStatus = Literal["open", "closed"]
INVITE_PREFIX: Final = "join_"


def new_join_code() -> str:
    """An invite code: ``join_`` + 22 URL-safe characters (128 random bits)."""
    return INVITE_PREFIX + secrets.token_urlsafe(16)


@dataclass(slots=True)
class Team:
    """A group that shares threads. Owned by one org; shared when another org joins by invite code."""

    team_id: str
    org_id: str
    name: str
    description: str
    created_at: float
    status: TeamStatus = "open"
    closed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Team:
        return cls(
            team_id=str(data["team_id"]),
            org_id=str(data["org_id"]),
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            created_at=float(data["created_at"]),
            status="closed" if data.get("status") == "closed" else "open",
            closed_at=data.get("closed_at"),
        )


@dataclass(slots=True)
class Membership:
    membership_id: str
    team_id: str
    member_id: str  # agt_… or usr_…
    org_id: str  # the member's own org (the team's, or a guest org holding a Visa)
    role: str
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Membership:
        return cls(
            membership_id=str(data["membership_id"]),
            team_id=str(data["team_id"]),
            member_id=str(data["member_id"]),
            org_id=str(data["org_id"]),
            role=str(data.get("role") or "member"),
            added_at=float(data["added_at"]),
        )


VISA_GRANTS: Final = ("post", "add_members", "create_threads", "direct_channels")
DEFAULT_GRANTS: Final = ("post", "add_members")


def check_grants(value: object) -> tuple[str, ...]:
    """A Visa's grants, validated and in canonical order (Slack Connect's tiers, DESIGN §1):

    ``post`` writes in the team's threads, ``add_members`` brings more of the guest org's own agents
    and people, ``create_threads`` opens threads, ``direct_channels`` is for direct channels."""
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) for g in value):
        raise InvalidInput(f"grants must be a list drawn from {', '.join(VISA_GRANTS)}")
    unknown = sorted(set(value) - set(VISA_GRANTS))
    if unknown:
        raise InvalidInput(
            f"unknown grant {unknown[0]!r}: grants are drawn from {', '.join(VISA_GRANTS)}",
            details={"grant": unknown[0]},
        )
    return tuple(g for g in VISA_GRANTS if g in value)


@dataclass(slots=True)
class Invite:
    """A join code's record (its secret is stored only as a hash, like an API key)."""

    invite_id: str
    team_id: str
    code_hash: str
    created_at: float
    expires_at: float | None
    max_uses: int | None
    uses: int = 0
    revoked_at: float | None = None
    # what the Visa granted on joining with this code will allow, and for how long (None: no expiry)
    grants: tuple[str, ...] = DEFAULT_GRANTS
    visa_expires_in: float | None = None

    def usable(self, now: float) -> bool:
        return (
            self.revoked_at is None
            and (self.expires_at is None or now < self.expires_at)
            and (self.max_uses is None or self.uses < self.max_uses)
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grants"] = list(self.grants)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Invite:
        return cls(
            invite_id=str(data["invite_id"]),
            team_id=str(data["team_id"]),
            code_hash=str(data["code_hash"]),
            created_at=float(data["created_at"]),
            expires_at=data.get("expires_at"),
            max_uses=data.get("max_uses"),
            uses=int(data.get("uses", 0)),
            revoked_at=data.get("revoked_at"),
            grants=check_grants(data["grants"]) if data.get("grants") is not None else DEFAULT_GRANTS,
            visa_expires_in=data.get("visa_expires_in"),
        )


@dataclass(slots=True)
class Visa:
    """What a guest org holds in another org's team after joining it by invite code.

    It names the guest ``participants`` it covers (those the guest brought in), its ``grants`` and
    its expiry; ``removed`` are guest participants the host took out, who cannot be brought back
    under this Visa. The host narrows or revokes it; every cross-org action is checked against it at
    the moment it happens (``protocol.visibility``).
    """

    visa_id: str
    team_id: str
    org_id: str
    invite_id: str
    granted_at: float
    grants: tuple[str, ...] = DEFAULT_GRANTS
    expires_at: float | None = None
    participants: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    revoked_at: float | None = None
    revoked_reason: str | None = None

    @property
    def live(self) -> bool:
        """Not revoked (expiry needs a clock: ``valid``)."""
        return self.revoked_at is None

    def valid(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grants"] = list(self.grants)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Visa:
        grants = data.get("grants")
        return cls(
            visa_id=str(data["visa_id"]),
            team_id=str(data["team_id"]),
            org_id=str(data["org_id"]),
            invite_id=str(data["invite_id"]),
            granted_at=float(data["granted_at"]),
            grants=check_grants(grants) if grants is not None else DEFAULT_GRANTS,
            expires_at=data.get("expires_at"),
            participants=[str(p) for p in data.get("participants") or ()],
            removed=[str(p) for p in data.get("removed") or ()],
            revoked_at=data.get("revoked_at"),
            revoked_reason=data.get("revoked_reason"),
        )
