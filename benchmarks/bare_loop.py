"""The yardstick: a bare aiohttp request loop with no files, no checkpoint.

Sends ``count`` execute requests with ``concurrency`` in flight to URL and
prints requests per second. batchrun's throughput is compared with this in
the same benchmark run.

    python benchmarks/bare_loop.py URL COUNT CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def main(url: str, count: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": "Bearer bench-token"}
    body = json.dumps({"first_name": "Ada", "phone": "+15550100"}).encode()
    remaining = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    base, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    execute = f"{base}/cgw/process/v1/orgs/bench/flows/bench/execute"
    print(f"{asyncio.run(main(execute, count, concurrency)):.0f}")
