"""Stores are named by URL everywhere: the CLI's ``--store``, ``Hub.open(url)``, ``open_store(url)``.

* ``sqlite:///abs/dir``, ``sqlite://rel/dir``, ``sqlite:rel/dir`` or a plain path — the embedded
  default. A path whose name ends in ``.db`` (or that is an existing file) is the database file
  itself; any other path is a data directory holding ``accord.db`` (and ``knowledge.db`` beside it).
* ``memory://`` (also ``memory``, ``:memory:``) — a throwaway in-process store.
* ``nats://host:port[,host:port…][?stream=ACCORD&replicas=1&lease=30]`` — JetStream (``store/nats.py``).
  The servers are tried in turn and the client fails over among them; ``stream`` names the JetStream
  stream (and prefixes the buckets beside it), ``replicas`` is its replication factor when this
  process creates it (R1 on one node, R3 on a three-node cluster), ``lease`` how many seconds a
  hub's writer lease lasts unless renewed (how soon a standby takes over from a hub that died).

Parsing is pure and raises ``InvalidInput`` with what to write instead, so a typo in ``--store`` is a
one-line error before anything is opened or created.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import parse_qsl

from ..model.errors import InvalidInput

if TYPE_CHECKING:
    from .base import Durability, LogStore

Scheme = Literal["sqlite", "memory", "nats"]

DB_FILE: Final = "accord.db"
DEFAULT_NATS_STREAM: Final = "ACCORD"
_MEMORY_NAMES: Final = frozenset({"memory", "memory:", "memory://", ":memory:"})
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOST_PORT: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")
#: JetStream stream names: no whitespace, ``.``, ``*``, ``>``, path separators (nats-server's rule)
_STREAM_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NATS_OPTIONS: Final = ("stream", "replicas", "lease")
_HELP: Final = "use sqlite:///DIR (or a directory path), memory://, or nats://HOST:PORT[,HOST:PORT…]"


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: what to open, before anything is opened."""

    scheme: Scheme
    #: as the user wrote it (for messages)
    text: str
    #: sqlite: the database file
    path: Path | None = None
    #: nats: ``nats://host:port`` for each server, in the order given
    servers: tuple[str, ...] = ()
    #: nats: the JetStream stream's name
    stream: str = DEFAULT_NATS_STREAM
    #: nats: replicas of the stream when it is created here
    replicas: int = 1
    #: nats: seconds a writer lease lasts unless renewed (how soon a standby takes over a dead hub)
    lease: float = 30.0

    @property
    def data_dir(self) -> Path | None:
        """sqlite: the directory holding the database file (and ``knowledge.db``)."""
        return self.path.parent if self.path is not None else None

    def __str__(self) -> str:
        if self.scheme == "sqlite":
            assert self.path is not None
            return f"sqlite://{self.path}"
        if self.scheme == "memory":
            return "memory://"
        query = f"?stream={self.stream}&replicas={self.replicas}&lease={self.lease:g}"
        return "nats://" + ",".join(s.removeprefix("nats://") for s in self.servers) + query


def parse_store_url(value: str | os.PathLike[str]) -> StoreURL:
    """Parse ``--store``; ``InvalidInput`` (saying what to write) for anything else."""
    if not isinstance(value, str):
        return _sqlite(os.fspath(value), str(value))
    text = value.strip()
    if not text:
        raise InvalidInput(f"the store URL is empty: {_HELP}")
    if text.lower() in _MEMORY_NAMES:
        return StoreURL("memory", text)
    match = _SCHEME.match(text)
    # a Windows drive letter or a relative path with a colon later on is still a path
    if match is None or len(match.group(1)) == 1:
        return _sqlite(text, text)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "sqlite":
        return _sqlite(rest.removeprefix("//"), text)
    if scheme == "memory":
        if rest.strip("/"):
            raise InvalidInput(f"memory:// takes no path (got {text!r})")
        return StoreURL("memory", text)
    if scheme == "nats":
        return _nats(rest, text)
    raise InvalidInput(f"unknown store URL scheme {scheme!r} in {text!r}: {_HELP}")


def _sqlite(path_text: str, text: str) -> StoreURL:
    if not path_text:
        raise InvalidInput(f"{text!r} names no path: write sqlite:///DIR or sqlite://relative/dir")
    path = Path(path_text).expanduser()
    if not (path.suffix == ".db" or path.is_file()):
        path = path / DB_FILE
    return StoreURL("sqlite", text, path=path)


def _nats(rest: str, text: str) -> StoreURL:
    if not rest.startswith("//"):
        raise InvalidInput(f"{text!r}: write nats://HOST:PORT[,HOST:PORT…]")
    hosts, _, query = rest[2:].partition("?")
    hosts = hosts.rstrip("/")
    servers: list[str] = []
    for part in hosts.split(","):
        part = part.strip().removeprefix("nats://")
        if not part:
            raise InvalidInput(f"{text!r} has an empty server in its list: write nats://HOST:PORT,HOST:PORT")
        m = _HOST_PORT.match(part)
        if m is None or (m.group(1) is not None and not 0 < int(m.group(1)) < 65536):
            raise InvalidInput(f"{part!r} in {text!r} is not HOST:PORT")
        servers.append(f"nats://{part}")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = sorted(set(options) - set(_NATS_OPTIONS))
    if unknown:
        raise InvalidInput(
            f"unknown option {unknown[0]!r} in {text!r}: a nats:// store takes {', '.join(_NATS_OPTIONS)}"
        )
    stream = options.get("stream", DEFAULT_NATS_STREAM)
    if not _STREAM_NAME.match(stream):
        raise InvalidInput(f"stream={stream!r}: a JetStream stream name is 1-64 letters, digits, - or _")
    replicas_text = options.get("replicas", "1")
    if not replicas_text.isdigit() or not 1 <= int(replicas_text) <= 5:
        raise InvalidInput(f"replicas={replicas_text!r}: JetStream keeps 1 to 5 replicas")
    lease_text = options.get("lease", "30")
    try:
        lease = float(lease_text)
    except ValueError:
        lease = 0.0
    if not 1.0 <= lease <= 3600.0:
        raise InvalidInput(f"lease={lease_text!r}: the writer lease lasts 1 to 3600 seconds")
    return StoreURL(
        "nats",
        text,
        servers=tuple(servers),
        stream=stream,
        replicas=int(replicas_text),
        lease=lease,
    )


def open_store(
    url: str | os.PathLike[str] | StoreURL,
    *,
    durability: Durability = "process",
    readonly: bool = False,
    create: bool = True,
    standby: bool = False,
) -> LogStore:
    """The store ``url`` names, ready for ``await store.open()`` (which ``Hub.open`` calls).

    ``readonly`` opens it for reading only (no lock, nothing created; writes raise ``StoreError``):
    what ``accord replay`` and ``accord audit verify`` use while a hub runs. ``durability`` applies
    to SQLite (``process`` or ``power``); JetStream's is its replication (``replicas``). Without
    ``create``, a JetStream store whose stream does not exist yet raises ``NoStore`` on ``open()``
    instead of creating it (a SQLite caller checks for the file first: ``cli_store.require_store``).
    With ``standby``, a JetStream store that another hub writes waits on ``open()`` until that hub's
    writer lease ends instead of raising ``StoreLocked`` (``accord serve --standby``).
    """
    from .memory import MemoryStore

    spec = url if isinstance(url, StoreURL) else parse_store_url(url)
    if spec.scheme == "memory":
        return MemoryStore()
    if spec.scheme == "nats":
        from .nats import NatsStore

        return NatsStore(spec, readonly=readonly, create=create and not readonly, standby=standby)
    from .sqlite import SqliteStore

    assert spec.path is not None
    if readonly:
        return SqliteStore.open_readonly(spec.path)
    return SqliteStore(spec.path, durability=durability)
