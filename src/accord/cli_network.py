"""``accord agents|users|teams|threads|invites``: the network's resources over REST, against a running
``accord serve`` (``--url`` / ``ACCORD_URL``, ``--key`` / ``ACCORD_API_KEY``).

Every command prints a table for people, or with ``--json`` the REST API's objects as they came: one
object for a single result, one object per line for a list. A refusal is one ``error (<code>): …``
line on stderr and exit 1 (``accord.cli_errors``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from .cli_common import KEY_OPTION, URL_OPTION
from .cli_errors import usage

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .client.rest import AccordClient, Agent, Membership

agents_app = typer.Typer(help="Agents of your org: create, list (REST).", no_args_is_help=True)
users_app = typer.Typer(help="People of your org: create, list (REST).", no_args_is_help=True)
teams_app = typer.Typer(
    help="Teams: create, list, show; members; join by invite code, leave, close (REST).",
    no_args_is_help=True,
)
members_app = typer.Typer(help="A team's members: add, list, remove (REST).", no_args_is_help=True)
teams_app.add_typer(members_app, name="members")
threads_app = typer.Typer(help="A team's threads: create, list, read messages (REST).", no_args_is_help=True)
invites_app = typer.Typer(
    help="Invite codes: let another org join a team with a Visa (REST).", no_args_is_help=True
)

JSON_ONE = typer.Option(False, "--json", help="Print the result as one JSON object (the REST API's fields).")
JSON_MANY = typer.Option(False, "--json", help="One JSON object per line (the REST API's fields).")
TEAM_ARG = typer.Argument(..., help="The team (team_…).")
AGENT_OPTION = typer.Option(None, "--agent", help="An agent (agt_…).")
USER_OPTION = typer.Option(None, "--user", help="A person (usr_…).")
ROLE_OPTION = typer.Option("member", "--role", help="The member's role in the team.")

Column = tuple[str, Callable[[Any], object]]
ID_HEADERS = frozenset({"id", "member", "team", "join_code"})


def _rest(url: str, key: str, action: Callable[[AccordClient], None]) -> None:
    from .cli import _over_rest  # at call time: accord.cli imports this module to register it

    _over_rest(url, key, action)


def _one_of(agent: str | None, user: str | None) -> None:
    if (agent is None) == (user is None):
        raise usage("give --agent agt_… or --user usr_… (exactly one)")


def _json(item: BaseModel) -> str:
    return item.model_dump_json(exclude_unset=True)  # exactly the fields the server sent


def _show(
    items: Iterable[BaseModel], as_json: bool, columns: Sequence[Column], title: str | None = None
) -> None:
    """Print ``items``: one JSON object per line, or a table (every cell folds, never truncates)."""
    if as_json:
        for item in items:
            print(_json(item))
        return
    table = Table(title=title, title_justify="left")
    for header, _ in columns:
        # ids stay on one line when they fit (to copy them); nothing is ever cut off
        table.add_column(header, overflow="fold", no_wrap=header in ID_HEADERS)
    for item in items:
        table.add_row(*(_cell(get(item)) for _, get in columns))
    Console().print(table)


def _cell(value: object) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _whole_list(fetch: Callable[[str | None], Any]) -> list[Any]:
    """Every item of a paged list (``fetch(cursor)`` answers a ``Page``)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        items.extend(page.data)
        cursor = page.next_cursor
        if cursor is None:
            return items


# --- agents & people -----------------------------------------------------------------------------------

PARTICIPANT_COLUMNS: list[Column] = [
    ("id", lambda a: a.id),
    ("name", lambda a: a.name),
    ("type", lambda a: a.type),
    ("lookup_key", lambda a: a.lookup_key),
    ("model", lambda a: a.model),
]
USER_COLUMNS: list[Column] = [("id", lambda a: a.id), ("name", lambda a: a.name)]


@agents_app.command("create")
def agents_create(
    name: str = typer.Argument(..., help="The agent's name (unique in your org)."),
    lookup_key: str | None = typer.Option(None, "--lookup-key", help="A stable key to find it by."),
    identity: str | None = typer.Option(None, "--identity", help="Who it is: its routines' system prompt."),
    model: str | None = typer.Option(None, "--model", help="Its routines' model, e.g. openai:<name>."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Create an agent in your org (an admin key)."""

    def act(client: AccordClient) -> None:
        agent = client.create_agent(name, lookup_key=lookup_key, identity=identity, model=model)
        _show([agent], as_json, PARTICIPANT_COLUMNS)

    _rest(url, key, act)


def _participants(client: AccordClient, kind: str) -> list[Agent]:
    return [a for a in client.list_agents().data if a.type == kind]


@agents_app.command("list")
def agents_list(url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_MANY) -> None:
    """List your org's agents (people: `accord users list`)."""
    _rest(url, key, lambda c: _show(_participants(c, "agent"), as_json, PARTICIPANT_COLUMNS))


@users_app.command("create")
def users_create(
    name: str = typer.Argument(..., help="The person's name (unique in your org)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Create a person in your org (an admin key)."""
    _rest(url, key, lambda c: _show([c.create_user(name)], as_json, USER_COLUMNS))


@users_app.command("list")
def users_list(url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_MANY) -> None:
    """List your org's people (agents: `accord agents list`)."""
    _rest(url, key, lambda c: _show(_participants(c, "user"), as_json, USER_COLUMNS))


# --- teams -----------------------------------------------------------------------------------------------

TEAM_COLUMNS: list[Column] = [
    ("id", lambda t: t.id),
    ("name", lambda t: t.name),
    ("status", lambda t: t.status),
    ("org", lambda t: t.org_name or t.org_id),
]
THREAD_COLUMNS: list[Column] = [("id", lambda t: t.id), ("title", lambda t: t.title)]
MEMBER_COLUMNS: list[Column] = [  # the membership id (mem_…) is in --json; remove takes either
    ("member", lambda m: m.member.id),
    ("name", lambda m: m.member.name),
    ("type", lambda m: m.member.type),
    ("org", lambda m: m.member.org_name),
    ("role", lambda m: m.role),
]


@teams_app.command("create")
def teams_create(
    name: str = typer.Argument(..., help="The team's name."),
    description: str = typer.Option("", "--description", help="What the team is for."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Create a team owned by your org (an admin key)."""
    _rest(url, key, lambda c: _show([c.create_team(name, description)], as_json, TEAM_COLUMNS))


@teams_app.command("list")
def teams_list(url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_MANY) -> None:
    """List the teams you can see: your org's, and those it joined."""
    _rest(url, key, lambda c: _show(c.list_teams().data, as_json, TEAM_COLUMNS))


@teams_app.command("show")
def teams_show(
    team_id: str = TEAM_ARG, url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_ONE
) -> None:
    """Show a team and its threads."""

    def act(client: AccordClient) -> None:
        team = client.get_team(team_id)
        if as_json:
            print(_json(team))
            return
        _show([team], False, TEAM_COLUMNS)
        if team.description:
            print(team.description)
        _show(team.threads, False, THREAD_COLUMNS, title="threads")

    _rest(url, key, act)


@teams_app.command("join")
def teams_join(
    join_code: str = typer.Argument(..., help="The invite code the host gave you."),
    agent: str | None = AGENT_OPTION,
    user: str | None = USER_OPTION,
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help='Print {"team", "membership"} as one JSON object.'),
) -> None:
    """Join another org's team with an invite code, bringing one of your agents or people."""
    _one_of(agent, user)

    def act(client: AccordClient) -> None:
        joined = client.join_team(join_code, agent_id=agent, user_id=user)
        if as_json:
            print(_json(joined))
            return
        team, m = joined.team, joined.membership
        print(f"{m.member.name} ({m.member.id}) joined {team.name} ({team.id}) of {team.org_name}")

    _rest(url, key, act)


@teams_app.command("leave")
def teams_leave(team_id: str = TEAM_ARG, url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Take your org out of another org's team: its agents and people leave every thread."""

    def act(client: AccordClient) -> None:
        client.leave_team(team_id)
        print(f"left {team_id}")

    _rest(url, key, act)


@teams_app.command("close")
def teams_close(
    team_id: str = TEAM_ARG, url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_ONE
) -> None:
    """Close your org's team: its threads are frozen."""
    _rest(url, key, lambda c: _show([c.close_team(team_id)], as_json, TEAM_COLUMNS))


@members_app.command("add")
def members_add(
    team_id: str = TEAM_ARG,
    agent: str | None = AGENT_OPTION,
    user: str | None = USER_OPTION,
    role: str = ROLE_OPTION,
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Add one of your org's agents or people to a team (a guest org needs the add_members grant)."""
    _one_of(agent, user)

    def act(client: AccordClient) -> None:
        membership = client.add_member(team_id, agent_id=agent, user_id=user, role=role)
        _show([membership], as_json, MEMBER_COLUMNS)

    _rest(url, key, act)


@members_app.command("list")
def members_list(
    team_id: str = TEAM_ARG, url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_MANY
) -> None:
    """List a team's members, of every org in it."""
    _rest(url, key, lambda c: _show(c.list_members(team_id).data, as_json, MEMBER_COLUMNS))


@members_app.command("remove")
def members_remove(
    team_id: str = TEAM_ARG,
    member: str = typer.Argument(..., help="The membership (mem_…) or the member (agt_… / usr_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Remove a member from a team and from every thread of it."""

    def act(client: AccordClient) -> None:
        membership_id = member
        if not member.startswith("mem_"):
            found = _membership_of(client.list_members(team_id).data, member)
            if found is None:
                from .model.errors import NotFound

                raise NotFound(f"{member} is not a member of {team_id}")
            membership_id = found.id
        client.remove_member(membership_id)
        print(f"removed {member} from {team_id}")

    _rest(url, key, act)


def _membership_of(memberships: Iterable[Membership], member_id: str) -> Membership | None:
    return next((m for m in memberships if m.member.id == member_id), None)


# --- threads -----------------------------------------------------------------------------------------------

MESSAGE_COLUMNS: list[Column] = [
    ("seq", lambda m: m.seq),
    ("from", lambda m: f"{m.actor.org_name}/{m.actor.name}" if m.actor.org_name else m.actor.name),
    ("message", lambda m: m.content),
]


@threads_app.command("create")
def threads_create(
    team_id: str = TEAM_ARG,
    title: str = typer.Argument(..., help="The thread's title."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Open a thread in a team; the team's members take part."""
    columns: list[Column] = [
        ("id", lambda t: t.id),
        ("title", lambda t: t.title),
        ("team", lambda t: t.team_id),
    ]
    _rest(url, key, lambda c: _show([c.create_thread(team_id, title)], as_json, columns))


@threads_app.command("list")
def threads_list(
    team_id: str = TEAM_ARG, url: str = URL_OPTION, key: str = KEY_OPTION, as_json: bool = JSON_MANY
) -> None:
    """List a team's threads."""
    _rest(url, key, lambda c: _show(c.list_threads(team_id).data, as_json, THREAD_COLUMNS))


@threads_app.command("messages")
def threads_messages(
    thread: str = typer.Argument(..., help="TEAM_ID/THREAD_ID"),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_MANY,
) -> None:
    """Print a thread's messages so far, oldest first (to follow it live: `accord tail`)."""
    from .cli import _team_thread

    team_id, thread_id = _team_thread(thread)

    def act(client: AccordClient) -> None:
        messages = _whole_list(
            lambda cursor: client.get_thread_messages(team_id, thread_id, limit=500, cursor=cursor)
        )
        _show(messages, as_json, MESSAGE_COLUMNS)

    _rest(url, key, act)


# --- invites -----------------------------------------------------------------------------------------------

GRANTS_HELP = (
    "What the joining org's Visa allows, comma-separated: post, add_members, create_threads, "
    "direct_channels (default: post,add_members)."
)


@invites_app.command("create")
def invites_create(
    team_id: str = TEAM_ARG,
    grants: str | None = typer.Option(None, "--grants", help=GRANTS_HELP),
    max_uses: int | None = typer.Option(None, "--max-uses", min=1, help="Joins it allows (default 1)."),
    expires_in: float | None = typer.Option(
        None, "--expires-in", help="Seconds until the code expires (default 7 days)."
    ),
    visa_expires_in: float | None = typer.Option(
        None, "--visa-expires-in", help="Seconds from the join until the Visa expires (default: never)."
    ),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = JSON_ONE,
) -> None:
    """Create an invite code to one of your org's teams; the code is shown once."""
    granted = [g.strip() for g in grants.split(",") if g.strip()] if grants is not None else None
    columns: list[Column] = [
        ("join_code", lambda i: i.join_code),
        ("grants", lambda i: i.grants),
        ("max_uses", lambda i: i.max_uses),
        ("expires_at", lambda i: i.expires_at),
        ("id", lambda i: i.id),
    ]

    def act(client: AccordClient) -> None:
        invite = client.create_invite(
            team_id,
            expires_in=expires_in,
            max_uses=max_uses,
            grants=granted,
            visa_expires_in=visa_expires_in,
        )
        _show([invite], as_json, columns)

    _rest(url, key, act)


@invites_app.command("revoke")
def invites_revoke(
    invite_id: str = typer.Argument(..., help="The invite (inv_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Revoke an invite code: it lets no one else join."""

    def act(client: AccordClient) -> None:
        client.revoke_invite(invite_id)
        print(f"revoked {invite_id}")

    _rest(url, key, act)
