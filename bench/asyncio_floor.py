"""The floor under W2: what an awaited send costs when it does nothing at all.

    .venv/bin/python bench/asyncio_floor.py

100 tasks × 1,000 awaited "sends", each a future that one callback per event-loop tick resolves (as a
group commit would): only the asyncio machinery every real send also pays. docs/PERFORMANCE.md
compares Accord's per-envelope cost with it.
"""

from __future__ import annotations

import asyncio
import statistics
import time


async def floor(tasks: int = 100, sends: int = 1_000) -> float:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []

    def flush() -> None:
        nonlocal pending
        batch, pending = pending, []
        for fut in batch:
            fut.set_result(None)

    async def send() -> None:
        fut = loop.create_future()
        if not pending:
            loop.call_soon(flush)
        pending.append(fut)
        await fut

    async def sender() -> None:
        for _ in range(sends):
            await send()

    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(tasks)))
    return (time.perf_counter() - t0) / (tasks * sends)


def main() -> None:
    runs = [asyncio.run(floor()) for _ in range(5)]
    per = statistics.median(runs)
    print(f"awaited no-op send, 100 tasks x 1,000: {per * 1e6:.2f} us each ({1 / per:,.0f}/s), median of 5")


if __name__ == "__main__":
    main()
