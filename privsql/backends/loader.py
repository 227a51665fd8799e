"""Load file-backed tables of a privsql config (the sample data) into PostgreSQL.

``load_postgres(dsn, schema, config)`` creates one table per configured table
whose ``source`` is a CSV file (``.csv`` or ``.csv.gz``), with the declared
column types, a PRIMARY KEY on the privacy unit where the table declares
``one_row_per_unit`` (so PostgreSQL, not privsql, guarantees it; the backend
checks the constraint at start-up), and streams the file in with ``COPY``.

Everything happens in one transaction: a concurrent reader sees the old tables
or the new ones, never a half-loaded table. Existing tables of the same names
in ``schema`` are replaced; nothing else in the schema is touched.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from privsql.config import Config, TableMeta
from privsql.errors import ConfigError

PG_TYPES = {"int": "bigint", "float": "double precision", "text": "text", "bool": "boolean", "date": "date",
            "timestamp": "timestamp"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedTable:
    name: str  # schema-qualified
    rows: int


def check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{what} {name!r} must be letters, digits and underscores (at most 63)")
    return name


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller


def _chunks(f: io.TextIOBase) -> Iterator[str]:
    while True:
        block = f.read(CHUNK)
        if not block:
            return
        yield block


def file_tables(config: Config) -> list[tuple[TableMeta, Path]]:
    """The configured tables whose source is a CSV file, with the file's resolved path."""
    out = []
    for table in config.tables.values():
        source = table.source or ""
        if source.lower().endswith((".csv", ".csv.gz")):
            out.append((table, Path(config.resolve_path(source))))
    return out


def create_table_sql(schema: str, table: TableMeta) -> sql.Composed:
    cols = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(PG_TYPES[c.type]))
            for c in table.columns.values()]
    if table.one_row_per_unit and table.privacy_unit:
        cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(table.privacy_unit)))
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table.name), sql.SQL(", ").join(cols))


def load_postgres(dsn: str, schema: str, config: Config, *, connect_timeout: float = 10) -> list[LoadedTable]:
    """Create ``schema`` if needed and (re)load every CSV-backed table of ``config`` into it."""
    check_identifier(schema, "schema")
    tables = file_tables(config)
    if not tables:
        raise ConfigError("the config names no CSV file sources to load")
    loaded = []
    with psycopg.connect(dsn, connect_timeout=int(connect_timeout)) as con:
        with con.transaction():
            con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table, path in tables:
                check_identifier(table.name, "table")
                if not path.exists():
                    raise ConfigError(f"table {table.name}: source file {path} does not exist")
                with _open_text(path) as f:
                    header = [h.strip().lower() for h in next(csv.reader([f.readline()]))]
                    unknown = [h for h in header if h not in table.columns]
                    missing = [c for c in table.columns if c not in header]
                    if unknown or missing:
                        raise ConfigError(f"table {table.name}: the columns of {path.name} ({', '.join(header)}) "
                                          f"do not match the declared columns ({', '.join(table.columns)})")
                    con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, table.name)))
                    con.execute(create_table_sql(schema, table))
                    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                        sql.Identifier(schema, table.name), sql.SQL(", ").join(map(sql.Identifier, header)))
                    try:
                        with con.cursor().copy(copy) as cp:
                            for block in _chunks(f):
                                cp.write(block)
                    except psycopg.errors.UniqueViolation:
                        raise ConfigError(f"table {table.name} declares one_row_per_unit but "
                                          f"{table.privacy_unit} is not unique in {path.name}") from None
                    except psycopg.errors.DataError as exc:
                        raise ConfigError(f"table {table.name}: a value in {path.name} does not match the "
                                          f"declared type: {exc.diag.message_primary}") from None
                con.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table.name)))
                (rows,), = con.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, table.name))).fetchall()
                loaded.append(LoadedTable(f"{schema}.{table.name}", int(rows)))
    return loaded


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a schema and everything in it (tests and benchmarks clean up with this)."""
    check_identifier(schema, "schema")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
