"""PostgreSQL backend: psycopg 3 with a connection pool (psycopg_pool).

Configuration (the ``backend:`` section)::

    backend:
      kind: postgres
      dsn: postgresql://privsql_reader@db.internal:5432/warehouse   # required
      schema: public            # schema of tables whose source has none (default: public)
      pool_min_size: 1          # connections kept open (default 1)
      pool_max_size: 8          # concurrent backend queries at most (default 8)
      pool_timeout: 10          # seconds to wait for a connection before failing the query (default 10)
      connect_timeout: 5        # seconds per connection attempt (default 5)
      statement_timeout: 300    # cap on every query, seconds (default: the engine's query_timeout)

Tables are existing PostgreSQL tables: a table's ``source`` is a table name,
optionally schema-qualified (``analytics.visits``), else in the table's
``schema:`` or the backend's ``schema``. Load CSV files with
``privsql load-sample`` or ``COPY``.

Guarantees:

* **checked at start-up, never assumed**: every configured table and column
  exists with a compatible type and is readable, and a table that declares
  ``one_row_per_unit`` has a PRIMARY KEY, or a UNIQUE constraint/index on a
  NOT NULL column, on exactly its privacy unit; otherwise ConfigError;
* **read-only**: every query runs in its own ``READ ONLY`` transaction with
  ``SET LOCAL statement_timeout``, ``search_path`` pinned to ``pg_catalog``
  (tables are always schema-qualified, so no user function can shadow a
  built-in), and is rolled back afterwards. A dedicated role with only SELECT
  grants is still recommended (docs/deploy.md);
* **exact sums**: the rewrite sends per-person BIGINT grid units; PostgreSQL's
  SUM(bigint) is NUMERIC, so totals are exact whatever the summation order.
  Arithmetic on numeric columns inside row expressions is done in NUMERIC,
  which (unlike DOUBLE PRECISION, which raises on overflow in PostgreSQL)
  cannot fail on any bounded literal expression;
* **clear failures**: an unreachable server, a lost connection (restart,
  ``pg_terminate_backend``) or the statement timeout become BackendError /
  QueryCanceled with messages that do not depend on the data; the engine
  keeps the reserved budget spent. Broken connections are discarded by the
  pool and replaced on the next query.
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlglot import exp

from privsql.backends.base import Backend
from privsql.cancel import BUDGET_NOTE, effective_timeout, guard
from privsql.config import Config, TableMeta
from privsql.dsn import describe_dsn
from privsql.errors import BackendError, ConfigError
from privsql.sql.rewrite import SqlTarget

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet")
DEFAULT_STATEMENT_TIMEOUT = 300.0
#: seconds a cancel request to the PostgreSQL server may take
CANCEL_TIMEOUT = 5.0

#: declared column type → accepted PostgreSQL types (pg_type.typname)
COMPATIBLE_TYPES = {
    "int": {"int2", "int4", "int8"},
    "float": {"float4", "float8", "numeric", "int2", "int4", "int8"},
    "text": {"text", "varchar", "bpchar", "name", "citext"},
    "bool": {"bool"},
    "date": {"date"},
    "timestamp": {"timestamp", "timestamptz"},
}

_COLUMNS_SQL = """
SELECT c.relkind, a.attname, t.typname, a.attnotnull, a.attnum,
       has_table_privilege(c.oid, 'SELECT') OR has_column_privilege(c.oid, a.attnum, 'SELECT') AS readable
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""

# a unique index (PRIMARY KEY and UNIQUE constraints have one) on exactly this one column,
# not partial, not on an expression
_UNIQUE_SQL = """
SELECT i.indisprimary, i.indnullsnotdistinct
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indisvalid
  AND i.indnkeyatts = 1 AND i.indkey[0] = %s AND i.indpred IS NULL AND i.indexprs IS NULL
"""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def split_source(table: TableMeta, default_schema: str) -> tuple[str, str]:
    """(schema, table) in PostgreSQL for a configured table."""
    source = table.source or table.name
    if source.lower().endswith(FILE_SUFFIXES):
        raise ConfigError(f"table {table.name}: the postgres backend reads existing tables, not files like "
                          f"{source!r}; load it with `privsql load-sample --dsn ...` (or COPY) and set source "
                          "to the table name")
    parts = source.split(".")
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) != 1:
        raise ConfigError(f"table {table.name}: source {source!r} must be 'table' or 'schema.table'")
    return table.schema or default_schema, source


class PostgresBackend(Backend):
    target = SqlTarget(dialect="postgres", safe_numeric="NUMERIC", hash_function="postgres")

    def __init__(self, config: Config) -> None:
        b = config.backend
        dsn = b.get("dsn")
        if not dsn or not isinstance(dsn, str):
            raise ConfigError("backend: a postgres backend needs a 'dsn', e.g. "
                              "postgresql://postgres@127.0.0.1:5432/test")
        self.dsn = dsn
        self.where = describe_dsn(dsn)
        self.schema = str(b.get("schema", "public"))
        self.connect_timeout = float(b.get("connect_timeout", 5))
        self.pool_timeout = float(b.get("pool_timeout", 10))
        st = b.get("statement_timeout")
        self.statement_timeout = float(st) if st is not None else None
        min_size = int(b.get("pool_min_size", 1))
        max_size = int(b.get("pool_max_size", 8))
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigError("backend: need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1")
        self._kwargs: dict[str, Any] = {
            "autocommit": False, "prepare_threshold": None, "connect_timeout": max(1, int(self.connect_timeout)),
            "application_name": str(b.get("application_name", "privsql")),
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
        }
        self._refs: dict[str, exp.Table] = {}
        # start-up checks on one direct connection: fails fast (no pool retry loop) when unreachable
        try:
            with psycopg.connect(dsn, **{**self._kwargs, "autocommit": True}) as con:
                for table in config.tables.values():
                    self._check_table(con, table)
        except psycopg.OperationalError as exc:
            raise BackendError(f"cannot connect to the PostgreSQL backend at {self.where}: "
                               f"{_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise ConfigError(f"PostgreSQL backend at {self.where}: start-up check failed: "
                              f"{_first_line(exc)}") from None
        self._pool = ConnectionPool(dsn, kwargs=self._kwargs, min_size=min_size, max_size=max_size,
                                    configure=self._configure, check=ConnectionPool.check_connection,
                                    timeout=self.pool_timeout, name="privsql-backend", open=False,
                                    reconnect_timeout=max(60.0, self.pool_timeout))
        self._pool.open(wait=False)
        self._closed = threading.Event()

    # ------------------------------------------------------------------ start-up
    def _check_table(self, con: psycopg.Connection, table: TableMeta) -> None:
        schema, name = split_source(table, self.schema)
        rows = con.execute(_COLUMNS_SQL, [schema, name]).fetchall()
        if not rows:
            raise ConfigError(f"table {table.name}: no table or view {schema}.{name} in the PostgreSQL database "
                              f"{self.where} (load the sample data with `privsql load-sample`)")
        cols = {r[1]: r for r in rows}
        missing = [c for c in table.columns if c not in cols]
        if missing:
            raise ConfigError(f"table {table.name}: {schema}.{name} has no column(s) {', '.join(missing)} "
                              f"(it has {', '.join(sorted(cols))})")
        for c in table.columns.values():
            typname = cols[c.name][2]
            if typname not in COMPATIBLE_TYPES[c.type]:
                raise ConfigError(f"table {table.name}: column {c.name} is declared {c.type} but is {typname} in "
                                  f"{schema}.{name}")
            if not cols[c.name][5]:
                raise ConfigError(f"table {table.name}: the backend role may not read column {c.name} of "
                                  f"{schema}.{name} (GRANT SELECT)")
        if table.one_row_per_unit and table.privacy_unit:
            unit = cols[table.privacy_unit]
            indexes = con.execute(_UNIQUE_SQL, [schema, name, unit[4]]).fetchall()
            ok = any(primary or nulls_not_distinct or unit[3] for primary, nulls_not_distinct in indexes)
            if not ok:
                raise ConfigError(f"table {table.name} declares one_row_per_unit but {schema}.{name} has no "
                                  f"PRIMARY KEY, or UNIQUE constraint on a NOT NULL column, on exactly "
                                  f"{table.privacy_unit} (it is checked, never assumed)")
        self._refs[table.name] = exp.table_(exp.to_identifier(name, quoted=True),
                                            db=exp.to_identifier(schema, quoted=True))

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.autocommit = True
        conn.execute("SET search_path = pg_catalog; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
                     "SET default_transaction_read_only = on; SET extra_float_digits = 1")
        conn.autocommit = False
        conn.read_only = True

    def table_ref(self, table: TableMeta) -> exp.Table:
        ref = self._refs.get(table.name)
        if ref is None:
            raise ConfigError(f"table {table.name} was not checked at start-up")
        return ref.copy()

    # ------------------------------------------------------------------ queries
    def _timeout_ms(self, timeout: float | None) -> int:
        limits = [t for t in (timeout, self.statement_timeout) if t]
        seconds = min(limits) if limits else DEFAULT_STATEMENT_TIMEOUT
        return max(1, int(seconds * 1000))

    def run(self, sql_text: str, *, timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Run one read-only query under ``statement_timeout``; the current statement's cancel
        (:mod:`privsql.cancel`) cancels it on the server too. Raises QueryCanceled / BackendError."""
        ms = self._timeout_ms(effective_timeout(timeout))
        try:
            with self._pool.connection(timeout=min(self.pool_timeout, ms / 1000)) as conn:
                try:
                    with guard(lambda: conn.cancel_safe(timeout=CANCEL_TIMEOUT), None,
                               interrupted=psycopg.errors.QueryCanceled, note=BUDGET_NOTE), conn.cursor() as cur:
                        cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(ms)))
                        cur.execute(sql_text)  # type: ignore[arg-type] # no parameters: '%' is not special
                        rows = [tuple(as_python(v) for v in r) for r in cur.fetchall()]
                finally:
                    if not conn.closed and not conn.broken:
                        conn.rollback()
        except PoolTimeout:
            raise BackendError(f"no connection to the PostgreSQL backend at {self.where} within "
                               f"{self.pool_timeout:g} s (server unreachable or every connection busy); "
                               "the query's budget stays spent") from None
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown,
                psycopg.errors.CannotConnectNow, psycopg.InterfaceError) as exc:
            log.warning("PostgreSQL backend connection failed: %s", type(exc).__name__)
            raise BackendError(f"the connection to the PostgreSQL backend at {self.where} was lost or refused "
                               f"(server restarted, unreachable or the session was terminated): "
                               f"{type(exc).__name__}; the query's budget stays spent") from None
        except psycopg.Error as exc:
            log.warning("PostgreSQL backend query failed: %s (SQLSTATE %s)", type(exc).__name__, exc.sqlstate)
            raise BackendError(f"the backend failed: {type(exc).__name__}") from None
        return rows

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.close(timeout=5)


def as_python(value: Any) -> Any:
    """NUMERIC → int when finite and integral (every measure: exact sums of grid units), else the
    exact Decimal.

    Never a float: derived numeric keys (``GROUP BY age * 0.1``) are NUMERIC here, and two keys that
    differ in PostgreSQL must stay different in privsql (as floats they could merge, and one group
    would overwrite another in the release). Infinity and NaN (NUMERIC holds them) stay Decimals."""
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else value
    return value
