"""Budget store test helpers shared by test_budget_store and test_budget_concurrency.

Not a conftest.py (that file belongs to the whole suite): the two test modules
import these helpers (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg

from privsql.accounting.postgres_store import PostgresBudgetStore
from privsql.accounting.sqlite_store import SqliteBudgetStore
from privsql.accounting.store import SqlBudgetStore

PG_DSN = os.environ.get("PRIVSQL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin() -> psycopg.Connection:
    """An autocommit connection to the test database (after ``pg_schema`` has checked it is up)."""
    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)


def unique_pg_schema() -> Iterator[str]:
    """For a session fixture: a schema name unique to this test session, dropped afterwards.

    Skips the test if PostgreSQL is unreachable, or fails it when CI=true.
    """
    from conftest import require_postgres  # here, not at the top: spawned workers import this module

    require_postgres(PG_DSN)
    admin = pg_admin()
    schema = f"privsql_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        yield schema
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def open_test_store(kind: str, location: str | Path) -> SqlBudgetStore:
    """A store of ``kind``: a SQLite file path, or a PostgreSQL schema in PG_DSN."""
    if kind == "sqlite":
        return SqliteBudgetStore(location)
    return PostgresBudgetStore(PG_DSN, schema=str(location))


def store_ledger_units(kind: str, location: str | Path, analyst: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(spent, summed ledger charges) of ``analyst`` in exact integer units, read in one snapshot."""
    query = """
        SELECT coalesce(b.epsilon, 0), coalesce(b.delta, 0), coalesce(b.rho, 0),
               coalesce(sum(l.epsilon), 0), coalesce(sum(l.delta), 0), coalesce(sum(l.rho), 0)
        FROM (SELECT {p} AS analyst) AS a
        LEFT JOIN budget AS b ON b.analyst = a.analyst
        LEFT JOIN ledger AS l ON l.analyst = a.analyst
        GROUP BY b.epsilon, b.delta, b.rho"""
    if kind == "sqlite":
        with closing(sqlite3.connect(location)) as conn:
            row = conn.execute(query.format(p="?"), (analyst,)).fetchone()
    else:
        with pg_admin() as conn:
            conn.execute(f"SET search_path TO {location}")
            row = conn.execute(query.format(p="%s::text"), (analyst,)).fetchone()
    units = tuple(int(x) for x in row)
    return units[:3], units[3:]
