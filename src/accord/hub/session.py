"""Who is connected: the ``Session`` a transport authenticates and the ``Endpoint`` the hub delivers to.

Their own module because links, tests and every hub layer use them, without needing the hub itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from ..model.envelope import Envelope
from ..model.identity import DEFAULT_ORG
from ..protocol.visibility import Principal


class Endpoint(Protocol):
    """Where the hub delivers envelopes for one connected participant (an Inbox, a socket…)."""

    def free(self) -> int: ...

    def push(self, env: Envelope) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Session:
    """One authenticated connection and what it may act for.

    ``scope`` is ``local`` for in-process links (trusted code in the hub's own process), or the scope
    of the API key it authenticated with: ``admin`` acts for any participant of its org, ``agent`` and
    ``user`` only for their ``subject``. A session always acts for participants it registered.
    """

    session_id: str
    org_id: str = DEFAULT_ORG
    agents: set[str] = field(default_factory=set)
    scope: str = "local"
    subject: str | None = None
    key_id: str | None = None
    # set when the session's authority ended (its key was revoked): from then on it sees nothing
    revoked: str | None = None
    # told (once, with the reason) when that happens: a socket closes its topics and itself
    on_revoked: list[Callable[[str], None]] = field(default_factory=list)

    @cached_property
    def principal(self) -> Principal:
        """What the visibility function (``protocol.visibility``) is asked about."""
        return Principal(self.org_id, self.subject, self.key_id)

    def acts_for(self, agent_id: str) -> bool:
        return agent_id in self.agents or agent_id == self.subject

    @property
    def may_administer(self) -> bool:
        return self.scope in ("local", "admin")
