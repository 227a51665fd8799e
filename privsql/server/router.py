"""Decide where each statement goes: session, shadow catalog or the DP engine.

- session/transaction statements (SET, SHOW, BEGIN, ...) → :mod:`session`
- ``EXPLAIN <query>`` → ``engine.explain``
- statements reading only catalog relations (pg_catalog, information_schema),
  or no relation at all (``SELECT 1``, ``SELECT version()``) → :mod:`catalog`
- everything else, in particular anything that names a configured table or an
  unknown relation → ``engine.execute``, which answers DP aggregates and
  refuses the rest with a typed error.

Plans depend only on the SQL text and the configured schema, so they are cached
(bounded in entries and bytes). Planning parses, so it runs in a worker thread
within the parser's size, nesting and time limits (:func:`privsql.sql.parse.parse_sql`);
only a cache lookup (:meth:`Router.cached`) is cheap enough for the event loop.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Mapping

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from privsql.cancel import TimeLimitExceeded, interruptible
from privsql.errors import PrivsqlError, QueryCanceled, QuerySyntaxError, StatementTooComplex
from privsql.server import types as pgt
from privsql.server.cache import BoundedLRU
from privsql.server.catalog_schema import CATALOG_RELATIONS, INFO_SCHEMA_RELATIONS, TABLE_FUNCTIONS
from privsql.server.utility import UtilityCommand, parse_utility
from privsql.sql.parse import MAX_STATEMENT_BYTES, PARSE_TIME_LIMIT, check_size, parse_sql

#: plans kept: at most this many messages, and this many estimated bytes (a parsed catalog
#: statement holds about 100 bytes of tree per byte of text)
PLAN_CACHE_ENTRIES = 2048
PLAN_CACHE_BYTES = 32 << 20
_AST_BYTES_PER_CHAR = 100
#: longest session/transaction statement planned on the event loop (no worker, no analyst slot)
QUICK_UTILITY_CHARS = 512

_EXPLAIN = re.compile(
    r"^\s*explain\b\s*(?:\([^()]*\)\s*|(?:analy[sz]e|verbose|costs|buffers|settings)\b\s*)*",
    re.IGNORECASE,
)
_PARAM = re.compile(r"\$(\d+)")
# sqlglot cannot parse casts to arrays of some PostgreSQL-only types ('$1::oid[]')
_ARRAY_CAST = re.compile(r"::\s*(?:pg_catalog\.)?(oid|regtype|regclass|regproc|name|xid)\s*\[\]", re.IGNORECASE)
_DIALECT = Postgres()


@dataclass(frozen=True)
class Plan:
    """How to answer one statement."""

    kind: str  # 'empty' | 'utility' | 'explain' | 'catalog' | 'engine' | 'error'
    sql: str  # the statement as the client sent it
    utility: UtilityCommand | None = None
    target: str = ""  # explain: the explained query
    ast: exp.Expression | None = None  # catalog: the parsed statement
    param_types: tuple[int, ...] = ()  # inferred OID per $n, 0 where unknown
    constant: bool = False  # catalog: answer depends on nothing (cacheable)
    error: PrivsqlError | None = None  # error: what running the statement raises


def split_statements(sql: str, max_bytes: int = MAX_STATEMENT_BYTES) -> list[tuple[int, str]]:
    """(offset, text) of each ';'-separated statement; empty input gives [(0, '')]."""
    check_size(sql, max_bytes)
    try:
        tokens = interruptible(lambda: _DIALECT.tokenize(sql), limit=PARSE_TIME_LIMIT)
    except TimeLimitExceeded:
        raise StatementTooComplex(f"statement too complex: reading it took longer than {PARSE_TIME_LIMIT:g} s") \
            from None
    except (TokenError, ParseError) as exc:
        raise QuerySyntaxError(f"syntax error: {exc}") from exc
    pieces: list[tuple[int, str]] = []
    start = 0
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            if sql[start:tok.start].strip():
                pieces.append((start, sql[start:tok.start]))
            start = tok.end + 1
    if sql[start:].strip():
        pieces.append((start, sql[start:]))
    return pieces or [(0, "")]


def _table_kind(table: exp.Table, configured: Mapping[str, object], ctes: set[str]) -> str:
    name, db = table.name.lower(), table.db.lower()
    if isinstance(table.this, exp.Func) or isinstance(table.this, exp.Anonymous):
        func = table.this.sql_name().lower() if isinstance(table.this, exp.Func) else str(table.this.this).lower()
        return "catalog" if func in TABLE_FUNCTIONS else "other"
    if not db and name in ctes:
        return "cte"
    if db in ("", "public") and name in configured:
        return "private"
    if db == "pg_catalog" or (not db and name in CATALOG_RELATIONS):
        return "catalog" if name in CATALOG_RELATIONS else "other"
    if db == "information_schema":
        return "catalog" if name in INFO_SCHEMA_RELATIONS else "other"
    return "other"


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)


def _column_type(column: exp.Expression, columns: Mapping[str, pgt.PgType]) -> int:
    if isinstance(column, exp.Column):
        t = columns.get(column.name.lower())
        return t.oid if t else 0
    return 0


def _cast_type(cast: exp.Cast) -> int:
    name = cast.to.sql("postgres").lower().replace("pg_catalog.", "")
    aliases = {"bigint": "int8", "integer": "int4", "int": "int4", "smallint": "int2", "double precision": "float8",
               "real": "float4", "boolean": "bool", "timestamp": "timestamp", "varchar": "varchar", "decimal": "numeric"}
    t = pgt.BY_NAME.get(aliases.get(name, name))
    return t.oid if t else 0


def infer_param_types(ast: exp.Expression, columns: Mapping[str, pgt.PgType]) -> tuple[int, ...]:
    """The OID of each ``$n`` from its context: a cast, or a compared column's type."""
    found: dict[int, int] = {}
    for param in ast.find_all(exp.Parameter):
        try:
            index = int(param.name)
        except ValueError:
            continue
        parent, oid = param.parent, 0
        if isinstance(parent, exp.Cast):
            oid = _cast_type(parent)
        elif isinstance(parent, _COMPARISONS):
            other = parent.left if parent.right is param else parent.right
            oid = _column_type(other, columns)
        elif isinstance(parent, (exp.Between, exp.In)):
            oid = _column_type(parent.this, columns)
        elif isinstance(parent, (exp.Limit, exp.Offset)):
            oid = pgt.INT8.oid
        found[index] = found.get(index) or oid
    count = max(found, default=0)
    return tuple(found.get(i, 0) for i in range(1, count + 1))


def count_params(sql: str) -> int:
    return max((int(n) for n in _PARAM.findall(sql)), default=0)


#: planned statements of one message: (offset in the message, plan)
Planned = list[tuple[int, Plan]]


def _cost(sql: str, planned: Planned) -> int:
    """Estimated bytes a cached message plan holds (catalog plans keep their tree)."""
    parsed = sum(len(plan.sql) for _, plan in planned if plan.ast is not None)
    return 2 * len(sql) + _AST_BYTES_PER_CHAR * parsed + 256 * len(planned)


class Router:
    """Plans statements against one configured schema."""

    def __init__(self, tables: Mapping[str, Mapping[str, pgt.PgType]], *,
                 max_statement_size: int = MAX_STATEMENT_BYTES) -> None:
        #: configured table name → column name → wire type
        self.tables = {name.lower(): cols for name, cols in tables.items()}
        self.max_statement_size = max_statement_size
        self._columns: dict[str, pgt.PgType] = {}
        for cols in self.tables.values():
            for col, t in cols.items():
                self._columns.setdefault(col.lower(), t)
        self._plans = BoundedLRU(PLAN_CACHE_ENTRIES, PLAN_CACHE_BYTES)

    def cached(self, sql: str) -> Planned | None:
        """The message's plans without parsing (cheap: safe on the event loop): planned before, or
        one short session/transaction statement (SET, SHOW, BEGIN, ...), which needs no worker."""
        planned = self._plans.get(sql)
        statement = sql.rstrip().rstrip(";")
        if planned is None and len(sql) <= QUICK_UTILITY_CHARS and ";" not in statement:
            with contextlib.suppress(PrivsqlError):  # a malformed one is planned (and refused) in a worker
                plan = self._utility(statement)
                planned = [(0, plan)] if plan is not None else None
        return planned

    def plan_message(self, sql: str) -> Planned:
        """Split a simple-query message and plan each statement (parses: run it off the event loop)."""
        planned = self.cached(sql)
        if planned is None:
            planned = [(offset, self._plan_or_error(text))
                       for offset, text in split_statements(sql, self.max_statement_size)]
            if not any(plan.kind == "error" for _, plan in planned):
                self._plans.put(sql, planned, _cost(sql, planned))
        return planned

    def plan(self, sql: str) -> Plan:
        """Plan exactly one statement (a Parse message); several are a syntax error."""
        return self.single(self.plan_message(sql))

    @staticmethod
    def single(planned: Planned) -> Plan:
        """The one statement's plan of a Parse message: several are a syntax error, a failed plan raises."""
        if len(planned) > 1:
            raise QuerySyntaxError("cannot insert multiple commands into a prepared statement")
        plan = planned[0][1]
        if plan.error is not None:
            raise plan.error
        return plan

    def _plan_or_error(self, sql: str) -> Plan:
        """The statement's plan, or an 'error' plan raising what planning raised when it runs."""
        try:
            return self._plan(sql)
        except QueryCanceled:
            raise
        except PrivsqlError as exc:
            return Plan("error", sql, error=exc)

    def _engine(self, sql: str, ast: exp.Expression | None) -> Plan:
        types = infer_param_types(ast, self._columns) if ast is not None else (0,) * count_params(sql)
        return Plan("engine", sql, param_types=types)

    @staticmethod
    def _utility(sql: str) -> Plan | None:
        """The plan of an empty or session/transaction statement; None for anything else."""
        if not sql.strip():
            return Plan("empty", sql)
        utility = parse_utility(sql)
        return Plan("utility", sql, utility=utility) if utility is not None else None

    def _plan(self, sql: str) -> Plan:
        quick = self._utility(sql)
        if quick is not None:
            return quick
        explained = _EXPLAIN.match(sql)
        if explained and explained.end() > 0 and sql.lstrip()[:7].lower() == "explain":
            target = sql[explained.end():]
            return Plan("explain", sql, target=target, param_types=(0,) * count_params(target))
        try:
            trees = parse_sql(_ARRAY_CAST.sub(r"::\1_array_", sql), max_bytes=self.max_statement_size)
        except (ParseError, TokenError):
            return self._engine(sql, None)
        if len(trees) != 1:
            return self._engine(sql, None)
        ast = trees[0]
        if not isinstance(ast, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values)) or ast.find(exp.Into):
            return self._engine(sql, ast)
        ctes = {cte.alias_or_name.lower() for cte in ast.find_all(exp.CTE)}
        kinds = {_table_kind(t, self.tables, ctes) for t in ast.find_all(exp.Table)}
        if kinds - {"catalog", "cte"}:
            return self._engine(sql, ast)
        constant = not kinds and not any(isinstance(f, (exp.Anonymous, exp.Rand)) or
                                         (isinstance(f, exp.Func) and not isinstance(f, exp.Cast))
                                         for f in ast.find_all(exp.Func, exp.Anonymous))
        return Plan("catalog", sql, ast=ast, param_types=infer_param_types(ast, {}), constant=constant and not ast.find(exp.Parameter))
