"""``hub.routines``: create, list, activate, pause and delete an agent's routines; read their runs.

Routines are registry records, so they come back exactly after a restart. Privacy as everywhere: an
org sees and changes only routines of its own agents; anyone else's is ``not_found``. A key scoped to
one agent manages that agent's routines only; creating one for another agent needs an admin key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ..model.errors import AccessDenied, InvalidInput, NotFound
from ..model.ids import new_id
from ..model.routines import Routine, Run
from ..protocol.registry import RG_AGENT_SESSION, RG_ROUTINE_CREATED, RG_ROUTINE_DELETED, RG_ROUTINE_STATUS
from ..routines.runs import fold_runs, run_stream
from .service import HubService

if TYPE_CHECKING:
    from .hub import Session

T = TypeVar("T")
_TRANSITIONS = {"active": ("draft", "paused", "active"), "paused": ("active", "paused")}


def _check_schedule(event_config: Any) -> list[str]:
    """A schedule's cron expression must parse, and it needs threads to speak in (returned)."""
    from croniter import croniter

    from ..model.routines import normalize_event_config

    cfg = normalize_event_config("schedule", event_config)
    if not croniter.is_valid(cfg["cron"]):
        raise InvalidInput(f"event_config.cron {cfg['cron']!r} is not a valid cron expression")
    if not cfg.get("thread_id"):
        raise InvalidInput("a schedule routine needs event_config.thread_id: the thread(s) it speaks in")
    return list(cfg["thread_id"])


class RoutineService(HubService):
    def _agent(self, session: Session, agent_id: str) -> None:
        member = self.hub.registry.member_in(session.org_id, agent_id)
        if member is None:
            raise NotFound(f"unknown agent {agent_id!r}")
        if member.passport.kind != "agent":
            raise InvalidInput("routines belong to agents, not people")
        if not session.may_administer and session.subject != agent_id:
            raise AccessDenied("this key cannot manage routines of that agent")

    def get(self, session: Session, routine_id: str) -> Routine:
        routine = self.hub.registry.routines.get(routine_id) if isinstance(routine_id, str) else None
        if routine is None or routine.org_id != session.org_id:
            raise NotFound(f"unknown routine {routine_id!r}")
        if not session.may_administer and session.subject != routine.agent_id:
            raise NotFound(f"unknown routine {routine_id!r}")
        return routine

    def list_routines(self, session: Session, agent_id: str | None = None) -> list[Routine]:
        if agent_id is not None:
            self._agent(session, agent_id)
        out = [
            r
            for r in self.hub.registry.routines.values()
            if r.org_id == session.org_id
            and (agent_id is None or r.agent_id == agent_id)
            and (session.may_administer or session.subject == r.agent_id)
        ]
        return sorted(out, key=lambda r: r.created_at)

    async def create(
        self,
        session: Session,
        agent_id: str,
        *,
        name: str,
        event_type: str,
        handler_type: str,
        preset_name: str | None = None,
        script: str | None = None,
        event_config: Any = None,
    ) -> Routine:
        async def go() -> Routine:
            self.hub._ensure_open()
            self._agent(session, agent_id)
            if event_type == "schedule":
                for thread_id in _check_schedule(event_config):
                    # a schedule speaks in these threads: they must exist for the caller
                    state = await self.hub.require_visible(session, thread_id, action="routine.create")
                    if not self.hub.participant_sees(agent_id, state):
                        raise NotFound(f"unknown channel {thread_id}")
            now = self.hub.clock()
            routine = Routine(
                new_id("rtn"),
                session.org_id,
                agent_id,
                name,
                event_type,
                handler_type,
                preset_name,
                script,
                event_config if event_config is not None else {},
                "draft",
                now,
                now,
            )
            await self.hub._registry_write([(RG_ROUTINE_CREATED, routine.to_dict())])
            return self.hub.registry.routines[routine.routine_id]

        return await self._refusing(session, "routine.create", go())

    async def set_status(self, session: Session, routine_id: str, status: str) -> Routine:
        async def go() -> Routine:
            routine = self.get(session, routine_id)
            if routine.status not in _TRANSITIONS[status]:
                raise InvalidInput(f"a {routine.status} routine cannot become {status}")
            if routine.status != status:
                event = {"routine_id": routine_id, "status": status, "updated_at": self.hub.clock()}
                await self.hub._registry_write([(RG_ROUTINE_STATUS, event)])
            return self.hub.registry.routines[routine_id]

        return await self._refusing(session, f"routine.{status}", go())

    async def delete(self, session: Session, routine_id: str) -> None:
        async def go() -> None:
            self.get(session, routine_id)
            await self.hub._registry_write([(RG_ROUTINE_DELETED, {"routine_id": routine_id})])

        await self._refusing(session, "routine.delete", go())

    async def runs(self, session: Session, routine_id: str) -> list[Run]:
        self.get(session, routine_id)
        return list(fold_runs(await self.hub.store.read(run_stream(routine_id))).values())

    async def agent_session(self, agent_id: str, channel_id: str) -> str:
        """The AgentSession of ``agent_id`` in ``channel_id``: created on its first run there, then
        resumed by every later run — a registry record, so it survives restarts."""
        key = (agent_id, channel_id)
        found = self.hub.registry.agent_sessions.get(key)
        if found is not None:
            return found
        event = {
            "session_id": new_id("ses"),
            "agent_id": agent_id,
            "channel_id": channel_id,
            "created_at": self.hub.clock(),
        }
        await self.hub._registry_write([(RG_AGENT_SESSION, event)])
        return self.hub.registry.agent_sessions[key]
