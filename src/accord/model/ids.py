"""Prefixed ULIDs (``env_01JD…``): sortable by creation time, unique without coordination.

A ULID is 48 bits of milliseconds and 80 random bits in Crockford base32. We generate them here rather
than with ``python-ulid`` because ids are minted once per envelope on the hub's hot path, where that
library costs ~5.6 µs an id and this ~1.6 µs. Ids minted by one process are strictly increasing
(monotonic ULID: same millisecond → random part + 1), so envelope ids also sort in stamp order.

Nothing here reads a clock implicitly in the pure layers: ``new_id`` takes ``now_ms`` when the caller
has a time, and otherwise the generator uses ``time.time_ns`` — ids are opaque, never used for logic.
"""

from __future__ import annotations

import os
import random
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


class _Monotonic:
    """Monotonic ULID source; thread-safe because stores may mint ids on their writer thread.

    Within one millisecond the random part only counts up, which changes its last base32 pair and
    only rarely the ones before it. So the first 24 characters (time part and the random part's top
    70 bits) are kept as ``_head`` and rebuilt only when they change: most ids cost one table look-up
    and one concatenation.
    """

    __slots__ = ("_head", "_head_key", "_last_ms", "_last_rand", "_lock", "_rng")

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(32))
        self._last_ms = -1
        self._last_rand = 0
        self._lock = threading.Lock()
        self._head_key = (-1, -1)
        self._head = ""

    def next(self, now_ms: int | None = None) -> str:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
                if rand > _RAND_MAX:  # 2^80 ids in one millisecond: borrow the next millisecond
                    ms += 1
                    rand = self._rng.getrandbits(_RAND_BITS - 1)
            else:
                rand = self._rng.getrandbits(_RAND_BITS - 1)  # top bit clear leaves room to increment
            self._last_ms, self._last_rand = ms, rand
            key = (ms, rand >> 10)
            if key != self._head_key:
                self._head_key = key
                p = _PAIRS  # 48 bits of milliseconds = 5 groups of 10 bits (2 leading zero bits)
                self._head = (
                    p[ms >> 40]
                    + p[(ms >> 30) & 1023]
                    + p[(ms >> 20) & 1023]
                    + p[(ms >> 10) & 1023]
                    + p[ms & 1023]
                    + p[(rand >> 70) & 1023]
                    + p[(rand >> 60) & 1023]
                    + p[(rand >> 50) & 1023]
                    + p[(rand >> 40) & 1023]
                    + p[(rand >> 30) & 1023]
                    + p[(rand >> 20) & 1023]
                    + p[(rand >> 10) & 1023]
                )
            return self._head + _PAIRS[rand & 1023]


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
