"""Row expressions made safe to run on a backend, and what the rewrite needs to know of its SQL.

``prepare_row_expr`` is applied to every checked row expression (WHERE, keys,
aggregate arguments) before it reaches a backend: numeric columns inside
arithmetic are evaluated in a type that cannot overflow on that backend
(DOUBLE in DuckDB/Spark, NUMERIC in PostgreSQL), and number literals compared
with text columns become text literals, so no row can make the query fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from privsql.config import ColumnMeta, TableMeta

ARITH_NODES = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Abs, exp.Round, exp.Floor, exp.Ceil,
               exp.Least, exp.Greatest)
COMPARE_NODES = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)


@dataclass(frozen=True)
class SqlTarget:
    """What the rewrite needs to know about a backend's SQL."""

    dialect: str  # sqlglot dialect name
    safe_numeric: str  # a type in which + - * / of bounded literals cannot raise (DOUBLE / NUMERIC)
    hash_function: str  # 'duckdb' | 'postgres' | 'spark'

    def order_hash(self, values: list[exp.Expression], salt: int, *, int_unit: bool = False) -> exp.Expression:
        """A per-query pseudo-random order of a person's groups (or values), keyed by the secret salt.

        ``values[0]`` is the person; ``int_unit`` says it is an integer (PostgreSQL then hashes it
        as one, without a text cast). Ties are broken by the caller's ORDER BY, so the order
        depends on nothing but the person's own groups."""
        seed = exp.Literal.number(salt & 0x7FFFFFFFFFFFFFFF)
        if self.hash_function == "postgres":  # hash the keys once, seeded by a hash of the person
            unit, keys = values[0], values[1:]
            person = (exp.Anonymous(this="hashint8extended", expressions=[unit, seed]) if int_unit else
                      exp.Anonymous(this="hashtextextended", expressions=[exp.cast(unit, "TEXT"), seed]))
            text = exp.Anonymous(this="concat_ws", expressions=[exp.Literal.string("\x1f"),
                                                                 *[exp.cast(k, "TEXT") for k in keys]])
            return exp.Anonymous(this="hashtextextended", expressions=[text, person])
        if self.hash_function == "spark":
            return exp.func("xxhash64", *values, seed)
        return exp.func("hash", *values, seed)


def prepare_row_expr(expr: exp.Expression, table: TableMeta | None, target: SqlTarget, *,
                     lookup: Callable[[exp.Column], ColumnMeta | None] | None = None) -> exp.Expression:
    """Make a checked row expression safe to run: numeric columns inside arithmetic are
    evaluated in the backend's non-overflowing type, numeric literals compared with text
    columns become text literals. ``lookup`` finds a column's metadata (default: by name in ``table``)."""
    if lookup is None:
        assert table is not None
        columns = table.columns
        lookup = lambda col: columns.get(col.name)  # noqa: E731
    expr = expr.copy()
    for node in list(expr.find_all(*COMPARE_NODES, exp.In)):
        operands = [node.this] + (node.expressions if isinstance(node, exp.In) else [node.expression])
        if any(isinstance(o, exp.Column) and (m := lookup(o)) is not None and m.type == "text" for o in operands):
            for o in operands:
                text = _number_text(o)
                if text is not None:
                    o.replace(exp.Literal.string(text))
    # every number that takes part in arithmetic (at any depth) is computed in the safe type:
    # integer overflow would otherwise raise an error on some rows only
    for node in list(expr.find_all(exp.Column, exp.Literal)):
        numeric = (isinstance(node, exp.Literal) and not node.is_string) or (
            isinstance(node, exp.Column) and (meta := lookup(node)) is not None and meta.is_numeric)
        if isinstance(node.parent, exp.Round) and node.arg_key == "decimals":
            continue  # ROUND(x, 1): the digits stay an integer (PostgreSQL has no round(numeric, numeric))
        if numeric and _inside_arithmetic(node, expr):
            node.replace(exp.cast(node.copy(), target.safe_numeric))
    if target.safe_numeric.upper() != "DOUBLE":
        # PostgreSQL raises on DOUBLE PRECISION overflow and underflow (DuckDB and Spark give inf/0): an
        # analyst's CAST(x AS DOUBLE) is computed in the safe type there, or
        # WHERE pid = 17 AND CAST(income AS DOUBLE) * 1e300 * 1e8 > 0 would fail iff person 17's income > 1.8
        for cast in list(expr.find_all(exp.Cast)):
            if cast.to.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
                cast.set("to", exp.DataType.build(target.safe_numeric))
    return expr


def number_literal(v: float) -> exp.Expression:
    if float(v).is_integer() and abs(v) < 2**62:
        return exp.Literal.number(int(v))
    return exp.Literal.number(repr(float(v)))


def clamp(e: exp.Expression, lo: float, hi: float) -> exp.Expression:
    """CASE clamp: keeps NULL as NULL (LEAST/GREATEST would turn it into a bound), maps NaN and ±inf
    to a bound."""
    return exp.Case(ifs=[exp.If(this=exp.LT(this=e.copy(), expression=number_literal(lo)), true=number_literal(lo)),
                         exp.If(this=exp.GT(this=e.copy(), expression=number_literal(hi)), true=number_literal(hi))],
                    default=e.copy())


def parenthesize(tree: exp.Expression) -> exp.Expression:
    """Wrap every operator operand that is itself an operator in parentheses (in place).

    sqlglot prints a tree as written, without adding parentheses for precedence, so a
    tree built in code (``Div(Sub(a, b), c)``) would print as ``a - b / c``."""
    for node in list(tree.walk()):
        if isinstance(node, (exp.Binary, exp.Neg, exp.Not)):
            for key in ("this", "expression"):
                child = node.args.get(key)
                if isinstance(child, (exp.Binary, exp.Neg)) and not isinstance(child, exp.Paren):
                    node.set(key, exp.Paren(this=child))
    return tree


def _inside_arithmetic(node: exp.Expression, root: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, ARITH_NODES):
            return True
        if parent is root:
            return False
        parent = parent.parent
    return False


def _number_text(node: exp.Expression) -> str | None:
    """The text of a number literal (with its sign), e.g. '-1', else None."""
    if isinstance(node, exp.Literal) and not node.is_string:
        return node.this
    if isinstance(node, exp.Neg):
        inner = _number_text(node.this)
        return f"-{inner}" if inner is not None and not inner.startswith("-") else None
    if isinstance(node, exp.Paren):
        return _number_text(node.this)
    return None


DUCKDB_TARGET = SqlTarget(dialect="duckdb", safe_numeric="DOUBLE", hash_function="duckdb")
