"""Allow-list checking of row-level expressions (WHERE, GROUP BY keys, aggregate arguments).

A row-level expression is evaluated by the backend on every row, so it must be
safe in two ways:

* **no data-dependent errors**: an error that fires only for some rows would
  reveal them (division by a column, CAST of text to a number, integer
  overflow). Division and modulo are allowed only by non-zero literals, casts
  only where they cannot fail, and numeric columns are evaluated in a type that
  cannot overflow (see ``privsql.sql.prepare``);
* **bounded**: when an expression feeds SUM/AVG its clamping interval is
  derived here by interval arithmetic from the declared column bounds. The
  rewrite clamps the *final* expression to that interval, so the sensitivity
  holds whatever the data holds.

Anything not listed here is refused: this is an allow-list, not a deny-list.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from privsql.config import ColumnMeta
from privsql.errors import DatatypeMismatch, PrivacyRefused, UnsupportedQuery

# value kinds of row expressions
NUM, TEXT, BOOL, DATE, TIMESTAMP, NULL = "num", "text", "bool", "date", "timestamp", "null"
_CONFIG_KIND = {"int": NUM, "float": NUM, "text": TEXT, "bool": BOOL, "date": DATE, "timestamp": TIMESTAMP}


@dataclass(frozen=True)
class RowInfo:
    """What a row expression is: its kind, whether it is integral, its interval."""

    kind: str
    integral: bool = False
    lower: float | None = None  # derived clamping interval (None: unbounded)
    upper: float | None = None
    has_column: bool = False
    #: log10 of the largest magnitude the value can take on *any* stored data (type ranges, not
    #: declared bounds): the totality check refuses expressions whose numbers could leave the range
    #: every backend computes in without raising (see MAX_DIGITS)
    digits: float = 0.0

    @property
    def bounded(self) -> bool:
        return self.lower is not None and self.upper is not None


PUBLIC_AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
ColumnResolver = Callable[[exp.Column], ColumnMeta]


#: magnitude (log10) of each numeric config type's whole range: int64, and the largest finite double
#: (±inf and NaN are handled natively by every backend's safe type)
_TYPE_DIGITS = {"int": math.log10(2.0**63), "float": math.log10(1.7976931348623157e308)}
#: the largest magnitude (log10) a numeric node may reach on any data. PostgreSQL's NUMERIC raises
#: beyond 10^131072 and DuckDB/Spark DOUBLE saturate to ±inf past 10^308; 4,000 digits keeps every
#: intermediate far inside NUMERIC's range on every row (products of up to 12 unbounded floats)
MAX_DIGITS = 4000.0
#: EXTRACT parts and the values they can take (dates are clamped to years 1..9999 before any use)
EXTRACT_RANGES = {"year": (1, 9999), "month": (1, 12), "day": (1, 31), "dow": (0, 6), "quarter": (1, 4),
                  "hour": (0, 23), "minute": (0, 59), "doy": (1, 366), "week": (1, 53), "isodow": (1, 7)}
_TIME_OF_DAY = ("hour", "minute")


def _digits(v: float) -> float:
    return math.log10(abs(v)) if v else 0.0


def column_info(col: ColumnMeta) -> RowInfo:
    kind = _CONFIG_KIND[col.type]
    return RowInfo(kind, integral=col.type == "int", lower=col.lower, upper=col.upper, has_column=True,
                   digits=_TYPE_DIGITS.get(col.type, 0.0))


def snippet(node: exp.Expression, limit: int = 60) -> str:
    text = node.sql(dialect="postgres")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_temporal(text: str, kind: str, node: exp.Expression) -> None:
    """Refuse a date/timestamp literal that does not parse (checked once, from the query text)."""
    try:
        if kind == DATE:
            dt.date.fromisoformat(text.strip())
        else:
            dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DatatypeMismatch(f"invalid {kind} literal '{text}' in {snippet(node)} (use ISO format, "
                               "e.g. '2025-03-01')") from None


def literal_number(node: exp.Expression) -> float | None:
    """The value of a numeric literal (allowing a leading minus), else None."""
    if isinstance(node, exp.Paren):
        return literal_number(node.this)
    if isinstance(node, exp.Neg):
        v = literal_number(node.this)
        return -v if v is not None else None
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            v = float(node.this)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def _interval(op: str, a: RowInfo, b: RowInfo) -> tuple[float | None, float | None]:
    if not (a.bounded and b.bounded):
        return None, None
    assert a.lower is not None and a.upper is not None and b.lower is not None and b.upper is not None
    if op == "+":
        return a.lower + b.lower, a.upper + b.upper
    if op == "-":
        return a.lower - b.upper, a.upper - b.lower
    products = [a.lower * b.lower, a.lower * b.upper, a.upper * b.lower, a.upper * b.upper]
    return min(products), max(products)


def _union(infos: list[RowInfo]) -> tuple[float | None, float | None]:
    if any(not i.bounded for i in infos):
        return None, None
    return min(i.lower for i in infos), max(i.upper for i in infos)  # type: ignore[type-var]


_ARITH = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*"}
_COMPARE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_SAFE_CAST_TARGETS = {
    NUM: {"DOUBLE", "TEXT", "VARCHAR"},
    TEXT: {"TEXT", "VARCHAR"},
    DATE: {"TEXT", "VARCHAR", "DATE", "TIMESTAMP"},
    TIMESTAMP: {"TEXT", "VARCHAR", "TIMESTAMP", "DATE"},
    BOOL: {"TEXT", "VARCHAR", "BOOLEAN"},
}
_CAST_KIND = {"DOUBLE": NUM, "TEXT": TEXT, "VARCHAR": TEXT, "DATE": DATE, "TIMESTAMP": TIMESTAMP, "BOOLEAN": BOOL}
#: derived clamping intervals beyond this magnitude are treated as unbounded (as config bounds are)
MAX_BOUND = 1e15
#: ROUND(x, n): |n| at most this (PostgreSQL computes n digits of NUMERIC per row)
MAX_ROUND_PLACES = 38


class RowExprChecker:
    """Checks one row-level expression against the allow-list; returns its RowInfo."""

    def __init__(self, resolve: ColumnResolver, *, context: str, exact_aggregates: bool = False) -> None:
        self.resolve = resolve
        self.context = context  # e.g. "WHERE", "SUM(...)": used in messages
        #: public tables only: plain aggregates are computed exactly by the backend
        self.exact_aggregates = exact_aggregates

    def check(self, node: exp.Expression) -> RowInfo:
        handler = getattr(self, f"_{type(node).__name__.lower()}", None)
        if handler is None:
            if isinstance(node, _COMPARE):
                info = self._compare(node)
            elif type(node) in _ARITH:
                info = self._arith(node, _ARITH[type(node)])
            else:
                info = self._refuse(node)
        else:
            info = handler(node)
        if not info.has_column and node.find(exp.Column) is not None:  # e.g. CASE WHEN age > 30 THEN 1 END
            info = dataclasses.replace(info, has_column=True)
        if info.digits > MAX_DIGITS:
            raise PrivacyRefused(f"{snippet(node)} could exceed the numeric range on some rows (up to "
                                 f"10^{info.digits:.0f}); privsql refuses expressions whose result could overflow "
                                 "on any stored value")
        if info.bounded and not (abs(info.lower) <= MAX_BOUND and abs(info.upper) <= MAX_BOUND):  # type: ignore[arg-type]
            return dataclasses.replace(info, lower=None, upper=None)  # NaN and ±inf end here too
        return info

    # --- refusals -----------------------------------------------------------------
    def _refuse(self, node: exp.Expression) -> RowInfo:
        if self.exact_aggregates and isinstance(node, PUBLIC_AGGREGATES) and not node.find(exp.Window):
            if node.expressions or (isinstance(node.this, exp.Distinct) and len(node.this.expressions) != 1):
                raise PrivacyRefused(f"{snippet(node)}: aggregates take one argument here")
            arg = node.this
            if isinstance(arg, exp.Distinct):
                arg = arg.expressions[0] if len(arg.expressions) == 1 else None
            inner = RowInfo(NUM) if arg is None or isinstance(arg, exp.Star) else self.check(arg)
            kind = inner.kind if isinstance(node, (exp.Min, exp.Max)) else NUM
            return RowInfo(kind, has_column=True)
        if isinstance(node, exp.Star):
            raise PrivacyRefused(f"'*' is not allowed in {self.context}")
        if isinstance(node, (exp.Select, exp.Subquery, exp.Exists)):
            raise UnsupportedQuery(f"sub-queries are not supported in {self.context}: {snippet(node)}")
        if isinstance(node, exp.Window):
            raise PrivacyRefused(f"window functions are not allowed: {snippet(node)}")
        if isinstance(node, exp.AggFunc):
            raise PrivacyRefused(f"aggregate {snippet(node)} is not allowed inside {self.context}")
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            raise UnsupportedQuery(f"parameter {node.sql()} has no value")
        if isinstance(node, exp.Func):
            name = node.sql_name() if not isinstance(node, exp.Anonymous) else node.name
            raise PrivacyRefused(f"function {name.lower()}() is not allowed in {self.context}; "
                                 "privsql allows only functions that cannot fail or leak on any row")
        raise PrivacyRefused(f"{snippet(node)} is not allowed in {self.context}")

    # --- leaves -------------------------------------------------------------------
    def _column(self, node: exp.Column) -> RowInfo:
        if isinstance(node.this, exp.Star):
            raise PrivacyRefused(f"'*' is not allowed in {self.context}")
        return column_info(self.resolve(node))

    def _literal(self, node: exp.Literal) -> RowInfo:
        if node.is_string:
            return RowInfo(TEXT)
        v = literal_number(node)
        if v is None:
            raise UnsupportedQuery(f"numeric literal {node.this} is out of range")
        return RowInfo(NUM, integral=float(v).is_integer() and "." not in node.this, lower=v, upper=v,
                       digits=_digits(v))

    def _null(self, node: exp.Null) -> RowInfo:
        return RowInfo(NULL)

    def _boolean(self, node: exp.Boolean) -> RowInfo:
        return RowInfo(BOOL)

    def _paren(self, node: exp.Paren) -> RowInfo:
        return self.check(node.this)

    # --- boolean logic --------------------------------------------------------------
    def _bool_operands(self, node: exp.Expression, *children: exp.Expression) -> RowInfo:
        for child in children:
            info = self.check(child)
            if info.kind not in (BOOL, NULL):
                raise DatatypeMismatch(f"{snippet(child)} is not a boolean condition in {self.context}")
        return RowInfo(BOOL)

    def _and(self, node: exp.And) -> RowInfo:
        return self._bool_operands(node, node.left, node.right)

    _or = _and

    def _not(self, node: exp.Not) -> RowInfo:
        return self._bool_operands(node, node.this)

    def _comparable(self, a: RowInfo, b: RowInfo, node: exp.Expression, left: exp.Expression,
                    right: exp.Expression) -> None:
        """Refuse comparisons that would make the backend convert values row by row (a conversion
        that fails on some rows reveals them). Allowed mixes: dates with timestamps; a date with a
        *literal* that parses as a date (checked here, once); a text column with a number literal
        (compared as text)."""
        kinds = {a.kind, b.kind} - {NULL}
        if len(kinds) <= 1 or kinds <= {DATE, TIMESTAMP}:
            return
        (text_info, text_node), (other_info, other_node) = sorted(
            [(a, left), (b, right)], key=lambda pair: pair[0].kind != TEXT)
        if text_info.kind == TEXT and other_info.kind in (DATE, TIMESTAMP):
            if isinstance(text_node, exp.Literal) and text_node.is_string:
                parse_temporal(text_node.this, other_info.kind, node)
                return
        if text_info.kind == TEXT and other_info.kind == NUM and isinstance(text_node, exp.Column) \
                and literal_number(other_node) is not None:
            return  # compared as text (prepare_row_expr turns the number into a string literal)
        raise DatatypeMismatch(f"cannot compare {a.kind} with {b.kind} in {snippet(node)}: a conversion "
                               "could fail on some rows; compare values of the same type")

    def _compare(self, node: exp.Expression) -> RowInfo:
        self._comparable(self.check(node.left), self.check(node.right), node, node.left, node.right)
        return RowInfo(BOOL)

    def _in(self, node: exp.In) -> RowInfo:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise UnsupportedQuery(f"IN with a sub-query is not supported: {snippet(node)}")
        left = self.check(node.this)
        for item in node.expressions:
            self._comparable(left, self.check(item), node, node.this, item)
        return RowInfo(BOOL)

    def _between(self, node: exp.Between) -> RowInfo:
        value = self.check(node.this)
        for bound in (node.args["low"], node.args["high"]):
            self._comparable(value, self.check(bound), node, node.this, bound)
        return RowInfo(BOOL)

    def _is(self, node: exp.Is) -> RowInfo:
        info = self.check(node.this)
        if not isinstance(node.expression, (exp.Null, exp.Boolean)):
            raise PrivacyRefused(f"IS must be followed by NULL, TRUE or FALSE: {snippet(node)}")
        if isinstance(node.expression, exp.Boolean) and info.kind not in (BOOL, NULL):
            raise DatatypeMismatch(f"IS TRUE / IS FALSE needs a boolean, not {info.kind}: {snippet(node)}")
        return RowInfo(BOOL)

    def _like(self, node: exp.Expression) -> RowInfo:
        for child in (node.this, node.expression):
            if self.check(child).kind not in (TEXT, NULL):
                raise DatatypeMismatch(f"LIKE needs text operands: {snippet(node)}")
        if not isinstance(node.expression, exp.Literal):
            raise PrivacyRefused(f"LIKE patterns must be literals: {snippet(node)}")
        if node.args.get("escape") is not None:
            raise UnsupportedQuery("LIKE ... ESCAPE is not supported")
        return RowInfo(BOOL)

    _ilike = _like

    # --- arithmetic -------------------------------------------------------------------
    def _numeric(self, node: exp.Expression, child: exp.Expression) -> RowInfo:
        info = self.check(child)
        if info.kind not in (NUM, NULL):
            raise DatatypeMismatch(f"{snippet(child)} is {info.kind}, not a number, in {snippet(node)}")
        return info

    def _arith(self, node: exp.Expression, op: str) -> RowInfo:
        a = self._numeric(node, node.left)
        b = self._numeric(node, node.right)
        lo, hi = _interval(op, a, b)
        digits = a.digits + b.digits if op == "*" else max(a.digits, b.digits) + math.log10(2)
        return RowInfo(NUM, a.integral and b.integral, lo, hi, a.has_column or b.has_column, digits)

    def _literal_divisor(self, node: exp.Expression) -> float:
        d = literal_number(node.right)
        if d is None:
            raise PrivacyRefused(f"division is allowed only by a non-zero number literal, not {snippet(node.right)}: "
                                 "a zero divisor on some row would raise an error that reveals that row")
        if d == 0:
            raise PrivacyRefused(f"division by zero in {snippet(node)}")
        return d

    def _div(self, node: exp.Div) -> RowInfo:
        d = self._literal_divisor(node)
        a = self._numeric(node, node.left)
        digits = max(0.0, a.digits - _digits(d))
        if not a.bounded:
            return RowInfo(NUM, has_column=a.has_column, digits=digits)
        ends = [a.lower / d, a.upper / d]  # type: ignore[operator]
        return RowInfo(NUM, False, min(ends), max(ends), a.has_column, digits)

    def _mod(self, node: exp.Mod) -> RowInfo:
        d = abs(self._literal_divisor(node))
        a = self._numeric(node, node.left)
        return RowInfo(NUM, a.integral, -d, d, a.has_column, _digits(d))

    def _neg(self, node: exp.Neg) -> RowInfo:
        a = self._numeric(node, node.this)
        if not a.bounded:
            return RowInfo(NUM, a.integral, has_column=a.has_column, digits=a.digits)
        return RowInfo(NUM, a.integral, -a.upper, -a.lower, a.has_column, a.digits)  # type: ignore[operator]

    def _abs(self, node: exp.Abs) -> RowInfo:
        a = self._numeric(node, node.this)
        if not a.bounded:
            return RowInfo(NUM, a.integral, has_column=a.has_column, digits=a.digits)
        assert a.lower is not None and a.upper is not None
        lo = 0.0 if a.lower <= 0 <= a.upper else min(abs(a.lower), abs(a.upper))
        return RowInfo(NUM, a.integral, lo, max(abs(a.lower), abs(a.upper)), a.has_column, a.digits)

    def _rounding(self, node: exp.Expression, integral: bool) -> RowInfo:
        a = self._numeric(node, node.this)
        for arg in ("decimals", "expression"):
            extra = node.args.get(arg)
            if extra is None:
                continue
            places = literal_number(extra)
            if places is None or not float(places).is_integer() or abs(places) > MAX_ROUND_PLACES:
                raise PrivacyRefused(f"the second argument of {snippet(node)} must be a whole number literal "
                                     f"between -{MAX_ROUND_PLACES} and {MAX_ROUND_PLACES}")
        digits = a.digits + math.log10(2)
        if not a.bounded:
            return RowInfo(NUM, integral, has_column=a.has_column, digits=digits)
        return RowInfo(NUM, integral or a.integral, math.floor(a.lower), math.ceil(a.upper), a.has_column,  # type: ignore[arg-type]
                       digits)

    def _round(self, node: exp.Round) -> RowInfo:
        return self._rounding(node, node.args.get("decimals") is None)

    def _floor(self, node: exp.Floor) -> RowInfo:
        return self._rounding(node, True)

    def _ceil(self, node: exp.Ceil) -> RowInfo:
        return self._rounding(node, True)

    def _least(self, node: exp.Expression) -> RowInfo:
        infos = [self._numeric(node, c) for c in [node.this, *node.expressions]]
        bounded = [i for i in infos if i.bounded]
        lo = hi = None
        if len(bounded) == len(infos):
            lo, hi = _union(infos)
            if isinstance(node, exp.Least):
                hi = min(i.upper for i in infos)  # type: ignore[type-var]
            else:
                lo = max(i.lower for i in infos)  # type: ignore[type-var]
        return RowInfo(NUM, all(i.integral for i in infos), lo, hi, any(i.has_column for i in infos),
                       max(i.digits for i in infos))

    _greatest = _least

    # --- conditionals -------------------------------------------------------------------
    def _branches(self, node: exp.Expression, values: list[exp.Expression]) -> RowInfo:
        infos = [self.check(v) for v in values]
        kinds = {i.kind for i in infos} - {NULL}
        if len(kinds) > 1:
            raise DatatypeMismatch(f"the branches of {snippet(node)} mix {', '.join(sorted(kinds))}")
        kind = kinds.pop() if kinds else NULL
        non_null = [i for i in infos if i.kind != NULL]
        lo, hi = _union(non_null) if kind == NUM and non_null else (None, None)
        return RowInfo(kind, all(i.integral for i in non_null), lo, hi, any(i.has_column for i in infos),
                       max((i.digits for i in infos), default=0.0))

    def _case(self, node: exp.Case) -> RowInfo:
        if node.this is not None:  # CASE x WHEN v THEN ...
            subject = self.check(node.this)
            for branch in node.args.get("ifs") or []:
                self._comparable(subject, self.check(branch.this), node, node.this, branch.this)
        else:
            for branch in node.args.get("ifs") or []:
                self._bool_operands(node, branch.this)
        values = [b.args["true"] for b in node.args.get("ifs") or []]
        default = node.args.get("default")
        values.append(default if default is not None else exp.Null())
        return self._branches(node, values)

    def _if(self, node: exp.If) -> RowInfo:
        self._bool_operands(node, node.this)
        false = node.args.get("false")
        return self._branches(node, [node.args["true"], false if false is not None else exp.Null()])

    def _coalesce(self, node: exp.Coalesce) -> RowInfo:
        return self._branches(node, [node.this, *node.expressions])

    # --- text ------------------------------------------------------------------------
    def _text_fn(self, node: exp.Expression) -> RowInfo:
        if self.check(node.this).kind not in (TEXT, NULL):
            raise DatatypeMismatch(f"{snippet(node)} needs a text argument")
        return RowInfo(TEXT, has_column=True)

    _lower = _upper = _text_fn

    def _trim(self, node: exp.Trim) -> RowInfo:
        if node.expression is not None and not isinstance(node.expression, exp.Literal):
            raise PrivacyRefused(f"TRIM characters must be a literal: {snippet(node)}")
        return self._text_fn(node)

    def _length(self, node: exp.Length) -> RowInfo:
        if self.check(node.this).kind not in (TEXT, NULL):
            raise DatatypeMismatch(f"{snippet(node)} needs a text argument")
        return RowInfo(NUM, integral=True, lower=0, upper=None, has_column=True, digits=10.0)

    def _dpipe(self, node: exp.DPipe) -> RowInfo:
        for child in (node.left, node.right):
            self.check(child)
        return RowInfo(TEXT, has_column=True)

    # --- dates ------------------------------------------------------------------------
    def _extract(self, node: exp.Extract) -> RowInfo:
        part = node.this.name.lower() if isinstance(node.this, exp.Expression) else str(node.this).lower()
        if part not in EXTRACT_RANGES:
            raise UnsupportedQuery(f"EXTRACT({part.upper()} ...) is not supported")
        kind = self.check(node.expression).kind
        if kind not in (DATE, TIMESTAMP, NULL):
            raise DatatypeMismatch(f"EXTRACT needs a date or timestamp: {snippet(node)}")
        if kind == DATE and part in _TIME_OF_DAY:  # PostgreSQL raises on every row that reaches it
            raise DatatypeMismatch(f"a date has no {part}: {snippet(node)} (cast it to TIMESTAMP first)")
        lo, hi = EXTRACT_RANGES[part]
        return RowInfo(NUM, True, lo, hi, True, _digits(hi))

    def _timestamptrunc(self, node: exp.Expression) -> RowInfo:
        unit = node.args.get("unit")
        name = (unit.name if isinstance(unit, exp.Expression) else str(unit or "")).lower()
        if name not in ("year", "quarter", "month", "week", "day", "hour", "minute"):
            raise UnsupportedQuery(f"DATE_TRUNC to {name or '?'} is not supported")
        kind = self.check(node.this).kind
        if kind not in (DATE, TIMESTAMP, NULL):
            raise DatatypeMismatch(f"DATE_TRUNC needs a date or timestamp: {snippet(node)}")
        return RowInfo(kind, has_column=True)

    _datetrunc = _timestamptrunc

    def _date_part(self, node: exp.Expression, part: str) -> RowInfo:
        return self._extract(exp.Extract(this=exp.var(part), expression=node.this))

    def _year(self, node: exp.Year) -> RowInfo:
        return self._date_part(node, "year")

    def _month(self, node: exp.Month) -> RowInfo:
        return self._date_part(node, "month")

    def _day(self, node: exp.Day) -> RowInfo:
        return self._date_part(node, "day")

    # --- casts --------------------------------------------------------------------------
    def _cast(self, node: exp.Cast) -> RowInfo:
        src = self.check(node.this)
        to = node.to
        target = to.this.name if isinstance(to.this, exp.DataType.Type) else str(to.this).upper()
        target = {"DOUBLE PRECISION": "DOUBLE"}.get(target, target)
        if to.expressions:
            raise PrivacyRefused(f"CAST({snippet(node.this)} AS {to.sql(dialect='postgres')}) is not allowed: a type "
                                 "with a size or precision could overflow on some rows")
        if src.kind == NULL:
            return RowInfo(_CAST_KIND.get(target, NULL))
        if not src.has_column and isinstance(node.this, exp.Literal) and node.this.is_string \
                and target in ("DATE", "TIMESTAMP"):
            parse_temporal(node.this.this, _CAST_KIND[target], node)  # checked here, once
            return RowInfo(_CAST_KIND[target])
        if target not in _SAFE_CAST_TARGETS.get(src.kind, set()):
            raise PrivacyRefused(f"CAST({snippet(node.this)} AS {target}) is not allowed: it could fail on some "
                                 "rows and so reveal them; allowed: numbers to DOUBLE or TEXT, anything to TEXT")
        kind = _CAST_KIND[target]
        if kind == NUM:
            return RowInfo(NUM, False, src.lower, src.upper, src.has_column, src.digits)
        return RowInfo(kind, has_column=src.has_column)

    _trycast = _cast
