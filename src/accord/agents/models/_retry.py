"""Retries with exponential backoff, shared by the provider backends (OpenAI-compatible, Anthropic).

Why our own loop instead of the SDKs' built-in ``max_retries``: both SDKs also retry 408/409 and
*timeouts*, and honour a server's ``Retry-After`` for up to two minutes. A timed-out call has already
spent the caller's whole budget, so retrying it multiplies the wait an agent's turn can block a worker
for; and one loop gives both backends the same rules, the same attempt count in the error message, and
a backoff that tests can shrink. The SDK clients are therefore created with ``max_retries=0``.

The rules: a 429, a 5xx or a connection failure is retried up to ``max_retries`` times, waiting
``backoff * 2**n`` seconds (capped at 8 s, minus up to 25 % jitter) or what ``Retry-After`` asks for;
a ``Retry-After`` longer than 60 s ends the call at once. Anything else fails on the first attempt.
Every failure leaves as ``ModelError`` — a raw SDK exception never reaches an agent.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...model.errors import ModelError

T = TypeVar("T")

MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one attempt, in words a person can act on."""

    message: str
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None


def provider_message(body: object, fallback: str) -> str:
    """The provider's own explanation from an error body (``{"error": {"message": …}}`` or similar)."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def retry_after_seconds(headers: Any) -> float | None:
    """``Retry-After`` (seconds) or ``retry-after-ms``; an HTTP-date form is ignored (backoff is used)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def status_failure(status: int, message: str, headers: Any) -> Failure:
    retryable = status == 429 or status >= 500
    return Failure(f"HTTP {status}: {message}", status, retryable, retry_after_seconds(headers))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[Exception], Failure],
    *,
    where: str,
    max_retries: int,
    backoff: float,
) -> T:
    """Run ``call`` until it succeeds or fails for good; ``where`` names provider, model and URL."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return await call()
        except ModelError:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure.retryable and attempts <= max_retries:
                if failure.retry_after is not None and failure.retry_after > MAX_RETRY_AFTER:
                    raise _error(
                        where,
                        failure,
                        attempts,
                        f"; it asked to retry after "
                        f"{failure.retry_after:.0f}s, longer than {MAX_RETRY_AFTER:.0f}s",
                    ) from exc
                await asyncio.sleep(_delay(failure, attempts, backoff))
                continue
            raise _error(where, failure, attempts, "") from exc


def _delay(failure: Failure, attempts: int, backoff: float) -> float:
    if failure.retry_after is not None:
        return failure.retry_after
    return min(backoff * 2.0 ** (attempts - 1), MAX_BACKOFF) * (1 - 0.25 * random.random())


def _error(where: str, failure: Failure, attempts: int, extra: str) -> ModelError:
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return ModelError(
        f"{where}: {failure.message}{tries}{extra}",
        details={"status": failure.status, "attempts": attempts, "retryable": failure.retryable},
    )
