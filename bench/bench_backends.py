"""Backends benchmark: the DP GROUP BY against the per-person floor and the raw GROUP BY on
DuckDB, PostgreSQL and Spark local[2] (issue: backends beyond embedded).

Data: a generated ``visits(pid, dept, day, duration_min, cost)`` table, ``--rows`` rows
(default 1,000,000; ``--rows 10000000`` for the big run, not run by default) for
``rows / 3`` people (several rows per person, uniform over 6 departments).

Timed on each backend (the backend query alone; ``--repeat`` interleaved rounds, the fastest run
of each query is reported, the medians are in the JSON of each worker):

* **DP GROUP BY** — the engine's backend SQL for
  ``SELECT dept, COUNT(*), SUM(cost) FROM visits GROUP BY dept`` with max_groups = 2 < 6
  departments, so the group bound (ROW_NUMBER by a salted hash) is in the query;
* **DP, bound cannot bind** — the same with max_groups = 6 (the plan drops the ROW_NUMBER);
* **DP, md5 order** — the DP query with a portable md5 order (identical on every backend;
  what tests/test_backends.py uses to compare binding group bounds exactly);
* **DP, pid-seeded hash** (PostgreSQL only) — the order
  ``hashtextextended(<keys as text>, hashint8extended(pid, salt))`` proposed for the
  postgres branch of ``SqlTarget.order_hash``;
* **floor** — ``SELECT dept, SUM(c), SUM(s) FROM (SELECT pid, dept, COUNT(*) c, SUM(cost) s
  FROM visits GROUP BY pid, dept) GROUP BY dept``: the least any user-level DP rewrite does;
* **raw** — ``SELECT dept, COUNT(*), SUM(cost) FROM visits GROUP BY dept``.

Each backend runs in its own process, whose peak RSS is reported: with PostgreSQL and
Spark only aggregates reach the privsql process, so it must not grow with the rows;
DuckDB is embedded, so its process holds the data. (Spark's JVM is a separate process
and is not counted.)

Run:  python bench/bench_backends.py [--rows 1000000] [--backends duckdb,postgres,spark]
      [--dsn postgresql://postgres@127.0.0.1:5432/test] [--spark-rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEPTS = ["cardiology", "dermatology", "emergency", "oncology", "pediatrics", "radiology"]
DP_QUERY = "SELECT dept, COUNT(*), SUM(cost) FROM visits GROUP BY dept"
SCHEMA = "privsql_bench"


# ------------------------------------------------------------------------------------ data


def generate(folder: Path, rows: int, people: int) -> Path:
    """Deterministic visits data as Parquet (read by DuckDB and Spark) and CSV (COPY into PostgreSQL)."""
    import duckdb

    parquet = folder / f"visits_{rows}.parquet"
    if parquet.exists():
        return parquet
    con = duckdb.connect()
    depts = "['" + "','".join(DEPTS) + "']"
    con.execute(f"""CREATE TABLE v AS SELECT
        CAST(hash(i, 1) % {people} AS BIGINT) AS pid,
        {depts}[CAST(1 + hash(i, 2) % 6 AS INTEGER)] AS dept,
        DATE '2025-01-01' + CAST(hash(i, 3) % 365 AS INTEGER) AS day,
        CAST(hash(i, 4) % 2400 AS DOUBLE) / 10 AS duration_min,
        CAST(hash(i, 5) % 200000 AS DOUBLE) / 100 AS cost
        FROM range({rows}) t(i)""")
    con.execute(f"COPY v TO '{parquet}' (FORMAT parquet)")
    con.execute(f"COPY v TO '{folder / f'visits_{rows}.csv'}' (HEADER, DELIMITER ',')")
    return parquet


def load_postgres(dsn: str, folder: Path, rows: int) -> None:
    import psycopg

    csv = folder / f"visits_{rows}.csv"
    with psycopg.connect(dsn) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        con.execute(f"DROP TABLE IF EXISTS {SCHEMA}.visits")
        con.execute(f"CREATE TABLE {SCHEMA}.visits (pid bigint, dept text, day date, duration_min double precision, "
                    "cost double precision)")
        with open(csv, "rb") as f, con.cursor().copy(
                f"COPY {SCHEMA}.visits FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
            while block := f.read(1 << 20):
                cp.write(block)
        con.commit()
        con.execute(f"ANALYZE {SCHEMA}.visits")
        con.commit()


# ------------------------------------------------------------------------------------ worker


def config_text(kind: str, source: str, dsn: str, master: str) -> str:
    cols = """
    columns:
      pid: {type: int}
      dept: {type: text, values: [cardiology, dermatology, emergency, oncology, pediatrics, radiology]}
      day: {type: date}
      duration_min: {type: float, lower: 0, upper: 240}
      cost: {type: float, lower: 0, upper: 2000}"""
    backend = {"duckdb": '{kind: duckdb, path: ":memory:"}',
               "postgres": f"{{kind: postgres, dsn: \"{dsn}\", schema: {SCHEMA}, query_timeout: 3600}}",
               "spark": f"{{kind: spark, master: \"{master}\", query_timeout: 3600}}"}[kind]
    visits6 = "" if kind == "duckdb" else f"""
  visits6:
    source: {source}
    privacy_unit: pid
    max_groups: 6
    max_rows: 5{cols}"""
    return f"""
backend: {backend}
budget_store: {{kind: sqlite, path: "{tempfile.gettempdir()}/privsql-bench-{os.getpid()}.sqlite"}}
tables:
  visits:
    source: {source}
    privacy_unit: pid
    max_groups: 2
    max_rows: 5{cols}{visits6}
analysts:
  bench: {{epsilon: 1000000.0}}
"""


def md5_order(self: Any, values: list, salt: int) -> Any:
    from sqlglot import exp

    parts = [exp.Literal.string(str(salt))]
    parts += [exp.func("coalesce", exp.cast(v, "TEXT"), exp.Literal.string("")) for v in values]
    return exp.MD5(this=exp.Anonymous(this="concat_ws", expressions=[exp.Literal.string("|"), *parts]))


def pid_seeded_order(self: Any, values: list, salt: int) -> Any:
    """Proposed postgres order: hash only the keys' text, seeded by the person's hash and the salt."""
    from sqlglot import exp

    pid, keys = values[0], values[1:]
    text = (exp.cast(keys[0], "TEXT") if len(keys) == 1 else
            exp.Anonymous(this="concat_ws", expressions=[exp.Literal.string("\x1f"),
                                                         *[exp.cast(k, "TEXT") for k in keys]]))
    seed = exp.Anonymous(this="hashint8extended", expressions=[exp.cast(pid, "BIGINT"),
                                                               exp.Literal.number(salt & 0x7FFFFFFFFFFFFFFF)])
    return exp.Anonymous(this="hashtextextended", expressions=[text, seed])


def worker(kind: str, source: str, dsn: str, master: str, repeat: int) -> dict[str, Any]:
    from privsql.config import parse_config
    from privsql.engine import Engine
    from privsql.sql.rewrite import SqlTarget

    t0 = time.perf_counter()
    engine = Engine(parse_config(config_text(kind, source, dsn, master), base_dir=ROOT))
    startup = time.perf_counter() - t0
    be = engine.backend
    visits = engine.config.tables["visits"]
    table = be.table_ref(visits).sql(dialect=be.target.dialect)

    def dp_sql(sql: str) -> str:
        if hasattr(engine, "_plans"):
            engine._plans.clear()  # the plan cache keeps the SQL of the first order
        return engine.backend_sql(engine.prepare(sql), salt=secrets.randbits(63))

    sqls: dict[str, str] = {"dp": dp_sql(DP_QUERY)}
    if kind == "duckdb":
        # one loaded copy only: the bound-free plan comes from a max_groups = 6 config of the same table
        six = Engine(parse_config(config_text(kind, source, dsn, master).replace("max_groups: 2", "max_groups: 6"),
                                  base_dir=ROOT), backend=be)
        sqls["dp_nobound"] = six.backend_sql(six.prepare(DP_QUERY), salt=1)
        six.store.close()
    else:
        sqls["dp_nobound"] = dp_sql(DP_QUERY.replace("visits", "visits6"))
    original = SqlTarget.order_hash
    try:
        SqlTarget.order_hash = md5_order  # type: ignore[method-assign]
        sqls["dp_md5"] = dp_sql(DP_QUERY)
        if kind == "postgres":
            SqlTarget.order_hash = pid_seeded_order  # type: ignore[method-assign]
            sqls["dp_seeded"] = dp_sql(DP_QUERY)
    finally:
        SqlTarget.order_hash = original  # type: ignore[method-assign]
        dp_sql(DP_QUERY)
    sqls["floor"] = (f"SELECT dept, SUM(c), SUM(s) FROM (SELECT pid, dept, COUNT(*) AS c, SUM(cost) AS s "
                     f"FROM {table} GROUP BY pid, dept) AS per_person GROUP BY dept")
    sqls["raw"] = f"SELECT dept, COUNT(*), SUM(cost) FROM {table} GROUP BY dept"

    # interleaved rounds (every query once per round), so a change of machine load hits all alike;
    # the minimum over rounds is the least disturbed run
    times: dict[str, list[float]] = {name: [] for name in sqls}
    for sql in sqls.values():
        be.run(sql, timeout=3600)  # warm-up (caches, JIT, Spark code generation)
    for _ in range(repeat):
        for name, sql in sqls.items():
            t = time.perf_counter()
            be.run(sql, timeout=3600)
            times[name].append(time.perf_counter() - t)
    out: dict[str, Any] = {"kind": kind, "startup_s": startup}
    out.update({name: min(ts) for name, ts in times.items()})
    out["median"] = {name: statistics.median(ts) for name, ts in times.items()}
    # the answer really is computed (a sanity check of the SQL, not timed)
    out["groups"] = len(be.run(dp_sql(DP_QUERY), timeout=3600))
    engine.close()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process's address space. /proc's VmHWM, not getrusage: Linux
    carries ru_maxrss across exec, so a worker would report its parent's peak (the data generator)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ driver


def run_worker(kind: str, source: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--source", source, "--dsn", args.dsn,
           "--master", args.master, "--repeat", str(args.repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def table(results: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v * 1000:,.0f}"

    head = ("| backend | rows | DP GROUP BY (ms) | DP, bound cannot bind | DP, md5 order | DP, pid-seeded hash | "
            "floor (ms) | raw (ms) | DP ÷ floor | DP ÷ raw | floor ÷ raw | peak RSS (MB) |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['rows']:,} | {ms(r['dp'])} | {ms(r['dp_nobound'])} | {ms(r['dp_md5'])} | "
            f"{ms(r.get('dp_seeded'))} | {ms(r['floor'])} | {ms(r['raw'])} | {r['dp'] / r['floor']:.2f}× | "
            f"{r['dp'] / r['raw']:.1f}× | {r['floor'] / r['raw']:.1f}× | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--spark-rows", type=int, default=1_000_000, help="rows for Spark (default 1,000,000)")
    p.add_argument("--backends", default="duckdb,postgres,spark")
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--data", default=None, help="folder for the generated files (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema privsql_bench afterwards")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.source, args.dsn, args.master, args.repeat)))
        return

    kinds = [k.strip() for k in args.backends.split(",") if k.strip()]
    folder = Path(args.data or tempfile.mkdtemp(prefix="privsql-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    loaded_pg = False
    try:
        for kind in kinds:
            rows = args.spark_rows if kind == "spark" else args.rows
            t = time.perf_counter()
            parquet = generate(folder, rows, max(rows // 3, 1))
            source = str(parquet)
            if kind == "postgres":
                load_postgres(args.dsn, folder, rows)
                loaded_pg = True
                source = "visits"
            print(f"{kind}: data ready in {time.perf_counter() - t:.1f} s; timing ...", file=sys.stderr)
            r = run_worker(kind, source, args)
            r["rows"] = rows
            results.append(r)
            print(f"{kind}: done (start-up {r['startup_s']:.1f} s)", file=sys.stderr)
    finally:
        if loaded_pg and not args.keep:
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as con:
                con.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    print(f"\nprivsql backends benchmark — {platform.platform()}, {os.cpu_count()} CPUs, "
          f"fastest of {args.repeat} interleaved runs, load average {os.getloadavg()[0]:.1f}\n")
    print(table(results))


if __name__ == "__main__":
    main()
