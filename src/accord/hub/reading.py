"""Reads and watches, with the privacy rule (DESIGN §7) applied on the way out.

Apart from writing so that visibility (which org sees a channel, which envelopes an observer sees) is
decided in one place, below the channel API that needs it too.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model.cursors import CURSOR_MAX, parse_cursor
from ..model.envelope import Envelope
from ..model.errors import AccessDenied, AccordError, InvalidInput, NotFound
from ..protocol.channel import ChannelState, get_adapter
from ..protocol.channel import can_send as _can_send
from .audit import read_org
from .core import Watch
from .identities import Identities
from .session import Session


class Reading(Identities):
    """What a session may see of channels and the audit log; ``Hub`` adds writing on top."""

    # --- reading ----------------------------------------------------------------------------------

    async def watch(
        self,
        session: Session,
        channel_id: str,
        observer: Callable[[Envelope], None],
        on_end: Callable[[str], None] | None = None,
    ) -> Callable[[], None]:
        """Tell ``observer`` of every envelope of the channel the session may see, once it is durable;
        returns ``unwatch``.

        Only for a channel the session may see (else ``not_found``, audited). The hub asks the
        visibility function again at every delivery and whenever authority is taken away; when the
        answer becomes no, the subscription ends and ``on_end(reason)`` is called (a socket sends
        ``phx_close`` with it). The observer runs inside fan-out: it must only queue, never block.
        """
        await self.require_visible(session, channel_id, action="watch")
        return self._add_watch(Watch(session, channel_id, observer, on_end))

    async def require_visible(
        self, session: Session, channel_id: str, *, action: str = "read"
    ) -> ChannelState:
        """The channel's state if the session may see it (``protocol.visibility``), else ``not_found``
        — the same for a channel that exists but is not the session's as for one that never existed —
        audited."""
        try:
            self._require_live(session)
            ch = await self._channel(channel_id)
            if not self.sees(session, ch.state):
                raise NotFound(f"unknown channel {channel_id}")
        except AccordError as err:
            await self.refuse_for(session, err, action)
            raise
        return ch.state

    async def read_visible(
        self,
        session: Session,
        channel_id: str,
        *,
        after_seq: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Envelope]:
        """``read_wal`` for a remote reader: only a channel it may see, only envelopes it may see."""
        after_seq = parse_cursor(after_seq, "after_seq")
        for label, value in (("limit", limit), ("last", last)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= CURSOR_MAX
            ):
                raise InvalidInput(f"{label} must be an integer from 0 to 2^53")
        await self.require_visible(session, channel_id)
        envs = await self.read_wal(channel_id, after_seq, limit, last=last)
        return [e for e in envs if self.may_see(session, e)]

    async def channel_state(self, channel_id: str) -> ChannelState:
        return (await self._channel(channel_id)).state

    async def can_send(self, participant_id: str, channel_id: str) -> bool:
        try:
            ch = await self._channel(channel_id)
        except NotFound:
            return False
        return self.participant_sees(participant_id, ch.state) and _can_send(ch.state, participant_id)

    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        """The channel's log as stored (admin view, no filtering). ``last=k`` reads the tail in O(k)."""
        if last is not None:
            return await self.store.read_last(channel_id, last)
        return await self.store.read(channel_id, after_seq=after_seq, limit=limit)

    async def history(
        self, session: Session, participant_id: str, channel_id: str, *, last: int = 50
    ) -> list[Envelope]:
        """The last envelopes of a channel as ``participant_id`` may see them (refusals audited)."""
        try:
            self._require_actor(session, participant_id)
            if not isinstance(last, int) or not 0 < last <= 10_000:
                raise InvalidInput("last must be an integer from 1 to 10000")
            ch = await self._channel(channel_id)
            # the visibility function, now: for the session, and for the participant as itself (a
            # guest whose Visa ended, even a moment before the sweeper saw it, reads nothing more)
            if not (self.sees(session, ch.state) and self.participant_sees(participant_id, ch.state)):
                raise NotFound(f"unknown channel {channel_id}")
        except AccordError as err:
            await self.refuse_for(session, err, "read", actor=participant_id)
            raise
        envs = await self.store.read_last(channel_id, last)
        impl = get_adapter(ch.state.adapter)
        return [e for e in envs if impl.visible(ch.state, e, participant_id)]

    async def read_channel(
        self, session: Session, channel_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[Envelope], int]:
        """Envelopes after ``after_seq`` of a channel the session may see, filtered by ``may_see``.

        Returns at most ``limit`` envelopes and the seq to continue from (0 once the end was reached).
        """
        try:
            parse_cursor(after_seq, "after_seq")
            if not isinstance(limit, int) or not 0 < limit <= 500:
                raise InvalidInput("limit must be an integer from 1 to 500")
        except AccordError as err:
            await self.refuse_for(session, err, "read")
            raise
        # visibility is asked for what exists now: anything stamped after it waits for the next page,
        # which asks again (the reads below await, and authority may go meanwhile)
        end = (await self.require_visible(session, channel_id)).last_seq
        out: list[Envelope] = []
        cursor = after_seq
        while len(out) < limit and cursor < end:
            batch = await self.store.read(channel_id, after_seq=cursor, limit=min(limit * 2, end - cursor))
            if not batch:
                return out, 0
            for env in batch:
                cursor = env.seq
                if self.may_see(session, env):
                    out.append(env)
                    if len(out) == limit:
                        break
        more = await self.store.read(channel_id, after_seq=cursor, limit=1)
        return out, cursor if more else 0

    async def audit_log(
        self, session: Session, *, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[Envelope], int]:
        """The audit records about the session's org (an admin's read), after ``after_seq``.

        Returns at most ``limit`` records and the seq to continue from (0 at the end); a page may be
        short (see ``audit.read_org``). Never a record tagged with another org, nor an untagged one.
        """
        try:
            if not session.may_administer:
                raise AccessDenied("reading the audit log needs an org admin key")
            parse_cursor(after_seq, "after_seq")
            if not isinstance(limit, int) or not 0 < limit <= 1000:
                raise InvalidInput("limit must be an integer from 1 to 1000")
        except AccordError as err:
            await self.refuse_for(session, err, "audit.read")
            raise
        return await read_org(self.store, session.org_id, after_seq=after_seq, limit=limit)
