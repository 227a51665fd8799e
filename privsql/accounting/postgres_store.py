"""The shared budget store: tables in one schema of a PostgreSQL database.

Several proxies can share it. Each call runs in one transaction on a pooled
connection (psycopg 3). A driver or connection error becomes BudgetStoreError
and is never retried: if it strikes while a reservation commits, its outcome is
unknown, and failing closed (refusing the query) can leave a charge recorded
for a query that never ran, but never runs a query without its charge.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from privsql.accounting.store import SqlBudgetStore, pyformat
from privsql.dsn import describe_dsn
from privsql.errors import BudgetStoreError

_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS budget (
    analyst text PRIMARY KEY,
    epsilon bigint NOT NULL DEFAULT 0,
    delta   bigint NOT NULL DEFAULT 0,
    rho     bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ledger (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time     timestamptz NOT NULL,
    analyst  text NOT NULL,
    sql_hash text NOT NULL,
    sql_text text NOT NULL,
    epsilon  bigint NOT NULL,
    delta    bigint NOT NULL,
    rho      bigint NOT NULL,
    outcome  text NOT NULL CHECK (outcome IN ('reserved', 'answered', 'failed', 'cached'))
);
CREATE INDEX IF NOT EXISTS ledger_analyst ON ledger (analyst, id);
CREATE TABLE IF NOT EXISTS cache (
    analyst text NOT NULL,
    key     text NOT NULL,
    blob    bytea NOT NULL,
    PRIMARY KEY (analyst, key)
)
"""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_pyformat = lru_cache(maxsize=None)(pyformat)


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for creating ``schema``."""
    digest = hashlib.sha256(f"privsql budget store {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresBudgetStore(SqlBudgetStore):
    """A budget store in schema ``schema`` of the database at ``dsn`` (created if missing).

    Safe for threads and for several processes; schema creation is serialised
    by an advisory lock, so proxies may start together. Raises BudgetStoreError
    if the database cannot be reached within ``timeout`` seconds.
    """

    def __init__(self, dsn: str, *, schema: str = "privsql", max_connections: int = 8,
                 timeout: float = 10.0) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.schema = schema
        self._where = f"{describe_dsn(dsn)} schema {schema}"
        connect_args: dict[str, Any] = {"connect_timeout": max(1, round(timeout)),
                                        "application_name": "privsql-budget"}
        try:
            with psycopg.connect(dsn, **connect_args) as conn, conn.cursor() as cur:
                self._create_schema(cur)
        except psycopg.Error as exc:
            raise BudgetStoreError(f"cannot open the PostgreSQL budget store at {self._where}: {exc}") from exc
        self._pool = ConnectionPool(dsn, min_size=1, max_size=max_connections, timeout=timeout,
                                    kwargs=connect_args, configure=self._set_search_path,
                                    check=ConnectionPool.check_connection, name=f"privsql-budget-{schema}",
                                    open=True)

    def _create_schema(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema),))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
        self._init_schema(cur, _DDL)

    def _set_search_path(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.commit()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[psycopg.Cursor[Any]]:
        # Nothing to lock up front for writes: the conditional UPDATE locks the row.
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
            # leaving pool.connection() committed (or rolled back on an exception)
        except (psycopg.Error, PoolTimeout) as exc:
            raise BudgetStoreError(f"PostgreSQL budget store at {self._where} failed: {exc}") from exc

    def _sql(self, statement: str) -> str:
        return _pyformat(statement)

    def __repr__(self) -> str:
        return f"PostgresBudgetStore({self._where!r})"

    def close(self) -> None:
        self._pool.close()
