"""What ``accord.cli`` and ``accord.cli_network`` share without importing each other: the ``--url`` and
``--key`` options of commands that talk to a running server, and ``post_as`` (``accord post``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .model.errors import InvalidInput

if TYPE_CHECKING:
    from .client.rest import AccordClient, Message

URL_OPTION = typer.Option(
    "http://127.0.0.1:8700", "--url", envvar="ACCORD_URL", help="The server's base URL."
)
KEY_OPTION = typer.Option(..., "--key", envvar="ACCORD_API_KEY", help="An API key (or set ACCORD_API_KEY).")

AS_HINT = "an admin key must say who posts: pass --as agt_…|usr_…"


def post_as(client: AccordClient, team_id: str, thread_id: str, text: str, as_id: str | None) -> Message:
    """Post ``text`` as ``as_id`` (an agent ``agt_…`` or a person ``usr_…``; None: the key's subject).

    The server's refusal names its REST fields (``agent_id``/``user_id``); on the command line the
    caller is told about ``--as`` instead."""
    agent_id = as_id if as_id and as_id.startswith("agt_") else None
    user_id = as_id if as_id and not as_id.startswith("agt_") else None
    try:
        return client.post_message(team_id, thread_id, text, agent_id=agent_id, user_id=user_id)
    except InvalidInput as exc:
        if as_id is None and "who posts" in exc.message:
            raise InvalidInput(AS_HINT, details=exc.details) from None
        raise
