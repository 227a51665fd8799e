"""Public key domains: which group keys may be released without a threshold.

A GROUP BY key has a public domain when it can be listed from the config alone:
a column's declared ``values``; the integers within an ``int`` column's declared
bounds (at most ``MAX_RANGE`` of them); ``true``/``false`` for a bool column;
and any allow-listed expression over such columns, evaluated on every
combination of their domains (``FLOOR(age / 10) * 10`` → 0, 10, …, 100).

Nothing here reads the data. The rewrite keeps only rows whose key is in the
domain, and every domain value is released (with noise on 0 where there is no
data), so no δ is spent on these keys.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal
from itertools import product
from typing import Any

import duckdb
import numpy as np
from sqlglot import exp

from privsql.config import ColumnMeta, TableMeta
from privsql.isolated_duckdb import duckdb_type_name, isolated_connection
from privsql.sql.prepare import DUCKDB_TARGET, SqlTarget, prepare_row_expr
from privsql.sql.rowexpr import RowInfo

MAX_RANGE = 10_000
MAX_DERIVED_RANGE = 1_000  # integer ranges derived from an expression (EXTRACT(YEAR ...) has 9,999: too many)
MAX_DOMAIN = 100_000
_CONFIG_TYPE = {"bigint": "int", "double": "float", "numeric": "float", "text": "text", "boolean": "bool",
                "date": "date", "timestamp": "timestamp"}
_SQL_TYPE = {"int": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "date": "DATE",
             "timestamp": "TIMESTAMP"}


def column_domain(col: ColumnMeta) -> tuple[Any, ...] | None:
    """The public values of one column, or None when they cannot be listed from the config."""
    if col.values is not None:
        return col.values
    if col.type == "bool":
        return (False, True)
    if col.type == "int" and col.bounded:
        lo, hi = math.ceil(col.lower), math.floor(col.upper)  # type: ignore[arg-type]
        if 0 <= hi - lo < MAX_RANGE:
            return tuple(range(lo, hi + 1))
    return None


def integer_range(info: RowInfo) -> tuple[tuple[Any, ...], str] | None:
    """The integers an integral, bounded key expression can take (at most MAX_RANGE), or None."""
    if not (info.integral and info.bounded):
        return None
    lo, hi = math.ceil(info.lower), math.floor(info.upper)  # type: ignore[arg-type]
    if not 0 <= hi - lo < MAX_DERIVED_RANGE:
        return None
    return tuple(range(lo, hi + 1)), "int"


#: runs a query that reads no private data on the active backend and returns its rows
PublicQueryRunner = Callable[[str], list[tuple[Any, ...]]]


def expression_domain(expr: exp.Expression, table: TableMeta, target: SqlTarget = DUCKDB_TARGET,
                      run: PublicQueryRunner | None = None) -> tuple[tuple[Any, ...], str] | None:
    """(domain, config type) of a key expression over columns with public domains, else None.

    The expression is evaluated as ``target`` computes it (``prepare_row_expr``) on every
    combination of its columns' public domains — by ``run`` on the active backend when given
    (its own numeric semantics: PostgreSQL's NUMERIC is not DuckDB's DOUBLE), else in an isolated
    DuckDB. Reads no private data: the inputs are literals from the config. So the domain holds
    exactly the values, as Python gets them back from that backend, that the backend can produce
    for in-domain inputs; distinct backend values stay distinct (see ``release``).
    """
    names = sorted({c.name for c in expr.find_all(exp.Column)})
    domains = [column_domain(table.columns[n]) for n in names]
    if not names or any(d is None for d in domains):
        return None
    if math.prod(len(d) for d in domains) > MAX_DOMAIN:  # type: ignore[arg-type]
        return None
    rows = list(product(*domains))  # type: ignore[arg-type]
    prepared = prepare_row_expr(expr, table, target)
    if run is None:
        found = _duckdb_domain(prepared, names, rows, table)
    else:
        found = _backend_domain(prepared, names, rows, table, target, run)
    if found is None or not found[0] or len(found[0]) > MAX_DOMAIN:
        return None
    return found


def _duckdb_domain(prepared: exp.Expression, names: list[str], rows: list[tuple[Any, ...]],
                   table: TableMeta) -> tuple[tuple[Any, ...], str] | None:
    data = {f"__c{i}": np.array([str(r[i]) for r in rows], dtype=object) for i in range(len(names))}
    casts = ", ".join(f"CAST(__c{i} AS {_SQL_TYPE[table.columns[n].type]}) AS \"{n}\"" for i, n in enumerate(names))
    sql = (f"SELECT DISTINCT {prepared.sql(dialect='duckdb')} AS k FROM (SELECT {casts} FROM __inputs) "
           "WHERE k IS NOT NULL ORDER BY k")
    cur = isolated_connection().cursor()
    try:
        cur.register("__inputs", data)
        result = cur.execute(sql)
        values = tuple(r[0] for r in result.fetchall())
        return values, _CONFIG_TYPE.get(duckdb_type_name(result.description[0][1]), "text")
    except duckdb.Error:
        return None  # cannot be evaluated here: fall back to a thresholded release
    finally:
        cur.close()


def _backend_domain(prepared: exp.Expression, names: list[str], rows: list[tuple[Any, ...]], table: TableMeta,
                    target: SqlTarget, run: PublicQueryRunner) -> tuple[tuple[Any, ...], str] | None:
    tuples = [exp.Tuple(expressions=[exp.cast(exp.Literal.string(str(v)), _SQL_TYPE[table.columns[n].type])
                                     for n, v in zip(names, r)]) for r in rows]
    inputs = exp.Values(expressions=tuples, alias=exp.TableAlias(this=exp.to_identifier("__inputs"),
                                                                 columns=[exp.to_identifier(n) for n in names]))
    inner = exp.select(prepared.as_("k")).from_(inputs)
    query = (exp.select("k").distinct().from_(inner.subquery("__d")).where(exp.column("k").is_(exp.null()).not_())
             .order_by("k"))
    try:
        values = tuple(r[0] for r in run(query.sql(dialect=target.dialect)))
    except Exception:  # noqa: BLE001 - reads no private data: a failure only means "no public domain"
        return None
    return values, _python_kind(values)


def _python_kind(values: tuple[Any, ...]) -> str:
    """The config type of values as a backend returned them."""
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, dt.datetime) for v in values):
        return "timestamp"
    if all(isinstance(v, dt.date) for v in values):
        return "date"
    return "text"
