"""A seeded grammar of queries privsql allows (and some it refuses), over the schema of ``adversarial.py``.

``QueryGenerator(seed).query()`` returns one SQL string. The same seed always gives the same
sequence. Coverage (the allow-list of ``privsql.sql.rowexpr.RowExprChecker`` and the shapes of
``privsql.sql.validate`` / ``joins`` / ``subquery``):

* row expressions, typed (number, text, bool, date, timestamp), nested up to ``max_depth``
  (6–9): ``+ - *`` and unary minus, ``/`` and ``%`` by literals (now and then by a column or
  zero: refused), comparisons (``= <> < <= > >= IS [NOT] DISTINCT FROM``), ``AND/OR/NOT``,
  ``IN``, ``[NOT] BETWEEN``, ``[NOT] LIKE/ILIKE`` with literal patterns, ``IS [NOT] NULL``,
  ``IS [NOT] TRUE/FALSE``, searched and simple ``CASE``, ``COALESCE``, ``ABS``, ``ROUND(x[, k])``,
  ``FLOOR``, ``CEIL``, ``LEAST``, ``GREATEST``, ``LOWER``, ``UPPER``, ``LENGTH``, ``TRIM``, ``||``,
  ``EXTRACT(part FROM ...)`` for every allowed part, ``YEAR/MONTH/DAY``, ``DATE_TRUNC``,
  ``CAST`` to DOUBLE / TEXT / VARCHAR / DATE / TIMESTAMP / BOOLEAN, date and timestamp literals;
* extreme literals: int64 min/max, ±1e308, 1e-308, 0, -0.0, 30-digit and tiny decimals,
  2^53+1, dates 0001-01-01 / 9999-12-31, timestamps at the ends of the range;
* query shapes: aggregates ``COUNT(*)``, ``COUNT(x)``, ``COUNT(DISTINCT pid)``,
  ``COUNT(DISTINCT x)``, ``SUM``, ``AVG``, ``VAR_SAMP/VARIANCE/VAR_POP``,
  ``STDDEV/STDDEV_SAMP/STDDEV_POP``, ``MEDIAN``, ``PERCENTILE_CONT/DISC(p) WITHIN GROUP``,
  ``quantile_cont``, ``MIN``, ``MAX``, ``COVAR_POP/COVAR_SAMP/CORR``, each optionally with
  ``FILTER (WHERE ...)``; ``WHERE``; ``GROUP BY`` expressions (public-domain and thresholded
  keys, by expression, position or alias); ``HAVING``/``ORDER BY``/``LIMIT``; joins with the
  one-row-per-person table on the privacy unit (inner, LEFT, ``USING``) and with the public
  table on arbitrary conditions; per-person sub-queries in FROM with WHERE, COUNT/SUM/AVG/MIN/MAX
  and an outer WHERE/GROUP BY.

Left out: post-processing arithmetic on aggregates beyond ``ROUND``/comparisons (its errors
depend on noisy values only), query parameters, public-table-only queries (no personal data),
``NULL`` privacy units.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

NUM, TEXT, BOOL, DATE, TS = "num", "text", "bool", "date", "ts"

EXTREME_NUMBERS = ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "1e308", "-1e308",
                   "1.7976931348623157e308", "1e-308", "5e-324", "0", "-0.0", "0.0",
                   "123456789012345678901234567890", "0.000000000000000000000000000001",
                   "99999999999999999999999999999999999999.5", "9007199254740993", "2147483647", "-2147483648",
                   "4294967296", "1e15", "1e16", "1e300"]
ORDINARY_NUMBERS = ["1", "2", "3", "10", "-1", "0.5", "2.5", "100", "7", "1000", "-100", "0.001", "42"]
TEXT_LITERALS = ["''", "'a'", "'b'", "'c'", "'a   '", "'zzz'", "'%'", "'é€😀'", "'NaN'", "'9999-12-31'",
                 "'" + "x" * 300 + "'", "'s1'", "'w2'", "'A'"]
LIKE_PATTERNS = ["'%'", "'a%'", "'%a'", "'_'", "'%x%'", "''", "'s_'", "'%\\%'", "'a   '", "'%😀%'"]
DATE_LITERALS = ["0001-01-01", "9999-12-31", "1970-01-01", "2024-02-29", "2000-06-15", "1999-12-31"]
TS_LITERALS = ["0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", "1970-01-01 00:00:00", "2010-05-05 12:30:00",
               "2024-02-29 23:59:59"]
EXTRACT_PARTS = ["YEAR", "MONTH", "DAY", "DOW", "QUARTER", "HOUR", "MINUTE", "DOY", "WEEK", "ISODOW"]
TRUNC_UNITS = ["year", "quarter", "month", "week", "day", "hour", "minute"]
COMPARE_OPS = ["=", "<>", "<", "<=", ">", ">=", "IS DISTINCT FROM", "IS NOT DISTINCT FROM"]


@dataclass
class Scope:
    """The columns a row expression may read, by kind; ``bounded`` are numeric columns with bounds."""

    columns: dict[str, list[str]]
    bounded: list[str]
    unit: str | None = None
    numeric_ints: list[str] = field(default_factory=list)


def _q(alias: str | None, name: str) -> str:
    return f"{alias}.{name}" if alias else name


def adv_scope(alias: str | None = None) -> Scope:
    return Scope({NUM: [_q(alias, c) for c in ("i", "n", "f", "g")], TEXT: [_q(alias, c) for c in ("t", "s")],
                  BOOL: [_q(alias, "b")], DATE: [_q(alias, "d")], TS: [_q(alias, "ts")]},
                 bounded=[_q(alias, c) for c in ("i", "n", "f")], unit=_q(alias, "pid"),
                 numeric_ints=[_q(alias, c) for c in ("i", "n")])


def join_per_scope(a: str, p: str) -> Scope:
    s = adv_scope(a)
    s.columns[NUM] += [f"{p}.j", f"{p}.v"]
    s.columns[TEXT].append(f"{p}.w")
    s.columns[DATE].append(f"{p}.e")
    s.bounded += [f"{p}.j", f"{p}.v"]
    s.numeric_ints.append(f"{p}.j")
    return s


def join_pub_scope(a: str, q: str) -> Scope:
    s = adv_scope(a)
    s.columns[NUM].append(f"{q}.m")
    s.columns[TEXT] += [f"{q}.k", f"{q}.grp"]
    return s


def sub_scope() -> Scope:
    return Scope({NUM: ["c", "sm", "av", "lo", "hi"], TEXT: [], BOOL: [], DATE: [], TS: []},
                 bounded=["c", "sm", "av", "lo", "hi"], numeric_ints=["c"])


class QueryGenerator:
    """Random allowed queries. ``extreme`` is the share of extreme literals; ``max_depth`` the nesting cap."""

    def __init__(self, seed: int, *, max_depth: int = 8, extreme: float = 0.25) -> None:
        self.rng = random.Random(seed)
        self.max_depth = max_depth
        self.extreme = extreme
        self.budget = 0  # nodes left in the current expression
        self.deepest = 0  # deepest nesting reached by the last query

    # ------------------------------------------------------------------------------ helpers
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, items: list[str]) -> str:
        return self.rng.choice(items)

    def kind_of(self, scope: Scope, kinds: list[str]) -> str:
        """One of ``kinds`` when the scope has non-numeric columns, else NUM."""
        return self.pick(kinds) if scope.columns[TEXT] else NUM

    def _leaf_now(self, depth: int, target: int) -> bool:
        self.deepest = max(self.deepest, depth)
        if depth >= target or self.budget <= 0:
            return True
        self.budget -= 1
        return self.chance(0.12 + 0.5 * depth / max(target, 1) ** 1.5)

    # ------------------------------------------------------------------------------ literals
    def number(self) -> str:
        v = self.pick(EXTREME_NUMBERS) if self.chance(self.extreme) else self.pick(ORDINARY_NUMBERS)
        return v if not v.startswith("-") or self.chance(0.5) else f"({v})"

    def small_number(self) -> str:
        return self.pick(ORDINARY_NUMBERS)

    def divisor(self) -> str:
        r = self.rng.random()
        if r < 0.03:
            return "0"  # refused
        return self.pick(["2", "3", "10", "0.5", "-7", "1e-308", "1e308", "9223372036854775807", "1000", "0.001"]
                         if self.chance(self.extreme) else ["2", "3", "10", "4", "-5", "100", "0.5"])

    def date_literal(self) -> str:
        return f"DATE '{self.pick(DATE_LITERALS)}'"

    def ts_literal(self) -> str:
        return f"TIMESTAMP '{self.pick(TS_LITERALS)}'"

    # ------------------------------------------------------------------------------ expressions
    def expr(self, kind: str, scope: Scope, depth: int, target: int) -> str:
        build = {NUM: self.num, TEXT: self.text, BOOL: self.cond, DATE: self.date, TS: self.ts}[kind]
        return build(scope, depth, target)

    def num(self, scope: Scope, depth: int, target: int) -> str:
        if self._leaf_now(depth, target):
            return self.pick(scope.columns[NUM]) if scope.columns[NUM] and self.chance(0.65) else self.number()
        d = depth + 1
        options: list[Callable[[], str]] = [
            lambda: f"({self.num(scope, d, target)} {self.pick(['+', '-', '*'])} {self.num(scope, d, target)})",
            lambda: f"({self.num(scope, d, target)} {self.pick(['/', '%'])} {self.divisor()})",
            lambda: f"(-{self.num(scope, d, target)})",
            lambda: f"ABS({self.num(scope, d, target)})",
            lambda: self._rounding(scope, d, target),
            lambda: f"{self.pick(['LEAST', 'GREATEST'])}("
                    f"{', '.join(self.num(scope, d, target) for _ in range(self.rng.randint(2, 3)))})",
            lambda: self.case(NUM, scope, d, target),
            lambda: f"COALESCE({self.num(scope, d, target)}, {self.num(scope, d, target)})",
            lambda: f"LENGTH({self.text(scope, d, target)})",
            lambda: self._extract(scope, d, target),
            lambda: f"CAST({self.num(scope, d, target)} AS {self.pick(['DOUBLE', 'DOUBLE PRECISION'])})",
        ]
        if self.chance(0.02) and scope.columns[NUM]:
            options.append(lambda: f"({self.num(scope, d, target)} / {self.pick(scope.columns[NUM])})")  # refused
        return self.rng.choice(options)()

    def _rounding(self, scope: Scope, d: int, target: int) -> str:
        fn = self.pick(["ROUND", "FLOOR", "CEIL", "CEILING"])
        arg = self.num(scope, d, target)
        if fn == "ROUND" and self.chance(0.5):
            k = self.pick(["0", "1", "2", "-1", "-2", "10", "-20", "30", "400", "-400"])
            return f"ROUND({arg}, {k})"
        return f"{fn}({arg})"

    def _extract(self, scope: Scope, d: int, target: int) -> str:
        src = self.date(scope, d, target) if self.chance(0.5) else self.ts(scope, d, target)
        r = self.rng.random()
        if r < 0.2:
            return f"{self.pick(['YEAR', 'MONTH', 'DAY'])}({src})"
        return f"EXTRACT({self.pick(EXTRACT_PARTS)} FROM {src})"

    def text(self, scope: Scope, depth: int, target: int) -> str:
        if self._leaf_now(depth, target):
            return self.pick(scope.columns[TEXT]) if scope.columns[TEXT] and self.chance(0.6) else \
                self.pick(TEXT_LITERALS)
        d = depth + 1
        options: list[Callable[[], str]] = [
            lambda: f"{self.pick(['LOWER', 'UPPER', 'TRIM'])}({self.text(scope, d, target)})",
            lambda: f"({self.text(scope, d, target)} || "
                    f"{self.expr(self.pick([TEXT, TEXT, NUM, DATE]), scope, d, target)})",
            lambda: f"CAST({self.expr(self.pick([NUM, DATE, TS, BOOL, TEXT]), scope, d, target)} AS "
                    f"{self.pick(['TEXT', 'VARCHAR'])})",
            lambda: self.case(TEXT, scope, d, target),
            lambda: f"COALESCE({self.text(scope, d, target)}, {self.text(scope, d, target)})",
        ]
        return self.rng.choice(options)()

    def date(self, scope: Scope, depth: int, target: int) -> str:
        if self._leaf_now(depth, target):
            return self.pick(scope.columns[DATE]) if scope.columns[DATE] and self.chance(0.7) else self.date_literal()
        d = depth + 1
        options: list[Callable[[], str]] = [
            lambda: f"DATE_TRUNC('{self.pick(TRUNC_UNITS)}', {self.date(scope, d, target)})",
            lambda: f"CAST({self.ts(scope, d, target)} AS DATE)",
            lambda: f"CAST('{self.pick(DATE_LITERALS)}' AS DATE)",
            lambda: self.case(DATE, scope, d, target),
            lambda: f"COALESCE({self.date(scope, d, target)}, {self.date(scope, d, target)})",
        ]
        return self.rng.choice(options)()

    def ts(self, scope: Scope, depth: int, target: int) -> str:
        if self._leaf_now(depth, target):
            return self.pick(scope.columns[TS]) if scope.columns[TS] and self.chance(0.7) else self.ts_literal()
        d = depth + 1
        options: list[Callable[[], str]] = [
            lambda: f"DATE_TRUNC('{self.pick(TRUNC_UNITS)}', {self.ts(scope, d, target)})",
            lambda: f"CAST({self.date(scope, d, target)} AS TIMESTAMP)",
            lambda: self.case(TS, scope, d, target),
            lambda: f"COALESCE({self.ts(scope, d, target)}, {self.ts(scope, d, target)})",
        ]
        return self.rng.choice(options)()

    def case(self, kind: str, scope: Scope, d: int, target: int) -> str:
        n = self.rng.randint(1, 2)
        if self.chance(0.3):  # simple CASE x WHEN v THEN ...
            subject_kind = self.pick([NUM, TEXT]) if scope.columns[TEXT] else NUM
            subject = self.expr(subject_kind, scope, d, target)
            whens = " ".join(f"WHEN {self.number() if subject_kind == NUM else self.pick(TEXT_LITERALS)} "
                             f"THEN {self.expr(kind, scope, d, target)}" for _ in range(n))
            head = f"CASE {subject} {whens}"
        else:
            head = "CASE " + " ".join(f"WHEN {self.cond(scope, d, target)} THEN {self.expr(kind, scope, d, target)}"
                                      for _ in range(n))
        tail = f" ELSE {self.expr(kind, scope, d, target)}" if self.chance(0.7) else ""
        return f"{head}{tail} END"

    def cond(self, scope: Scope, depth: int, target: int) -> str:
        if self._leaf_now(depth, target):
            options = [lambda: f"{self.num(scope, target, target)} {self.pick(COMPARE_OPS[:6])} {self.number()}"]
            if scope.columns[BOOL]:
                options.append(lambda: self.pick(scope.columns[BOOL]))
            if scope.columns[TEXT]:
                options.append(lambda: f"{self.pick(scope.columns[TEXT])} = {self.pick(TEXT_LITERALS)}")
            options.append(lambda: self.pick(["TRUE", "FALSE"]))
            return self.rng.choice(options)()
        d = depth + 1
        k = self.pick([NUM, NUM, TEXT, DATE, TS]) if scope.columns[TEXT] else NUM
        options = [
            lambda: f"({self.cond(scope, d, target)} {self.pick(['AND', 'OR'])} {self.cond(scope, d, target)})",
            lambda: f"(NOT {self.cond(scope, d, target)})",
            lambda: self._compare(k, scope, d, target),
            lambda: self._compare(k, scope, d, target),
            lambda: f"{self.expr(k, scope, d, target)} {self.pick(['IN', 'NOT IN'])} ("
                    f"{', '.join(self._literal(k) for _ in range(self.rng.randint(1, 4)))})",
            lambda: f"{self.expr(k, scope, d, target)} {self.pick(['BETWEEN', 'NOT BETWEEN'])} "
                    f"{self._literal(k)} AND {self._literal(k)}",
            lambda: f"{self.expr(self.kind_of(scope, [NUM, TEXT, DATE, TS, BOOL]), scope, d, target)}"
                    f" IS {self.pick(['NULL', 'NOT NULL'])}",
        ]
        if scope.columns[TEXT]:
            options.append(lambda: f"{self.text(scope, d, target)} {self.pick(['LIKE', 'ILIKE', 'NOT LIKE'])} "
                                   f"{self.pick(LIKE_PATTERNS)}")
        if scope.columns[BOOL]:
            options.append(lambda: f"{self.cond(scope, d, target)} IS {self.pick(['TRUE', 'FALSE', 'NOT TRUE'])}")
        return self.rng.choice(options)()

    def _literal(self, kind: str) -> str:
        if kind == NUM:
            return self.number()
        if kind == TEXT:
            return self.pick(TEXT_LITERALS)
        if kind == DATE:
            return self.date_literal() if self.chance(0.7) else f"'{self.pick(DATE_LITERALS)}'"
        return self.ts_literal()

    def _compare(self, kind: str, scope: Scope, d: int, target: int) -> str:
        op = self.pick(COMPARE_OPS)
        right = self.expr(kind, scope, d, target) if self.chance(0.5) else self._literal(kind)
        return f"({self.expr(kind, scope, d, target)} {op} {right})"

    # ------------------------------------------------------------------------------ bounded arguments
    def bounded(self, scope: Scope, depth: int, target: int) -> str:
        """A numeric expression likely to have a derived clamping interval (SUM/AVG/quantile argument)."""
        if self._leaf_now(depth, target):
            return self.pick(scope.bounded) if self.chance(0.8) else self.small_number()
        d = depth + 1
        options: list[Callable[[], str]] = [
            lambda: f"({self.bounded(scope, d, target)} {self.pick(['+', '-', '*'])} {self.bounded(scope, d, target)})",
            lambda: f"({self.bounded(scope, d, target)} {self.pick(['/', '%'])} {self.divisor()})",
            lambda: f"ABS({self.bounded(scope, d, target)})",
            lambda: f"{self.pick(['ROUND', 'FLOOR', 'CEIL'])}({self.bounded(scope, d, target)})",
            lambda: f"{self.pick(['LEAST', 'GREATEST'])}({self.bounded(scope, d, target)}, "
                    f"{self.num(scope, d, target)})",
            lambda: f"CASE WHEN {self.cond(scope, d, target)} THEN {self.bounded(scope, d, target)} "
                    f"ELSE {self.bounded(scope, d, target)} END",
            lambda: f"COALESCE({self.bounded(scope, d, target)}, {self.small_number()})",
            lambda: f"(-{self.bounded(scope, d, target)})",
            lambda: f"CAST({self.bounded(scope, d, target)} AS DOUBLE)",
        ]
        if scope.columns[DATE]:
            options.append(lambda: self._extract(scope, d, target))
        if self.chance(self.extreme / 3):
            options.append(lambda: f"({self.bounded(scope, d, target)} * {self.number()})")
        return self.rng.choice(options)()

    # ------------------------------------------------------------------------------ queries
    def aggregate(self, scope: Scope, target: int) -> str:
        r = self.rng.random()
        b = lambda: self.bounded(scope, 0, target)  # noqa: E731
        p = self.pick(["0.5", "0.1", "0.9", "0", "1", "0.25"])
        if r < 0.16:
            agg = "COUNT(*)"
        elif r < 0.26:
            agg = f"COUNT({self.expr(self.kind_of(scope, [NUM, TEXT, DATE, BOOL]), scope, 0, target)})"
        elif r < 0.30 and scope.unit:
            agg = f"COUNT(DISTINCT {scope.unit})"
        elif r < 0.36:
            agg = f"COUNT(DISTINCT {self.expr(self.kind_of(scope, [NUM, TEXT, DATE]), scope, 0, target)})"
        elif r < 0.54:
            agg = f"SUM({b()})"
        elif r < 0.70:
            agg = f"AVG({b()})"
        elif r < 0.79:
            agg = f"{self.pick(['VAR_SAMP', 'VARIANCE', 'VAR_POP', 'STDDEV', 'STDDEV_SAMP', 'STDDEV_POP'])}({b()})"
        elif r < 0.85:
            agg = f"{self.pick(['COVAR_POP', 'COVAR_SAMP', 'CORR'])}({b()}, {b()})"
        elif r < 0.89:  # quantiles: one 128-bin histogram each, the most expensive plans
            agg = self.pick([f"MIN({b()})", f"MAX({b()})", f"MEDIAN({b()})", f"quantile_cont({b()}, {p})",
                             f"{self.pick(['PERCENTILE_CONT', 'PERCENTILE_DISC'])}({p}) WITHIN GROUP (ORDER BY {b()})"])
        else:
            agg = f"SUM({self.num(scope, 0, target)})"  # often unbounded: refused
        if self.chance(0.15) and "WITHIN GROUP" not in agg:
            agg += f" FILTER (WHERE {self.cond(scope, 0, target)})"
        return agg

    def key(self, scope: Scope, target: int) -> str:
        r = self.rng.random()
        cols = scope.columns
        if r < 0.45 and cols[TEXT]:  # public domains
            return self.pick([c for c in cols[TEXT] + cols[BOOL] + scope.numeric_ints
                              if c.split(".")[-1] in ("t", "n", "b", "j")] or cols[NUM]) if self.chance(0.5) else \
                self.pick([f"FLOOR({self.pick(scope.bounded)} / 10) * 10", f"EXTRACT(MONTH FROM {cols[DATE][0]})",
                           f"({self.pick(scope.numeric_ints)} % 3)",
                           f"CASE WHEN {self.cond(scope, 0, 3)} THEN 1 ELSE 0 END"])
        kind = self.pick([NUM, TEXT, DATE, TS, BOOL]) if cols[TEXT] else NUM
        return self.expr(kind, scope, 0, max(2, target - 2))

    def select(self, scope: Scope, source: str, target: int, *, where: bool = True) -> str:
        nagg = self.rng.choice([1, 1, 2, 3])
        aggs = [self.aggregate(scope, target) for _ in range(nagg)]
        keys = [self.key(scope, target) for _ in range(self.rng.choice([0, 0, 1, 1, 2]))]
        items = [f"{a} AS a{i}" if self.chance(0.3) else a for i, a in enumerate(aggs)]
        group = ""
        if keys:
            style = self.rng.random()
            if style < 0.6:
                items = [f"{k} AS k{i}" for i, k in enumerate(keys)] + items
                group = " GROUP BY " + ", ".join(str(i + 1) if self.chance(0.5) else f"k{i}" for i in range(len(keys)))
            else:
                group = " GROUP BY " + ", ".join(keys)
                if self.chance(0.5):
                    items = keys + items
        sql = f"SELECT {', '.join(items)} FROM {source}"
        if where and self.chance(0.7):
            sql += f" WHERE {self.cond(scope, 0, target)}"
        sql += group
        if self.chance(0.1):
            sql += f" HAVING {aggs[0].split(' FILTER')[0]} > {self.small_number()}"
        if self.chance(0.1):
            sql += f" ORDER BY 1 {self.pick(['ASC', 'DESC'])} LIMIT {self.rng.randint(0, 5)}"
        return sql

    def query(self) -> str:
        """One query; its nesting depth is in ``self.deepest``."""
        self.deepest = 0
        self.budget = self.rng.choice([4, 6, 8, 10, 14, 20, 30])
        target = self.rng.randint(2, self.max_depth)
        r = self.rng.random()
        if r < 0.62:
            return self.select(adv_scope(), "adv", target)
        if r < 0.72:
            join = self.pick(["JOIN", "LEFT JOIN", "INNER JOIN"])
            on = "USING (pid)" if self.chance(0.3) else "ON a.pid = p.pid"
            scope = join_per_scope("a", "p")
            if on.startswith("USING"):
                scope.unit = "pid"
            return self.select(scope, f"adv a {join} per p {on}", target)
        if r < 0.82:
            scope = join_pub_scope("a", "q")
            on = self.pick(["a.t = q.k", "a.s = q.grp", f"a.t = q.k AND {self.cond(scope, 0, 3)}",
                            "LOWER(a.s) = q.k", "a.n = q.m"])
            return self.select(scope, f"adv a {self.pick(['JOIN', 'LEFT JOIN'])} pub q ON {on}", target)
        inner_scope = adv_scope()
        b = lambda: self.bounded(inner_scope, 0, target)  # noqa: E731
        inner = (f"SELECT pid, COUNT(*) AS c, SUM({b()}) AS sm, AVG({b()}) AS av, MIN({b()}) AS lo, "
                 f"MAX({b()}) AS hi FROM adv")
        if self.chance(0.6):
            inner += f" WHERE {self.cond(inner_scope, 0, target)}"
        inner += " GROUP BY pid"
        return self.select(sub_scope(), f"({inner}) t", target)
