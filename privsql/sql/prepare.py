"""Row expressions made safe to run on a backend, and what the rewrite needs to know of its SQL.

``prepare_row_expr`` is applied to every checked row expression (WHERE, keys,
aggregate arguments) before it reaches a backend: numeric columns inside
arithmetic are evaluated in a type that cannot overflow on that backend
(DOUBLE in DuckDB/Spark, NUMERIC in PostgreSQL), and number literals compared
with text columns become text literals, so no row can make the query fail.
"""

from __future__ import annotations

import math
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
    """Make a checked row expression *total*: it evaluates without error on every value its
    columns' types can hold (stored data may violate the declared bounds), on every backend.

    The passes, each a function of the query alone (never of the data):

    * number literals compared with text columns become text literals (no per-row conversion);
    * date and timestamp columns are clamped into years 1..9999 wherever they appear (every backend
      can convert, truncate and return those to Python; ±infinity and far-future or BC values would
      raise on some backends, and only for the rows that hold them — also in implicit conversions,
      e.g. COALESCE(date_col, <timestamp>), and when fetched as a group key);
    * the digits of ROUND(x, n) are a plain integer literal (never converted to the safe type);
    * on DOUBLE backends, number literals with a fraction or more than 15 digits are DOUBLE (DuckDB
      would otherwise compare a BIGINT column with ``0.000…01`` as DECIMAL(38, 30), which overflows,
      and Spark cannot hold a 39-digit literal as a DECIMAL);
    * text columns that feed a concatenation are cut to ``MAX_CONCAT_CHARS`` characters
      (a chain of 1 MB strings must not reach a backend's string size limit);
    * every operand of arithmetic is computed in the backend's safe type (DOUBLE saturates to
      ±inf/NaN in DuckDB and Spark; NUMERIC holds the whole range the checker allows, see
      ``rowexpr.MAX_DIGITS``); where an expression computes anything, every float column is NUMERIC
      too on PostgreSQL, which would otherwise compare or merge a NUMERIC result with a float8 by
      converting it to float8 (raising beyond 1.8e308);
    * an analyst's CAST(x AS DOUBLE) is computed in the safe type.

    ``lookup`` finds a column's metadata (default: by name in ``table``)."""
    if lookup is None:
        assert table is not None
        columns = table.columns
        lookup = lambda col: columns.get(col.name)  # noqa: E731
    expr = expr.copy()
    _text_literals_for_text_columns(expr, lookup)
    expr = _clamp_temporal_columns(expr, lookup)
    _integer_round_places(expr)
    if target.safe_numeric.upper() == "DOUBLE":
        _fractional_literals_as_double(expr)
    expr = _cap_concatenated_text(expr, lookup)
    expr = _saturating_numbers(expr, lookup, target)
    _parenthesize_tested_conditions(expr)
    if target.dialect == "spark":
        _spark_weekdays(expr)
    if target.safe_numeric.upper() != "DOUBLE":
        # PostgreSQL raises on DOUBLE PRECISION overflow and underflow (DuckDB and Spark give inf/0): an
        # analyst's CAST(x AS DOUBLE) is computed in the safe type there, or
        # WHERE pid = 17 AND CAST(income AS DOUBLE) * 1e300 * 1e8 > 0 would fail iff person 17's income > 1.8
        for cast in list(expr.find_all(exp.Cast)):
            if cast.to.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
                cast.set("to", exp.DataType.build(target.safe_numeric))
    return expr


ColumnLookup = Callable[[exp.Column], ColumnMeta | None]
#: the range every backend can convert and truncate: years 1..9999
TEMPORAL_RANGE = {"date": ("0001-01-01", "9999-12-31"),
                  # a day of slack: drivers (pyspark) convert timestamps to the local time zone, which
                  # must not carry 0001-01-01 00:00 into year 0
                  "timestamp": ("0001-01-02 00:00:00", "9999-12-30 23:59:59.999999")}
#: characters of a text column kept where it is concatenated (a backend caps one value at 1 GB)
MAX_CONCAT_CHARS = 65_536
#: nodes after which a float column is converted to NUMERIC everywhere in the expression (PostgreSQL)
COMPUTING_NODES = (*ARITH_NODES, exp.Case, exp.If, exp.Coalesce, exp.Cast, exp.TryCast, exp.Extract, exp.Length)


def _column_type(node: exp.Expression, lookup: ColumnLookup) -> str | None:
    if isinstance(node, exp.Column) and (meta := lookup(node)) is not None:
        return meta.type
    return None


def _text_literals_for_text_columns(expr: exp.Expression, lookup: ColumnLookup) -> None:
    """``text_col = 5`` compares as text: the number literal becomes '5' (in place)."""
    for node in list(expr.find_all(*COMPARE_NODES, exp.In)):
        operands = [node.this] + (node.expressions if isinstance(node, exp.In) else [node.expression])
        if any(_column_type(o, lookup) == "text" for o in operands):
            for o in operands:
                text = _number_text(o)
                if text is not None:
                    o.replace(exp.Literal.string(text))


def _replace_columns(expr: exp.Expression, pick: Callable[[exp.Column], exp.Expression | None]) -> exp.Expression:
    """Replace each column leaf for which ``pick`` returns a new expression (the root too)."""
    for col in list(expr.find_all(exp.Column)):
        new = pick(col)
        if new is None:
            continue
        if col is expr:
            return new
        col.replace(new)
    return expr


def _under(node: exp.Expression, kinds: tuple[type, ...]) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, kinds):
            return True
        parent = parent.parent
    return False


def _integer_round_places(expr: exp.Expression) -> None:
    """ROUND(x, -1): the places become one integer literal (checked whole and small by the checker)."""
    for node in list(expr.find_all(exp.Round, exp.Floor, exp.Ceil)):
        places = node.args.get("decimals")
        value = _number_text(places) if places is not None else None
        if value is not None:
            node.set("decimals", exp.Literal.number(int(float(value))))


def _parenthesize_tested_conditions(expr: exp.Expression) -> None:
    """``(x BETWEEN a AND b) IS FALSE``: sqlglot prints the operand of IS bare, which Spark cannot parse."""
    for node in list(expr.find_all(exp.Is)):
        if not isinstance(node.this, (exp.Column, exp.Literal, exp.Paren, exp.Cast, exp.Func)):
            node.set("this", exp.Paren(this=node.this))


#: Spark spells the ISO weekday DOW_ISO and counts DOW from 1 (Sunday); PostgreSQL and DuckDB from 0
_SPARK_WEEKDAY = {"isodow": ("DOW_ISO", 0), "dow": ("DOW", 1)}


def _spark_weekdays(expr: exp.Expression) -> None:
    for node in list(expr.find_all(exp.Extract)):
        part = node.this.name.lower() if isinstance(node.this, exp.Expression) else str(node.this).lower()
        if part in _SPARK_WEEKDAY:
            name, offset = _SPARK_WEEKDAY[part]
            node.set("this", exp.var(name))
            if offset:
                node.replace(exp.Paren(this=exp.Sub(this=node.copy(), expression=exp.Literal.number(offset))))


def _in_round_places(node: exp.Expression) -> bool:
    """Whether ``node`` is (inside) the places argument of ROUND/FLOOR/CEIL: an integer there."""
    while node.parent is not None:
        if node.arg_key == "decimals":
            return True
        node = node.parent
    return False


#: digits a non-integer (or beyond-int64) number literal may keep as written on a DOUBLE backend;
#: longer ones are written in exponent form (Spark reads ``99999999999999999999999999999999999999.5`` as a
#: DECIMAL(39, 1) and fails; DuckDB would read a 40-digit integer as a DECIMAL too)
MAX_LITERAL_DIGITS = 15


def _fractional_literals_as_double(expr: exp.Expression) -> None:
    for lit in list(expr.find_all(exp.Literal)):
        if lit.is_string or _in_round_places(lit):
            continue
        if lit.is_int and abs(int(lit.this)) < 2**63:
            continue  # an int64 literal stays exact
        whole, _, fraction = lit.this.lower().split("e")[0].partition(".")
        digits = len(whole.lstrip("0")) + len(fraction)  # what a DECIMAL literal would need
        text = lit.this if digits <= MAX_LITERAL_DIGITS else f"{float(lit.this):.17e}"
        lit.replace(exp.cast(exp.Literal.number(text), "DOUBLE"))


def _clamp_temporal_columns(expr: exp.Expression, lookup: ColumnLookup) -> exp.Expression:
    def pick(col: exp.Column) -> exp.Expression | None:
        kind = _column_type(col, lookup)
        if kind not in TEMPORAL_RANGE:
            return None
        lo, hi = (exp.cast(exp.Literal.string(v), kind.upper()) for v in TEMPORAL_RANGE[kind])
        return clamp_between(col, lo, hi)

    return _replace_columns(expr, pick)


def _cap_concatenated_text(expr: exp.Expression, lookup: ColumnLookup) -> exp.Expression:
    def pick(col: exp.Column) -> exp.Expression | None:
        if _column_type(col, lookup) != "text" or not _under(col, (exp.DPipe,)):
            return None
        return exp.Left(this=col.copy(), expression=exp.Literal.number(MAX_CONCAT_CHARS))

    return _replace_columns(expr, pick)


def _saturating_numbers(expr: exp.Expression, lookup: ColumnLookup, target: SqlTarget) -> exp.Expression:
    """Every arithmetic operand, and (where the expression computes anything) every numeric
    column, in the backend's safe type."""
    safe = target.safe_numeric

    def is_safe_cast(node: exp.Expression) -> bool:
        return isinstance(node, exp.Cast) and node.to.sql().upper() == exp.DataType.build(safe).sql().upper()

    def to_safe(node: exp.Expression) -> None:
        # an arithmetic node's own result is already in the safe type (its operands are)
        if not is_safe_cast(node) and not isinstance(node, (exp.Null, *ARITH_NODES)):
            node.replace(exp.cast(node.copy(), safe))

    if safe.upper() != "DOUBLE" and expr.find(*COMPUTING_NODES) is not None:
        expr = _replace_columns(expr, lambda col: exp.cast(col.copy(), safe) if _column_type(col, lookup) == "float"
                                else None)
    for node in reversed(list(expr.find_all(*ARITH_NODES, bfs=False))):  # operands before the nodes using them
        if _in_round_places(node):
            continue
        for key in ("this", "expression", "expressions"):
            value = node.args.get(key)
            for operand in value if isinstance(value, list) else [value]:
                if isinstance(operand, exp.Expression):
                    to_safe(operand.unnest() if isinstance(operand, exp.Paren) else operand)
    return expr


def number_literal(v: float) -> exp.Expression:
    """A SQL number; ±inf and NaN (a key domain can hold them) as a DOUBLE cast of their text; Python
    ints exactly (a NUMERIC key domain from PostgreSQL can hold integers beyond any float)."""
    if isinstance(v, int):
        return exp.Literal.number(v)
    if not math.isfinite(v):
        return exp.cast(exp.Literal.string(repr(float(v))), "DOUBLE")
    if float(v).is_integer() and abs(v) < 2**62:
        return exp.Literal.number(int(v))
    return exp.Literal.number(repr(float(v)))


def clamp(e: exp.Expression, lo: float, hi: float) -> exp.Expression:
    """CASE clamp: keeps NULL as NULL (LEAST/GREATEST would turn it into a bound), maps NaN and ±inf
    to a bound."""
    return clamp_between(e, number_literal(lo), number_literal(hi))


def clamp_between(e: exp.Expression, lo: exp.Expression, hi: exp.Expression) -> exp.Expression:
    """``e`` clamped into [lo, hi] with NULL kept as NULL (``e`` is repeated: pass a leaf or a small tree)."""
    return exp.Case(ifs=[exp.If(this=exp.LT(this=e.copy(), expression=lo.copy()), true=lo.copy()),
                         exp.If(this=exp.GT(this=e.copy(), expression=hi.copy()), true=hi.copy())],
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
