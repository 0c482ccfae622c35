"""The writer lease: while one hub serves a JetStream stream, no second hub writes it.

A hub today trusts what it last wrote. It stamps the registry and a channel's seqs in memory and stops
writing at the first failed append (``Hub._store_failed``), so a second hub on the same stream would
only make both of them fail. SQLite rules that out with ``flock``. On JetStream, the same rule is a
lease: the key ``writer`` in the KV bucket ``<STREAM>_lease``. The bucket's TTL expires a holder that
stops renewing (a crashed node) after ``ttl`` seconds. The holder renews with compare-and-set on the
key's revision, so two holders can never both believe they renewed. A second opener gets
``store_locked``, naming the holder's pid and host. A holder that finds its lease gone, or cannot
renew it for longer than ``ttl``, refuses every write from then on: it fails closed, and the logs'
own compare-and-set keeps them whole in any case.

This is the rule until several hub nodes can serve one stream (issue 14). A store opened with
``exclusive=False`` takes no lease: it is for tools and tests that write the logs themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..model.errors import StoreError, StoreLocked
from .nats import _why

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .nats import NatsStore

log = logging.getLogger("accord.store.nats")

KEY = "writer"


class WriterLease:
    def __init__(self, store: NatsStore, ttl: float = 30.0) -> None:
        self.store = store
        self.ttl = ttl
        self.bucket = f"{store.stream}_lease"
        self._kv: KeyValue | None = None
        self._revision = 0
        self._value = b""
        self._task: asyncio.Task[None] | None = None

    async def _open_bucket(self) -> KeyValue:
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = self.store._conn().jetstream(timeout=self.store._timeout)
        try:
            return await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=self.bucket,
                    description="Accord: the hub that writes this stream (expires unless renewed)",
                    history=1,
                    ttl=self.ttl,
                    storage=StorageType.FILE,
                    replicas=self.store.replicas,
                )
            )

    async def acquire(self, *, wait: bool = False) -> None:
        """Take the lease, or raise ``StoreLocked`` naming who holds it; with ``wait``, a standby:
        ask again every ``ttl/6`` until the holder lets go or its lease expires."""
        from nats import nuid
        from nats.js.errors import KeyWrongLastSequenceError

        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self._value = orjson.dumps({**holder, "nonce": nuid.NUID().next().decode()})
        said = False
        while True:
            try:
                if self._kv is None:
                    kv = await self._open_bucket()
                    ttl = (await kv.status()).ttl
                    if ttl:  # the bucket's TTL is what expires a holder: renew by it
                        self.ttl = float(ttl)
                    self._kv = kv
                self._revision = await self._kv.create(KEY, self._value)
                break
            except KeyWrongLastSequenceError:
                held = self._held_by(await self._holder(self._kv))
                if not wait:
                    raise held from None
                if not said:
                    log.warning("standby: %s; waiting for its writer lease", held.message)
                    said = True
            except Exception as exc:  # JetStream busy or failing over: a standby keeps waiting
                if not wait:
                    raise StoreError(f"the writer lease of {self.store.stream}: {_why(exc)}") from None
                log.warning("standby: the writer lease cannot be read yet (%s)", _why(exc))
            await asyncio.sleep(self.ttl / 6)
        if said:
            log.warning("standby: took the writer lease of %s; serving", self.store.stream)
        self._task = asyncio.get_running_loop().create_task(self._renew(), name="accord-nats-lease")

    async def _holder(self, kv: KeyValue | None) -> dict[str, Any]:
        if kv is None:
            return {}
        try:
            entry = await kv.get(KEY)
            held: dict[str, Any] = orjson.loads(entry.value or b"{}")
            return held
        except Exception:  # expired meanwhile, or unreadable: say what we can
            return {}

    def _held_by(self, holder: dict[str, Any]) -> StoreLocked:
        where = f"{self.store.spec.text} (stream {self.store.stream})"
        pid = holder.get("pid", "unknown")
        who = f"{pid} on {holder.get('host', '?')}" if pid != "unknown" else pid
        return StoreLocked(
            f"{where} is written by another hub (pid {who}); one hub serves a stream for now",
            details={"path": where, "pid": who, "lease": self.bucket},
        )

    async def _renew(self) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        assert self._kv is not None
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.ttl / 6)
            try:
                self._revision = await self._kv.update(KEY, self._value, last=self._revision)
                renewed = loop.time()
            except KeyWrongLastSequenceError:
                # the last renewal may have landed with its ack lost: then the key is still ours
                if await self._still_ours():
                    renewed = loop.time()
                    continue
                self.store._lose_lease("another hub took the writer lease of this stream")
                return
            except Exception as exc:
                if loop.time() - renewed > self.ttl:
                    self.store._lose_lease(
                        f"the writer lease could not be renewed for {self.ttl:g} s ({exc})"
                    )
                    return
                log.warning("writer lease not renewed yet: %s", str(exc) or type(exc).__name__)

    async def release(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._kv is not None and self._revision:
            try:
                await self._kv.delete(KEY, last=self._revision)
            except Exception:
                # a renewal cancelled above may have landed: delete by the revision it made
                with contextlib.suppress(Exception):
                    if await self._still_ours():
                        await self._kv.delete(KEY, last=self._revision)
            self._revision = 0

    async def _still_ours(self) -> bool:
        """Whether the key holds this holder's value; if so, adopt its revision."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(KEY)
        except Exception:
            return False
        if entry.value == self._value and entry.revision is not None:
            self._revision = entry.revision
            return True
        return False
