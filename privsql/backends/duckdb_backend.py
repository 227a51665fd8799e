"""Embedded DuckDB backend (the default).

Configured CSV/Parquet sources are loaded into typed tables at start-up, with a
PRIMARY KEY on the privacy unit where a table declares ``one_row_per_unit`` (so
DuckDB, not privsql, guarantees it). Then the database is locked down:
``enable_external_access = false`` blocks read_csv/COPY/ATTACH/INSTALL/LOAD and
``lock_configuration = true`` blocks every later SET, so even a query that
slipped past validation could not read files or change settings.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
from sqlglot import exp

from privsql.backends.base import Backend
from privsql.cancel import BUDGET_NOTE, guard
from privsql.config import Config, TableMeta
from privsql.errors import BackendError, ConfigError
from privsql.isolated_duckdb import duckdb_type_name
from privsql.results import OutputColumn
from privsql.sql.prepare import SqlTarget

DUCKDB_TYPES = {"int": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "date": "DATE",
                "timestamp": "TIMESTAMP"}
FILE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBBackend(Backend):
    target = SqlTarget(dialect="duckdb", safe_numeric="DOUBLE", hash_function="duckdb")

    def __init__(self, config: Config) -> None:
        path = config.resolve_path(str(config.backend.get("path", ":memory:")))
        try:
            self._con = duckdb.connect(path)
            threads = config.backend.get("threads")
            if threads:
                self._con.execute(f"SET threads = {int(threads)}")
            for table in config.tables.values():
                self._prepare_table(config, table)
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            raise ConfigError(f"DuckDB backend could not start: {exc}") from None
        self._local = threading.local()

    def _prepare_table(self, config: Config, table: TableMeta) -> None:
        source = table.source or table.name
        if source.lower().endswith(FILE_SUFFIXES):
            self._load_file(config.resolve_path(source), table)
        else:
            self._check_existing(source, table)

    def _load_file(self, path: str, table: TableMeta) -> None:
        cols = ", ".join(f"{_quote(c.name)} {DUCKDB_TYPES[c.type]}{' NOT NULL' if c.not_null else ''}"
                         for c in table.columns.values())
        key = f", PRIMARY KEY ({_quote(table.privacy_unit)})" if table.one_row_per_unit and table.privacy_unit else ""
        self._con.execute(f"CREATE OR REPLACE TABLE {_quote(table.name)} ({cols}{key})")
        parquet = path.lower().endswith(".parquet")
        reader = "read_parquet(?)" if parquet else "read_csv(?, header = true, all_varchar = true)"
        described = self._con.execute(f"DESCRIBE SELECT * FROM {reader}", [path]).fetchall()
        available = {r[0].lower(): r[0] for r in described}
        missing = [c for c in table.columns if c not in available]
        if missing:
            raise ConfigError(f"table {table.name}: source {path} has no column(s) {', '.join(missing)}")
        select = ", ".join(f"CAST({_quote(available[c.name])} AS {DUCKDB_TYPES[c.type]})"
                           for c in table.columns.values())
        try:
            self._con.execute(f"INSERT INTO {_quote(table.name)} SELECT {select} FROM {reader}", [path])
        except duckdb.ConstraintException as exc:
            raise ConfigError(f"table {table.name}: {path} breaks a declared constraint (one_row_per_unit: "
                              f"{table.privacy_unit} unique and not NULL; not_null columns): "
                              f"{str(exc).splitlines()[0]}") from None
        except duckdb.ConversionException as exc:
            raise ConfigError(f"table {table.name}: a value in {path} does not match the declared type: "
                              f"{exc}") from None

    def _check_existing(self, source: str, table: TableMeta) -> None:
        rows = self._con.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = ?", [source]).fetchall()
        if not rows:
            raise ConfigError(f"table {table.name}: no table or file named {source!r} in the DuckDB database")
        nullable = {name.lower(): flag == "YES" for name, flag in rows}
        for col in table.columns.values():
            if col.not_null and nullable.get(col.name, True):
                raise ConfigError(f"table {table.name} declares {col.name} not_null but {source} has no NOT NULL "
                                  "constraint on it (it is checked, never assumed)")
        if table.one_row_per_unit:
            cons = self._con.execute(
                "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')", [source]).fetchall()
            if not any(list(c[0]) == [table.privacy_unit] for c in cons):
                raise ConfigError(f"table {table.name} declares one_row_per_unit but {source} has no PRIMARY KEY "
                                  f"or UNIQUE constraint on {table.privacy_unit} (it is checked, never assumed)")

    def table_ref(self, table: TableMeta) -> exp.Table:
        source = table.source or table.name
        name = table.name if source.lower().endswith(FILE_SUFFIXES) else source
        return exp.table_(exp.to_identifier(name, quoted=True))

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def run(self, sql: str, *, timeout: float | None = None) -> list[tuple[Any, ...]]:
        return self.run_with_columns(sql, timeout=timeout)[1]

    def run_with_columns(self, sql: str, *, timeout: float | None = None
                         ) -> tuple[list[OutputColumn], list[tuple[Any, ...]]]:
        """Run one query; interrupted after ``timeout`` s or when the current statement is cancelled
        (:mod:`privsql.cancel`), raising QueryCanceled."""
        cur = self._cursor()
        try:
            with guard(cur.interrupt, timeout, interrupted=duckdb.InterruptException, note=BUDGET_NOTE):
                result = cur.execute(sql)
                rows = result.fetchall()
            return [OutputColumn(d[0], duckdb_type_name(d[1])) for d in result.description], rows
        except duckdb.Error as exc:
            raise BackendError(f"the backend failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self._con.close()
