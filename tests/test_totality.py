"""Total row expressions: no allowed query may fail on some rows only (issue: no outcome may depend on one person).

Each query runs on a table D holding a hostile person 17 (values at the edges of every column type,
far outside the declared bounds) and on D without that person, on DuckDB and PostgreSQL. The outcome
(answered, or the refusal's class) must be the same, and never a backend failure. The generative
differential test (tests/generative) explores the grammar; these are the known attacks, kept as
regression cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg
import pytest
from conftest import outcome, require_postgres, sample_config

import privsql.engine as engine_module
from privsql.engine import Engine

DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOSTILE = 17
COLUMNS = {
    "pid": {"type": "int"},
    "x": {"type": "int", "lower": 0, "upper": 100},
    "f": {"type": "float", "lower": 0, "upper": 1000},
    "s": {"type": "text"},
    "d": {"type": "date"},
    "ts": {"type": "timestamp"},
}
TABLE = {"t": {"source": "t", "privacy_unit": "pid", "max_groups": 2, "max_rows": 2, "columns": COLUMNS},
         "people": None, "visits": None, "depts": None}  # only t
BUDGET = {"alice": {"epsilon": 1.0e6, "delta": 0.5}}
ORDINARY = [f"({p}, {p % 7}, {p * 1.5}, 'v{p % 3}', DATE '2024-01-{p % 28 + 1:02d}', "
            f"TIMESTAMP '2024-02-01 10:{p % 60:02d}:00')" for p in range(1, 41) if p != HOSTILE]
# person 17: every column at the edge of what the backend can store
HOSTILE_DUCKDB = (f"({HOSTILE}, 9223372036854775807, 1e308, repeat('x', 100000), DATE '1000000-01-01', "
                  "TIMESTAMP '294246-12-31 23:59:59')")
HOSTILE_POSTGRES = (f"({HOSTILE}, 9223372036854775807, 1e308, repeat('x', 100000), DATE '300000-01-01', "
                    "TIMESTAMP '294275-12-31 23:59:59')")
INFINITE_POSTGRES = "(99, -9223372036854775808, 'Infinity', '', DATE 'infinity', TIMESTAMP 'infinity')"
TINY = "(18, -9223372036854775808, 5e-324, '', DATE '{d}', TIMESTAMP '{ts}')"  # a subnormal double, BC dates
TINY_DUCKDB = TINY.format(d="5000000-01-01 (BC)", ts="-0043-03-15 12:00:00")
TINY_POSTGRES = TINY.format(d="4713-01-01 BC", ts="0044-03-15 12:00:00 BC")

E = "EXTRACT(YEAR FROM CASE WHEN pid = 17 AND f > 10 THEN DATE '9999-01-01' ELSE DATE '0001-01-01' END)"
ATTACKS = [
    f"SELECT COUNT(*) FROM t WHERE {E} * {E} * {E} * {E} * {E} > 0",  # BIGINT overflow (DuckDB)
    "SELECT COUNT(*) FROM t WHERE EXTRACT(YEAR FROM d) * EXTRACT(YEAR FROM d) * 1e300 > 1",
    "SELECT COUNT(*) FROM t WHERE CAST(d AS TIMESTAMP) > TIMESTAMP '2000-01-01 00:00:00'",  # date beyond TIMESTAMP
    "SELECT COUNT(*) FROM t WHERE DATE_TRUNC('month', d) > DATE '2000-01-01'",
    "SELECT COUNT(*) FROM t WHERE EXTRACT(YEAR FROM DATE_TRUNC('week', ts)) > 2000",
    "SELECT COUNT(*) FROM t WHERE CAST(d AS TEXT) > 'a'",
    "SELECT COUNT(*) FROM t WHERE LENGTH(s) * LENGTH(s) * LENGTH(s) > 5",  # int4 overflow (PostgreSQL)
    "SELECT COUNT(*) FROM t WHERE x * x > 5",  # int64 overflow
    "SELECT COUNT(*) FROM t WHERE -x < 0 AND ABS(x - 1) > 0",
    "SELECT COUNT(*) FROM t WHERE f * 1e300 * 1e300 > f",  # NUMERIC compared with float8 (PostgreSQL)
    "SELECT COUNT(*) FROM t WHERE CASE WHEN f > 1 THEN f * 1e300 ELSE f END > 1",  # CASE merges NUMERIC and float8
    "SELECT COUNT(*) FROM t WHERE CAST(f AS DOUBLE) * 1e300 * 1e8 > 0",
    "SELECT COUNT(*) FROM t WHERE ROUND(f * 1e300, 2) > 0 AND FLOOR(x / 3) >= 0 AND x % 7 >= 0",
    "SELECT COUNT(*) FROM t WHERE s || s || s || s > 'a'",
    "SELECT SUM(x * x) FROM t",
    "SELECT AVG(f * f * f) FROM t",
    "SELECT EXTRACT(YEAR FROM d) AS y, COUNT(*) FROM t GROUP BY EXTRACT(YEAR FROM d)",
    "SELECT x * 0.000000000000000000001 + 1 AS k, COUNT(*) FROM t GROUP BY x * 0.000000000000000000001 + 1",
    # found by the generative test (tests/generative): implicit DATE → TIMESTAMP in COALESCE, a BIGINT
    # compared with a DECIMAL(38, 30) literal, ROUND's places, a constant quantile, date/timestamp keys
    # beyond Python's range, a boolean key over a public domain, float8 underflow on PostgreSQL
    "SELECT COUNT(*) FROM t WHERE COALESCE(d, DATE_TRUNC('HOUR', CAST(TIMESTAMP '0001-01-01 00:00:00' AS DATE)))"
    " >= '2024-02-29'",
    "SELECT COUNT(*) FROM t WHERE x > 0.000000000000000000000000000001",
    "SELECT VAR_SAMP(ROUND(1, -1)) FROM t",
    "SELECT x, QUANTILE_CONT(0.001, 0.5), MEDIAN(3) FROM t GROUP BY 1",
    "SELECT d AS k0, AVG(x) FROM t GROUP BY k0",
    "SELECT COUNT(pid) FROM t GROUP BY ts",
    "SELECT COUNT(*) FROM t GROUP BY x > -1, s",
    "SELECT SUM(f * f), STDDEV(f), AVG(f / 3) FROM t",
    "SELECT MEDIAN(x * 1e-320) FROM t",  # refused before any data is read: bins would be infinitely narrow
    "SELECT x * 1e308 * 10 AS k, COUNT(*) FROM t GROUP BY 1",  # an infinite value in a key domain
    "SELECT COUNT(*) FROM t WHERE f * f * f * f * f * f * f * f * f * f * f * f * f * f > 0",  # refused: range
    "SELECT COUNT(*) FROM t WHERE EXTRACT(HOUR FROM d) > 3",  # refused: a date has no hour
]


def _duckdb_engine(tmp: Path, rows: list[str]) -> Engine:
    path = tmp / "data.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t (pid BIGINT, x BIGINT, f DOUBLE, s VARCHAR, d DATE, ts TIMESTAMP)")
        con.execute("INSERT INTO t VALUES " + ", ".join(rows))
    return Engine(sample_config(tmp, backend={"kind": "duckdb", "path": str(path)}, tables=TABLE, analysts=BUDGET,
                                cache={"enabled": False}))


def _postgres_engine(tmp: Path, schema: str, rows: list[str]) -> Engine:
    with psycopg.connect(DSN, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(f'CREATE TABLE "{schema}".t (pid BIGINT, x BIGINT, f DOUBLE PRECISION, s TEXT, d DATE, '
                    "ts TIMESTAMP)")
        con.execute(f'INSERT INTO "{schema}".t VALUES ' + ", ".join(rows))
    tables = {**TABLE, "t": {**TABLE["t"], "schema": schema}}
    return Engine(sample_config(tmp, backend={"kind": "postgres", "dsn": DSN, "schema": schema}, tables=tables,
                                analysts=BUDGET, cache={"enabled": False}))


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def neighbours(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(engine on D, engine on D without the hostile people 17, 18 and, on PostgreSQL, 99)."""
    engines: list[Engine] = []
    schemas: list[str] = []
    for hostile in (True, False):
        tmp = tmp_path_factory.mktemp("totality")
        if request.param == "duckdb":
            engines.append(_duckdb_engine(tmp, ORDINARY + ([HOSTILE_DUCKDB, TINY_DUCKDB] if hostile else [])))
        else:
            require_postgres(DSN)
            schemas.append(f"privsql_tot_{uuid.uuid4().hex[:10]}")
            rows = ORDINARY + ([HOSTILE_POSTGRES, INFINITE_POSTGRES, TINY_POSTGRES] if hostile else [])
            engines.append(_postgres_engine(tmp, schemas[-1], rows))
    yield tuple(engines)
    for e in engines:
        e.close()
    if schemas:
        with psycopg.connect(DSN, autocommit=True) as con:
            for s in schemas:
                con.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


@pytest.mark.parametrize("sql", ATTACKS)
def test_outcome_does_not_depend_on_the_hostile_person(neighbours: tuple[Engine, Engine], sql: str) -> None:
    with_person, without = neighbours
    got = outcome(with_person, sql)
    assert got != "BackendError", f"the backend failed on {sql}"
    assert got == outcome(without, sql)


def test_the_issue_attack_is_answered(neighbours: tuple[Engine, Engine]) -> None:
    assert outcome(neighbours[0], ATTACKS[0]) == "answered"


def test_oversized_numbers_and_time_of_day_of_dates_are_refused(neighbours: tuple[Engine, Engine]) -> None:
    assert outcome(neighbours[0], ATTACKS[-2]) == "PrivacyRefused"
    assert outcome(neighbours[0], ATTACKS[-1]) == "DatatypeMismatch"


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    def identity(values: Any, scale: float) -> np.ndarray:
        return np.asarray(values)

    monkeypatch.setattr(engine_module, "add_laplace_noise", identity)
    monkeypatch.setattr(engine_module, "add_gaussian_noise", identity)


def test_derived_keys_never_merge_in_the_release(neighbours: tuple[Engine, Engine], no_noise: None) -> None:
    """Keys distinct in the backend stay distinct: ``x * 1e-21 + 1`` differs per x in PostgreSQL's NUMERIC
    (its public domain is derived there) and collapses to 1.0 in DuckDB's DOUBLE; either way every counted
    row is counted once, and no group overwrites another."""
    engine: Callable[..., Any] = neighbours[1].execute
    sql = ("SELECT x * 0.000000000000000000001 + 1 AS k, COUNT(*) AS n FROM t "
           "GROUP BY x * 0.000000000000000000001 + 1")
    rows = engine(sql, analyst="alice", epsilon=1.0).rows
    total = sum(n for _, n in rows)
    assert total == len(ORDINARY)  # x = p % 7 is within 0..100 for every ordinary person
    assert len(rows) in (1, 101)  # DuckDB: one key; PostgreSQL: one per value of x in its domain 0..100


def test_plan_cache_is_bounded_by_statement_size(tmp_path: Path) -> None:
    """Large statements are planned afresh (never cached) and the cache holds a bounded amount of SQL."""
    engine = Engine(sample_config(tmp_path))
    try:
        big = "SELECT COUNT(*) FROM people WHERE age IN (" + ", ".join(str(i % 90) for i in range(6000)) + ")"
        assert len(big) > engine_module.PLAN_CACHE_MAX_STATEMENT
        engine.prepare(big)
        assert not engine._plans
        for i in range(40):
            engine.prepare(f"SELECT COUNT(*) FROM people WHERE age > {i} AND age IN ("
                           + ", ".join(str(j % 90) for j in range(1500)) + ")")
        assert sum(len(k[0]) for k in engine._plans) == engine._plan_chars <= engine_module.PLAN_CACHE_CHARS
        assert 0 < len(engine._plans) < 40
    finally:
        engine.close()
