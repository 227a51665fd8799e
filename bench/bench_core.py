"""Core engine benchmark on embedded DuckDB (issue: core engine).

Measures, on a generated visits table (several rows per person) and a
one-row-per-person table:
  * the DP GROUP BY's backend time ÷ the per-person floor (the same aggregate
    grouped by (person, key) first — what any user-level DP rewrite must do)
    and ÷ the raw GROUP BY;
  * the one-row-per-person path ÷ the raw GROUP BY;
  * engine overhead per query (parse → plan → rewrite → noise → post-process,
    i.e. end-to-end time minus backend time);
  * `privsql query` end to end (process start to output) on the sample data.

Run: python bench/bench_core.py [--rows 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from privsql.config import parse_config  # noqa: E402
from privsql.engine import Engine  # noqa: E402

DEPTS = ["cardiology", "dermatology", "emergency", "oncology", "pediatrics", "radiology"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """visits(pid, dept, cost): rows/10 people with ~10 visits each (uniform), persons(pid, sex, income)."""
    rng = np.random.default_rng(seed)
    people = max(rows // 10, 1)
    pid = rng.integers(1, people + 1, rows)
    dept = rng.integers(0, len(DEPTS), rows)
    cost = np.round(rng.lognormal(5.5, 1.0, rows), 2)
    con = duckdb.connect()
    con.register("v", {"pid": pid.astype(np.int64), "d": dept.astype(np.int64), "cost": cost})
    depts = "['" + "','".join(DEPTS) + "']"
    con.execute(f"COPY (SELECT pid, {depts}[d + 1] AS dept, cost FROM v) TO '{path}/visits.parquet' (FORMAT parquet)")
    sex = rng.integers(0, 2, rows)
    income = np.round(rng.lognormal(10, 1, rows), 0)
    con.register("p", {"pid": np.arange(1, rows + 1, dtype=np.int64), "sex": sex.astype(np.int64), "income": income})
    con.execute(f"COPY (SELECT pid, CAST(sex AS VARCHAR) AS sex, income FROM p) TO '{path}/persons.parquet' "
                "(FORMAT parquet)")


def config_text(path: Path) -> str:
    return f"""
backend: {{kind: duckdb, path: ":memory:"}}
budget_store: {{kind: sqlite, path: {path}/budget.sqlite}}
tables:
  visits:
    source: {path}/visits.parquet
    privacy_unit: pid
    max_groups: 2
    max_rows: 5
    columns:
      pid: {{type: int}}
      dept: {{type: text, values: {DEPTS}}}
      cost: {{type: float, lower: 0, upper: 2000}}
  visits6:                      # the same table where max_groups covers the 6-value key domain
    source: {path}/visits.parquet
    privacy_unit: pid
    max_groups: 6
    max_rows: 5
    columns:
      pid: {{type: int}}
      dept: {{type: text, values: {DEPTS}}}
      cost: {{type: float, lower: 0, upper: 2000}}
  persons:
    source: {path}/persons.parquet
    privacy_unit: pid
    one_row_per_unit: true
    columns:
      pid: {{type: int}}
      sex: {{type: text, values: ["0", "1"]}}
      income: {{type: float, lower: 0, upper: 500000}}
cache: {{enabled: false}}       # every run is a fresh, charged answer (no free repeats)
analysts:
  bench: {{epsilon: 1000000}}
defaults: {{max_epsilon_per_query: 100}}
"""


def timed(fn, repeat: int) -> float:
    """Median wall time in ms over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        generate(path, args.rows)
        engine = Engine(parse_config(config_text(path)))
        run = engine.backend.run

        dp_sql = "SELECT dept, COUNT(*) AS n, SUM(cost) AS s FROM visits GROUP BY dept"
        backend_sql = engine.backend_sql(engine.prepare(dp_sql), salt=12345)
        floor_sql = ("SELECT dept, SUM(c), SUM(s) FROM (SELECT pid, dept, COUNT(*) AS c, SUM(cost) AS s "
                     "FROM visits GROUP BY pid, dept) GROUP BY dept")
        raw_sql = "SELECT dept, COUNT(*), SUM(cost) FROM visits GROUP BY dept"
        t_dp = timed(lambda: run(backend_sql), args.repeat)
        unbound_sql = engine.backend_sql(engine.prepare(dp_sql.replace("FROM visits", "FROM visits6")), salt=1)
        t_unbound = timed(lambda: run(unbound_sql), args.repeat)
        t_floor = timed(lambda: run(floor_sql), args.repeat)
        t_raw = timed(lambda: run(raw_sql), args.repeat)
        t_e2e = timed(lambda: engine.execute(dp_sql, analyst="bench"), args.repeat)

        one_sql = "SELECT sex, COUNT(*) AS n, AVG(income) AS a FROM persons GROUP BY sex"
        one_backend = engine.backend_sql(engine.prepare(one_sql), salt=1)
        one_raw = "SELECT sex, COUNT(*), AVG(income) FROM persons GROUP BY sex"
        t_one = timed(lambda: run(one_backend), args.repeat)
        t_one_raw = timed(lambda: run(one_raw), args.repeat)

        small = "SELECT sex, COUNT(*) AS n FROM persons WHERE pid < 0 GROUP BY sex"
        small_backend = engine.backend_sql(engine.prepare(small), salt=1)
        overheads = []
        for _ in range(50):
            t0 = time.perf_counter()
            engine.execute(small, analyst="bench")
            t1 = time.perf_counter()
            run(small_backend)
            t2 = time.perf_counter()
            overheads.append((t1 - t0) - (t2 - t1))
        overhead = statistics.median(overheads) * 1000
        engine.close()

    env = dict(os.environ, PRIVSQL_CONFIG=str(ROOT / "config" / "privsql.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        cli_times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "privsql.cli", "query", "SELECT COUNT(*) FROM people",
                            "--epsilon", "0.01", "--config", str(_cli_config(Path(tmp)))],
                           check=True, capture_output=True, env=env)
            cli_times.append((time.perf_counter() - t) * 1000)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, DuckDB {duckdb.__version__}")
    print(f"\n### DuckDB, {args.rows:,} visit rows (median of {args.repeat})\n")
    print("| query | time (ms) | ÷ per-person floor | ÷ raw GROUP BY |")
    print("|---|---:|---:|---:|")
    print(f"| raw GROUP BY dept | {t_raw:.1f} | {t_raw / t_floor:.2f} | 1.00 |")
    print(f"| per-person floor (GROUP BY pid, dept) | {t_floor:.1f} | 1.00 | {t_floor / t_raw:.1f} |")
    print(f"| privsql DP GROUP BY, max_groups 2 < 6 keys: group bound binds (backend SQL) | {t_dp:.1f} | "
          f"{t_dp / t_floor:.2f} | {t_dp / t_raw:.1f} |")
    print(f"| privsql DP GROUP BY, max_groups 6 = domain: no group bound needed (backend SQL) | {t_unbound:.1f} | "
          f"{t_unbound / t_floor:.2f} | {t_unbound / t_raw:.1f} |")
    print(f"| privsql DP GROUP BY (engine end to end) | {t_e2e:.1f} | {t_e2e / t_floor:.2f} | {t_e2e / t_raw:.1f} |")
    print(f"\n### One row per person, {args.rows:,} rows\n")
    print("| query | time (ms) | ÷ raw GROUP BY |")
    print("|---|---:|---:|")
    print(f"| raw GROUP BY sex (COUNT, AVG) | {t_one_raw:.1f} | 1.00 |")
    print(f"| privsql DP (backend SQL) | {t_one:.1f} | {t_one / t_one_raw:.2f} |")
    print(f"\nengine overhead per query (end to end − backend), median of 50: {overhead:.2f} ms")
    print(f"`privsql query` process start to output, median of 5: {statistics.median(cli_times):.0f} ms")


def _cli_config(tmp: Path) -> Path:
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "privsql.yaml").read_text())
    raw["budget_store"]["path"] = str(tmp / "budget.sqlite")
    for t in raw["tables"].values():
        t["source"] = str(ROOT / t["source"])
    path = tmp / "cli.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


if __name__ == "__main__":
    main()
