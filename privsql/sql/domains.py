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
                      run: PublicQueryRunner | None = None, *,
                      where: exp.Expression | None = None) -> tuple[tuple[Any, ...], str] | None:
    """(domain, config type) of a key expression over columns with public domains, else None.

    The expression is evaluated as ``target`` computes it (``prepare_row_expr``) on every
    combination of its columns' public domains — by ``run`` on the active backend when given
    (its own numeric semantics: PostgreSQL's NUMERIC is not DuckDB's DOUBLE), else in an isolated
    DuckDB. Reads no private data: the inputs are literals from the config. So the domain holds
    exactly the values, as Python gets them back from that backend, that the backend can produce
    for in-domain inputs; distinct backend values stay distinct (see ``release``).

    With ``where`` (the query's WHERE): only the key values that pass the conjuncts of ``where``
    testing this key against literals (``key_conditions``), which may be none; None when no
    conjunct qualifies. Those conjuncts are taken from the WHERE as the rewrite prepares it, so
    they are evaluated with the backend's semantics; still reads the config and the query only.
    """
    names = sorted({c.name for c in expr.find_all(exp.Column)})
    domains = [column_domain(table.columns[n]) for n in names]
    if not names or any(d is None for d in domains):
        return None
    if math.prod(len(d) for d in domains) > MAX_DOMAIN:  # type: ignore[arg-type]
        return None
    rows = list(product(*domains))  # type: ignore[arg-type]
    prepared = prepare_row_expr(expr, table, target)
    test = None
    if where is not None:
        test = _prepared_key_test(expr, where, table, target)
        if test is None:
            return None
    if run is None:
        found = _duckdb_domain(prepared, names, rows, table, test)
    else:
        found = _backend_domain(prepared, names, rows, table, target, run, test)
    if found is None or (not found[0] and test is None) or len(found[0]) > MAX_DOMAIN:
        return None
    return found


#: comparisons that may trim a key's public domain: ``key <op> literal`` (either side)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    """The top-level conjuncts of a condition (``a AND (b AND c)`` → a, b, c)."""
    while isinstance(cond, exp.Paren):
        cond = cond.this
    if isinstance(cond, exp.And):
        return conjuncts(cond.this) + conjuncts(cond.expression)
    return [cond]


def _is_literal(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null))


def _is_key(node: exp.Expression, key_sql: str) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return node.sql() == key_sql


def is_key_test(cond: exp.Expression, key: exp.Expression) -> bool:
    """Whether ``cond`` compares the key expression itself with literals only: ``key op literal``
    (=, <>, <, <=, >, >=, either side), ``key [NOT] IN (literals)``, ``key [NOT] BETWEEN literal
    AND literal``, or NOT of one of those. Such a condition depends on the key's value alone."""
    while isinstance(cond, exp.Paren):
        cond = cond.this
    if isinstance(cond, exp.Not):
        return is_key_test(cond.this, key)
    key_sql = key.sql()
    if isinstance(cond, _COMPARISONS):
        left, right = cond.this, cond.expression
        return (_is_key(left, key_sql) and _is_literal(right)) or (_is_key(right, key_sql) and _is_literal(left))
    if isinstance(cond, exp.In):
        if any(cond.args.get(a) is not None for a in ("query", "unnest", "field")):
            return False
        return _is_key(cond.this, key_sql) and bool(cond.expressions) and all(map(_is_literal, cond.expressions))
    if isinstance(cond, exp.Between):
        return _is_key(cond.this, key_sql) and _is_literal(cond.args["low"]) and _is_literal(cond.args["high"])
    return False


def _prepared_key_test(key: exp.Expression, where: exp.Expression, table: TableMeta,
                       target: SqlTarget) -> exp.Expression | None:
    """The conjunction of the WHERE's top-level conjuncts that test ``key`` against literals, as the
    rewrite prepares them (the WHERE is prepared whole, as in the rewrite, then split); None when
    there is none or the prepared WHERE does not split the same way (then nothing is trimmed)."""
    raw = conjuncts(where)
    picked = [i for i, c in enumerate(raw) if is_key_test(c, key)]
    if not picked:
        return None
    prepared = conjuncts(prepare_row_expr(where, table, target))
    if len(prepared) != len(raw):
        return None
    return exp.and_(*(exp.paren(prepared[i].copy()) for i in picked))


def _duckdb_domain(prepared: exp.Expression, names: list[str], rows: list[tuple[Any, ...]],
                   table: TableMeta, test: exp.Expression | None = None) -> tuple[tuple[Any, ...], str] | None:
    data = {f"__c{i}": np.array([str(r[i]) for r in rows], dtype=object) for i in range(len(names))}
    casts = ", ".join(f"CAST(__c{i} AS {_SQL_TYPE[table.columns[n].type]}) AS \"{n}\"" for i, n in enumerate(names))
    inputs = f"SELECT {casts} FROM __inputs"
    if test is not None:  # only the inputs that pass the key's own conditions
        inputs = f"SELECT * FROM ({inputs}) WHERE {test.sql(dialect='duckdb')}"
    sql = f"SELECT DISTINCT {prepared.sql(dialect='duckdb')} AS k FROM ({inputs}) WHERE k IS NOT NULL ORDER BY k"
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
                    target: SqlTarget, run: PublicQueryRunner,
                    test: exp.Expression | None = None) -> tuple[tuple[Any, ...], str] | None:
    tuples = [exp.Tuple(expressions=[exp.cast(exp.Literal.string(str(v)), _SQL_TYPE[table.columns[n].type])
                                     for n, v in zip(names, r)]) for r in rows]
    inputs = exp.Values(expressions=tuples, alias=exp.TableAlias(this=exp.to_identifier("__inputs"),
                                                                 columns=[exp.to_identifier(n) for n in names]))
    inner = exp.select(prepared.as_("k")).from_(inputs)
    if test is not None:  # only the inputs that pass the key's own conditions
        inner = inner.where(test.copy())
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
