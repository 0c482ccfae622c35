"""REST for Visas (DESIGN §1, §7): the host lists, narrows and revokes what it granted.

``GET /v1/teams/{id}/visas`` (the host: every Visa to its team; a guest: its own),
``GET /v1/visas/{id}``, ``PATCH /v1/visas/{id}`` ``{grants?, expires_at?}``,
``DELETE /v1/visas/{id}/participants/{pid}`` (that guest participant leaves the team and cannot be
re-added under this Visa) and ``DELETE /v1/visas/{id}`` (every guest participant leaves every thread of
the team; coming back needs a new invite). Thin, like every route: ``hub.teams`` decides and audits.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import Field, model_validator

from ..hub import Hub
from ..hub.teams import UNSET
from ..model.records import Visa
from .v1 import _ERRORS, Auth, Grant, HubDep, _actor, _Body, _iso, _page

router = APIRouter(prefix="/v1", responses=_ERRORS, tags=["visas"])


class VisaPatch(_Body):
    """Give either or both. ``expires_at``: seconds since the epoch, or null for no expiry; a time
    already past ends the Visa now."""

    grants: Annotated[list[Grant], Field(max_length=4)] | None = None
    expires_at: Annotated[float, Field(ge=0, le=2**33, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def something(self) -> VisaPatch:
        if not self.model_fields_set:
            raise ValueError("give grants and/or expires_at")
        return self


def render_visa(hub: Hub, visa: Visa) -> dict[str, Any]:
    org = hub.registry.orgs.get(visa.org_id)
    return {
        "id": visa.visa_id,
        "team_id": visa.team_id,
        "org_id": visa.org_id,
        "org_name": org.name if org is not None else None,
        "invite_id": visa.invite_id,
        "grants": list(visa.grants),
        "participants": [_actor(hub, p) for p in visa.participants],
        "removed": [_actor(hub, p) for p in visa.removed],
        "granted_at": _iso(visa.granted_at),
        "expires_at": _iso(visa.expires_at) if visa.expires_at is not None else None,
        "status": "revoked" if not visa.live else ("expired" if not visa.valid(hub.clock()) else "live"),
        "revoked_at": _iso(visa.revoked_at) if visa.revoked_at is not None else None,
        "revoked_reason": visa.revoked_reason,
    }


@router.get("/teams/{team_id}/visas")
async def list_visas(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    visas = await hub.teams.list_visas(session, team_id)
    return _page([render_visa(hub, v) for v in visas])


@router.get("/visas/{visa_id}")
async def get_visa(visa_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    visa = await hub.teams.get_visa(session, visa_id)
    return render_visa(hub, visa)


@router.patch("/visas/{visa_id}")
async def update_visa(visa_id: str, body: VisaPatch, session: Auth, hub: HubDep) -> dict[str, Any]:
    expires_at = body.expires_at if "expires_at" in body.model_fields_set else UNSET
    visa = await hub.teams.update_visa(session, visa_id, grants=body.grants, expires_at=expires_at)
    return render_visa(hub, visa)


@router.delete("/visas/{visa_id}/participants/{participant_id}")
async def remove_visa_participant(
    visa_id: str, participant_id: str, session: Auth, hub: HubDep
) -> dict[str, Any]:
    return render_visa(hub, await hub.teams.remove_visa_participant(session, visa_id, participant_id))


@router.delete("/visas/{visa_id}", status_code=204)
async def revoke_visa(visa_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.teams.revoke_visa(session, visa_id)
    return Response(status_code=204)
