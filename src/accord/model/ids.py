"""Prefixed ULIDs (``env_01JD…``): sortable by creation time, unique without coordination.

A ULID is 48 bits of milliseconds and 80 random bits in Crockford base32. We generate them here rather
than with ``python-ulid`` because ids are minted once per envelope on the hub's hot path, where that
library costs ~5.6 µs an id and this ~1 µs. Ids minted by one process are strictly increasing, so
envelope ids also sort in stamp order: within one millisecond the random part grows by a random step
of 64 CSPRNG bits (plus 2^32), and a new millisecond starts from 79 fresh CSPRNG bits. The random
part comes only from ``os.urandom``, so no id (a thread's, say) lets anyone predict another (its
first envelope's): ids may be shown to other orgs, and guessing one must stay hopeless.

Nothing here reads a clock implicitly in the pure layers: ``new_id`` takes ``now_ms`` when the caller
has a time, and otherwise the generator uses ``time.time_ns`` — ids are opaque, never used for logic.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Final

PREFIXES: Final = frozenset(
    {
        "org",
        "agt",
        "usr",
        "team",
        "mem",
        "thr",
        "env",
        "rtn",
        "run",
        "ses",
        "key",
        "inv",
        "aud",
        "visa",
        "hub",
        "doc",
    }
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# two base32 digits per 10-bit group: an 80-bit random part is 8 table look-ups
_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_RAND_BITS: Final = 80
_RAND_MAX: Final = (1 << _RAND_BITS) - 1
# within a millisecond the random part grows by _MIN_STEP + a 64-bit CSPRNG value
_MIN_STEP: Final = 1 << 32
_POOL_BYTES: Final = 4096
_POOL_FORMAT: Final = f">{_POOL_BYTES // 8}Q"


class _Monotonic:
    """Monotonic ULID source; thread-safe because stores may mint ids on their writer thread.

    Every random bit comes from ``os.urandom`` (the OS CSPRNG), read 4 KiB at a time (512 64-bit
    values) under the lock. In a new millisecond the random part is a fresh 79-bit value (top bit
    clear, to leave room to count up); within the same millisecond it grows by ``2^32 +`` a fresh
    64-bit value, so ids stay strictly increasing yet none tells anything useful about another. That
    leaves room for at least 2^15 ids in one millisecond (about 10^5 on average); past that the next
    millisecond is borrowed. The time part (first 10 characters) is encoded once per millisecond.
    """

    __slots__ = ("_head", "_last_ms", "_last_rand", "_lock", "_pool")

    def __init__(self) -> None:
        self._pool: list[int] = []
        self._last_ms = -1
        self._last_rand = 0
        self._lock = threading.Lock()
        self._head = ""

    def next(self, now_ms: int | None = None) -> str:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            pool = self._pool
            if len(pool) < 3:
                pool.extend(struct.unpack(_POOL_FORMAT, os.urandom(_POOL_BYTES)))
            last = self._last_ms
            if ms <= last:
                ms = last
                rand = self._last_rand + _MIN_STEP + pool.pop()
                if rand > _RAND_MAX:  # the random part is used up: borrow the next millisecond
                    ms += 1
                    rand = (pool.pop() << 15) ^ (pool.pop() >> 49)
            else:
                rand = (pool.pop() << 15) ^ (pool.pop() >> 49)  # 79 bits: room left to count up
            self._last_rand = rand
            if ms != last:
                self._last_ms = ms
                p = _PAIRS  # 48 bits of milliseconds = 5 groups of 10 bits (2 leading zero bits)
                self._head = (
                    f"{p[ms >> 40]}{p[(ms >> 30) & 1023]}{p[(ms >> 20) & 1023]}"
                    f"{p[(ms >> 10) & 1023]}{p[ms & 1023]}"
                )
            head = self._head
        p = _PAIRS
        hi = rand >> 40
        lo = rand & 0xFFFFFFFFFF
        return (
            f"{head}{p[hi >> 30]}{p[(hi >> 20) & 1023]}{p[(hi >> 10) & 1023]}{p[hi & 1023]}"
            f"{p[lo >> 30]}{p[(lo >> 20) & 1023]}{p[(lo >> 10) & 1023]}{p[lo & 1023]}"
        )


_SOURCE = _Monotonic()


def new_ulid(now_ms: int | None = None) -> str:
    """A bare 26-character ULID."""
    return _SOURCE.next(now_ms)


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A prefixed id such as ``thr_01JD3…``; ``prefix`` must be one of :data:`PREFIXES`."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{_SOURCE.next(now_ms)}"


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp inside a bare or prefixed ULID (for diagnostics and tests)."""
    body = ulid.rsplit("_", 1)[-1]
    value = 0
    for ch in body.upper():
        value = value * 32 + _CROCKFORD.index(ch)
    return value >> _RAND_BITS


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
