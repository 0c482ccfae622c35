"""Log positions that come from outside: the one check every boundary applies to a cursor or seq.

A position is an integer from 0 to 2^53 (the largest integer a JSON number carries exactly), or the
decimal string of one, as the REST cursors are. Anything else — negative, too large, a float, a bool,
a string that is not plain ASCII digits — is ``invalid_cursor`` (HTTP 422), never a crash deeper down
(SQLite refuses integers of 2^63 and more).
"""

from __future__ import annotations

from typing import Final

from .errors import InvalidCursor

CURSOR_MAX: Final = 2**53
_DIGITS_MAX: Final = 32  # leading zeros are allowed, but not an unbounded string to convert


def parse_cursor(value: object, name: str = "cursor") -> int:
    """``value`` as a log position, else ``invalid_cursor`` naming the parameter ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and 0 < len(value) <= _DIGITS_MAX and value.isascii() and value.isdigit():
        n = int(value)
    else:
        raise InvalidCursor(f"{name} must be an integer from 0 to 2^53", details={"name": name})
    if not 0 <= n <= CURSOR_MAX:
        raise InvalidCursor(f"{name} must be an integer from 0 to 2^53", details={"name": name})
    return n


def optional_cursor(value: object, name: str = "cursor") -> int | None:
    """``None`` stays ``None`` (no cursor given); anything else must be a position (see ``parse_cursor``)."""
    return None if value is None else parse_cursor(value, name)
