"""Wire-server benchmark: throughput and latency over loopback, and the proxy's own overhead.

    python bench/bench_wire.py [--seconds 3] [--clients 1,8,32]

Starts ``privsql serve``'s server in a child process on the sample config (a
temp copy: trust auth, a large budget, a temp budget store) and drives it with
asyncpg clients (extended protocol, prepared statements) for (a) ``SELECT 1``
and (b) a DP ``COUNT(*)`` on the sample data. Overhead = wire round trip p50
minus ``engine.execute`` p50 for the same query in-process. Prints a markdown
table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DP_COUNT = "SELECT COUNT(*) FROM people"
EPSILON = 0.001


def make_config(tmp: Path) -> Path:
    raw = yaml.safe_load((REPO / "config" / "privsql.yaml").read_text())
    for table in raw["tables"].values():
        if "source" in table and not os.path.isabs(table["source"]):
            table["source"] = str(REPO / table["source"])
    for analyst in raw["analysts"].values():
        analyst["epsilon"] = 1e9
    raw["budget_store"] = {**raw.get("budget_store", {}), "path": str(tmp / "budget.sqlite")}
    raw["server"] = {"auth": "trust", "host": "127.0.0.1", "port": 0}
    raw["cache"] = {"enabled": False}  # every DP COUNT is a fresh, charged answer (no free repeats)
    path = tmp / "privsql.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _serve(config: str, ports: mp.Queue) -> None:
    from privsql.engine import Engine
    from privsql.server.settings import load_settings
    from privsql.server.transport import WireServer

    async def main() -> None:
        engine = Engine.from_config(config)
        server = WireServer(engine, load_settings(engine.config.raw.get("server")))
        _, port = await server.start()
        ports.put(port)
        await server.serve_forever()

    asyncio.run(main())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _client(port: int, sql: str, until: float, latencies: list[float]) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="alice", database="privsql", ssl=False,
                                 server_settings={"privsql.epsilon": str(EPSILON)})
    stmt = await conn.prepare(sql)
    await stmt.fetch()
    while time.perf_counter() < until:
        start = time.perf_counter()
        await stmt.fetch()
        latencies.append(time.perf_counter() - start)
    await conn.close()


async def drive(port: int, sql: str, clients: int, seconds: float) -> tuple[float, float, float]:
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, sql, until, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3


def engine_p50(config: Path, sql: str, n: int = 300) -> float:
    from privsql.engine import Engine

    engine = Engine.from_config(str(config))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        engine.execute(sql, analyst="alice", epsilon=EPSILON)
        times.append(time.perf_counter() - start)
    engine.close()
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        ports: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_serve, args=(str(config), ports), daemon=True)
        proc.start()
        try:
            port = ports.get(timeout=60)
            rows = []
            wire_p50 = {}
            for label, sql in (("SELECT 1", "SELECT 1"), ("DP COUNT", DP_COUNT)):
                for clients in counts:
                    qps, p50, p99 = asyncio.run(drive(port, sql, clients, args.seconds))
                    rows.append((label, clients, qps, p50, p99))
                    if clients == 1:
                        wire_p50[sql] = p50
            engine_ms = engine_p50(config, DP_COUNT)
        finally:
            proc.terminate()
            proc.join(5)
    print(f"wire server, loopback, asyncpg prepared statements, {os.cpu_count()} CPUs, {args.seconds:g} s per cell\n")
    print("| statement | clients | queries/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for label, clients, qps, p50, p99 in rows:
        print(f"| {label} | {clients} | {qps:,.0f} | {p50:.2f} | {p99:.2f} |")
    if DP_COUNT in wire_p50:
        overhead = wire_p50[DP_COUNT] - engine_ms
        print(f"\nDP COUNT, 1 client: wire p50 {wire_p50[DP_COUNT]:.2f} ms − engine.execute p50 {engine_ms:.2f} ms"
              f" = proxy overhead {overhead:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
