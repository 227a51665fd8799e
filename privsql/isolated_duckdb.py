"""A per-thread in-memory DuckDB that holds no data and can read no files.

Used to evaluate the analyst's post-processing expressions over noisy values
and to list public key domains; never connected to the backing database.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb

_local = threading.local()


def isolated_connection() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB for post-processing: holds no data, reads no files."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        _local.con = con
    return con


def duckdb_type_name(t: Any) -> str:
    """DuckDB type → privsql output type name."""
    s = str(t).upper()
    if s in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT"):
        return "bigint"
    if s in ("DOUBLE", "FLOAT", "REAL"):
        return "double"
    if s.startswith("DECIMAL"):
        return "numeric"
    if s == "BOOLEAN":
        return "boolean"
    if s == "DATE":
        return "date"
    if s.startswith("TIMESTAMP"):
        return "timestamp"
    return "text"
