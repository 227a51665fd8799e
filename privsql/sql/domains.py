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

import math
from itertools import product
from typing import Any

import duckdb
import numpy as np
from sqlglot import exp

from privsql.config import ColumnMeta, TableMeta
from privsql.isolated_duckdb import duckdb_type_name, isolated_connection
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


def expression_domain(expr: exp.Expression, prepared: exp.Expression,
                      table: TableMeta) -> tuple[tuple[Any, ...], str] | None:
    """(domain, config type) of a key expression over columns with public domains, else None.

    ``prepared`` is the expression as the DuckDB backend evaluates it (see
    ``rewrite.prepare_row_expr``), so the domain holds exactly the values the
    backend can produce for in-domain inputs.
    """
    names = sorted({c.name for c in expr.find_all(exp.Column)})
    domains = [column_domain(table.columns[n]) for n in names]
    if not names or any(d is None for d in domains):
        return None
    if math.prod(len(d) for d in domains) > MAX_DOMAIN:  # type: ignore[arg-type]
        return None
    rows = list(product(*domains))  # type: ignore[arg-type]
    data = {f"__c{i}": np.array([str(r[i]) for r in rows], dtype=object) for i in range(len(names))}
    casts = ", ".join(f"CAST(__c{i} AS {_SQL_TYPE[table.columns[n].type]}) AS \"{n}\"" for i, n in enumerate(names))
    sql = (f"SELECT DISTINCT {prepared.sql(dialect='duckdb')} AS k FROM (SELECT {casts} FROM __inputs) "
           "WHERE k IS NOT NULL ORDER BY k")
    cur = isolated_connection().cursor()
    try:
        cur.register("__inputs", data)
        result = cur.execute(sql)
        values = tuple(r[0] for r in result.fetchall())
        kind = _CONFIG_TYPE.get(duckdb_type_name(result.description[0][1]), "text")
    except duckdb.Error:
        return None  # cannot be evaluated here: fall back to a thresholded release
    finally:
        cur.close()
    if not values or len(values) > MAX_DOMAIN:
        return None
    return values, kind
