"""privsql's Python DB-API 2.0 driver (PEP 249).

    conn = connect(config="config/privsql.yaml", analyst="alice")   # embedded
    cur = conn.cursor()
    cur.execute("SELECT sex, COUNT(*) FROM people WHERE age > %s GROUP BY sex", [30])
    cur.fetchall(); cur.privacy          # ε spent, budget left, per-column noise scale and 95% CI

Embedded mode runs the engine in this process. Connections to the same config
share one :class:`~privsql.engine.Engine` (the data are loaded once per
process); the budget store is the configured, persistent one, so reconnecting
never resets a budget. Remote mode (``connect("postgresql://...")``) talks to a
running ``privsql serve`` through psycopg 3, with the same exceptions.

Parameters (``paramstyle = 'pyformat'``: ``%s`` and ``%(name)s``, ``%%`` for a
literal ``%``) are never spliced into the SQL text: :func:`_placeholders_to_numbers`
only renumbers the placeholders (``$1``, ``$2``, ...) and the engine binds each
value into the parsed tree as a typed literal, so a value cannot change the
shape of the query.

Every refusal of the engine (a :class:`privsql.errors.PrivsqlError`) is raised as
the PEP 249 exception given by its SQLSTATE (:func:`error_from_sqlstate`), with
the same ``sqlstate`` the wire server sends and the engine's message.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from privsql.errors import PrivsqlError
from privsql.results import OutputColumn, PrivacyReport

if TYPE_CHECKING:
    from privsql.config import Config, TableMeta
    from privsql.engine import BudgetStatus, Engine

apilevel = "2.0"
#: 2: threads may share the module and connections, not cursors. A connection
#: holds no per-query state (each cursor keeps its own result), and the engine
#: below it is thread-safe, budget reservations included.
threadsafety = 2
paramstyle = "pyformat"

# ---------------------------------------------------------------------------
# Exceptions (PEP 249 hierarchy, plus privsql's own leaves)


class Warning(Exception):  # the name PEP 249 requires
    """Important warnings (PEP 249). privsql does not raise it today."""


class Error(Exception):
    """Base of every privsql DB-API error.

    ``sqlstate`` is the PostgreSQL error code the wire server would send for the
    same failure; ``message`` the one-line message; ``position`` (1-based
    character offset in the query) and ``hint`` when known.
    """

    sqlstate: str | None = None

    def __init__(self, message: str = "", *, sqlstate: str | None = None, position: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.position = position
        self.hint = hint


class InterfaceError(Error):
    """Misuse of the driver itself (e.g. a closed connection or cursor)."""


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    sqlstate = "XX000"


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    sqlstate = "0A000"


class QuerySyntaxError(ProgrammingError):
    sqlstate = "42601"


class UndefinedTable(ProgrammingError):
    sqlstate = "42P01"


class UndefinedColumn(ProgrammingError):
    sqlstate = "42703"


class DatatypeMismatch(ProgrammingError):
    sqlstate = "42804"


class UndefinedParameter(ProgrammingError):
    """The placeholders and the parameters given do not match (a driver-side check)."""

    sqlstate = "42P02"


class PrivacyRefused(ProgrammingError):
    """privsql will not answer this query: it would reveal individuals or is unbounded. Costs nothing."""

    sqlstate = "42501"


class InvalidParameter(DataError):
    """A bad parameter value, or a bad ε/δ."""

    sqlstate = "22023"


class BudgetExhausted(OperationalError):
    """The analyst's remaining privacy budget cannot pay for the query. Costs nothing."""

    sqlstate = "53400"


class InvalidAuthorization(OperationalError):
    """Unknown analyst (or, remotely, a failed login)."""

    sqlstate = "28000"


class QueryCanceled(OperationalError):
    """Cancelled or timed out; the budget reserved for the query stays spent."""

    sqlstate = "57014"


_BY_SQLSTATE: dict[str, type[Error]] = {
    c.sqlstate: c  # type: ignore[misc]
    for c in (QuerySyntaxError, UndefinedTable, UndefinedColumn, DatatypeMismatch, UndefinedParameter,
              PrivacyRefused, InvalidParameter, BudgetExhausted, InvalidAuthorization, QueryCanceled,
              NotSupportedError, InternalError)
}
_BY_SQLSTATE["28P01"] = InvalidAuthorization  # invalid_password (remote login)
# SQLSTATE class (first two characters) → PEP 249 class, as psycopg maps them
_BY_CLASS: dict[str, type[Error]] = {
    "0A": NotSupportedError, "08": OperationalError, "22": DataError, "23": IntegrityError,
    "25": InternalError, "28": OperationalError, "40": OperationalError, "42": ProgrammingError,
    "53": OperationalError, "54": OperationalError, "55": OperationalError, "57": OperationalError,
    "58": OperationalError, "F0": OperationalError, "XX": InternalError,
}


def error_from_sqlstate(sqlstate: str | None, message: str, *, position: int | None = None,
                        hint: str | None = None) -> Error:
    """The DB-API exception for a SQLSTATE: an exact privsql class, else the class of its SQLSTATE class."""
    code = sqlstate or ""
    cls = _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2], DatabaseError)
    return cls(message, sqlstate=sqlstate, position=position, hint=hint)


def _translate(exc: PrivsqlError) -> Error:
    return error_from_sqlstate(exc.sqlstate, exc.message, position=exc.position, hint=exc.hint)


# ---------------------------------------------------------------------------
# Types: type codes are PostgreSQL type OIDs (as psycopg and the wire server report them)


class TypeCode(int):
    """A ``description`` type code: the PostgreSQL OID (an int) that also knows privsql's type name."""

    name: str

    def __new__(cls, oid: int, name: str) -> Self:
        code = super().__new__(cls, oid)
        code.name = name
        return code

    def __repr__(self) -> str:
        return f"TypeCode({int(self)}, {self.name!r})"


#: privsql result types (privsql.results.COLUMN_TYPES) → type codes
TYPE_CODES: dict[str, TypeCode] = {
    name: TypeCode(oid, name)
    for name, oid in (("bigint", 20), ("double", 701), ("numeric", 1700), ("text", 25), ("boolean", 16),
                      ("date", 1082), ("timestamp", 1114))
}
_BY_OID: dict[int, TypeCode] = {int(c): c for c in TYPE_CODES.values()}
_INTERNAL_SIZE = {"bigint": 8, "double": 8, "boolean": 1, "date": 4, "timestamp": 8}


class DBAPITypeObject:
    """Compares equal to every type code of its kind (PEP 249 type objects)."""

    def __init__(self, name: str, *oids: int) -> None:
        self.name = name
        self.values = frozenset(oids)

    def __eq__(self, other: object) -> bool:
        return other in self.values if isinstance(other, int) else NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"<DBAPITypeObject {self.name}>"


STRING = DBAPITypeObject("STRING", 25, 1043, 1042, 18, 19)
BINARY = DBAPITypeObject("BINARY", 17)
NUMBER = DBAPITypeObject("NUMBER", 20, 21, 23, 700, 701, 1700)
DATETIME = DBAPITypeObject("DATETIME", 1082, 1083, 1114, 1184)
ROWID = DBAPITypeObject("ROWID", 26)
BOOLEAN = DBAPITypeObject("BOOLEAN", 16)  # beyond PEP 249

Date = dt.date
Time = dt.time
Timestamp = dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> dt.date:
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> dt.time:
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> dt.datetime:
    return Timestamp(*time.localtime(ticks)[:6])


class Column(NamedTuple):
    """One ``cursor.description`` entry (the PEP 249 7-tuple)."""

    name: str
    type_code: TypeCode
    display_size: int | None = None
    internal_size: int | None = None
    precision: int | None = None
    scale: int | None = None
    null_ok: bool | None = None


def _describe(columns: Sequence[OutputColumn]) -> tuple[Column, ...]:
    out = []
    for c in columns:
        code = TYPE_CODES.get(c.type) or TypeCode(25, c.type)
        out.append(Column(c.name, code, internal_size=_INTERNAL_SIZE.get(c.type)))
    return tuple(out)


# ---------------------------------------------------------------------------
# Parameters: pyformat placeholders → $n, values bound later by the engine (never into the text)

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_NAMED = re.compile(r"%\(([^()%]+)\)s")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\uffff]")


def _is_ident_char(ch: str) -> bool:
    return bool(ch) and bool(_IDENT_CHAR.match(ch))


def _quoted_end(sql: str, i: int, quote: str, backslash: bool) -> int:
    """The index just past the quoted token starting at ``sql[i]``; len(sql) if unterminated."""
    n, j = len(sql), i + 1
    while j < n:
        ch = sql[j]
        if backslash and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if j + 1 < n and sql[j + 1] == quote:  # '' or "" escape
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _block_comment_end(sql: str, i: int) -> int:
    depth, j, n = 0, i, len(sql)
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n


def _placeholders_to_numbers(sql: str, params: Any) -> tuple[str, list[Any] | Mapping[str, Any] | None]:
    """Rewrite pyformat placeholders as ``$1, $2, ...`` and return the values in that order.

    Follows psycopg: without parameters (``None``) the text is used as is; with
    parameters, ``%s`` / ``%(name)s`` outside quotes and comments are placeholders and
    ``%%`` is a literal ``%`` everywhere (SQLAlchemy doubles every ``%`` for pyformat
    drivers). A lone ``%`` that starts no placeholder is kept (the modulo operator).
    Only placeholder tokens are rewritten; the values stay out of the text.

    Text with no pyformat placeholder keeps its own placeholders (``$1``, ``:name``)
    and the parameters pass through to the engine unchanged.
    """
    if params is None:
        return sql, None
    if isinstance(params, (str, bytes)) or not isinstance(params, (Sequence, Mapping)):
        raise ProgrammingError(f"query parameters must be a sequence or a mapping, not {type(params).__name__}")
    out: list[str] = []
    values: list[Any] = []
    names: dict[str, int] = {}
    positional = 0
    native = False  # $n, ? or :name placeholders of the text itself
    n, i = len(sql), 0
    while i < n:
        ch = sql[i]
        prev = sql[i - 1] if i else ""
        if ch == "'" or ch == '"':
            backslash = ch == "'" and prev in ("E", "e") and not _is_ident_char(sql[i - 2] if i > 1 else "")
            j = _quoted_end(sql, i, ch, backslash)
            out.append(sql[i:j].replace("%%", "%"))
            i = j
            continue
        if ch == "$" and not _is_ident_char(prev):
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                close = sql.find(tag.group(0), tag.end())
                j = n if close < 0 else close + len(tag.group(0))
                out.append(sql[i:j].replace("%%", "%"))
                i = j
                continue
            if i + 1 < n and sql[i + 1].isdigit():
                native = True
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%%", "%"))
            i = j
            continue
        if sql.startswith("/*", i):
            j = _block_comment_end(sql, i)
            out.append(sql[i:j].replace("%%", "%"))
            i = j
            continue
        if ch == "?" or (ch == ":" and prev != ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_")):
            native = True
        if ch == "%":
            if sql.startswith("%%", i):
                out.append("% ")  # a literal %: the space keeps it from forming a placeholder with what follows
                i += 2
                continue
            named = _NAMED.match(sql, i)
            if sql.startswith("%s", i) or named:
                if named:
                    if not isinstance(params, Mapping):
                        raise UndefinedParameter(f"placeholder {named.group(0)} needs a mapping of parameters, "
                                                 f"not a {type(params).__name__}")
                    name = named.group(1)
                    if name not in params:
                        raise UndefinedParameter(f"no value given for parameter %({name})s")
                    if name not in names:
                        values.append(params[name])
                        names[name] = len(values)
                    number, i = names[name], named.end()
                else:
                    if isinstance(params, Mapping):
                        raise UndefinedParameter("positional placeholder %s needs a sequence of parameters, "
                                                 "not a mapping")
                    if positional >= len(params):
                        raise UndefinedParameter(f"the query has more %s placeholders than the {len(params)} "
                                                 "parameter(s) given")
                    values.append(params[positional])
                    positional += 1
                    number, i = len(values), i + 2
                out.append(f"${number}")
                if i < n and _is_ident_char(sql[i]):
                    out.append(" ")
                continue
        out.append(ch)
        i += 1
    if not values:
        if positional == 0 and not isinstance(params, Mapping) and len(params) and not native:
            raise UndefinedParameter(f"the query takes no parameters but {len(params)} were given")
        if native:
            return "".join(out), (params if isinstance(params, Mapping) else list(params))
        return "".join(out), None
    if native:
        raise UndefinedParameter("mixed placeholder styles: use %s or %(name)s only")
    if not isinstance(params, Mapping) and positional != len(params):
        raise UndefinedParameter(f"the query has {positional} %s placeholder(s) but {len(params)} parameters "
                                 "were given")
    return "".join(out), values


# ---------------------------------------------------------------------------
# Statements answered by the driver itself (no data, no budget)

_TRANSACTION = re.compile(
    r"^\s*(?:begin|start\s+transaction|commit|end|rollback|abort|savepoint|release)\b[^;]*;?\s*$",
    re.IGNORECASE)
_EXPLAIN = re.compile(
    r"^\s*explain\b\s*(?:\([^()]*\)\s*|(?:analy[sz]e|verbose|costs|buffers|settings)\b\s*)*", re.IGNORECASE)
_MAYBE_CONSTANT = re.compile(r"^\s*select\b(?!.*\bfrom\b)", re.IGNORECASE | re.DOTALL)


@dataclass
class _Result:
    columns: list[OutputColumn] | None  # None: the statement returns no rows
    rows: list[tuple[Any, ...]]
    privacy: PrivacyReport | None = None
    notices: tuple[str, ...] = ()


_NO_ROWS = _Result(None, [])


def _constant_select(sql: str, params: Any) -> _Result | None:
    """``SELECT 1``, ``SELECT 'x' AS a``: literals only, no FROM. Answered here (they read no data);
    clients and pools send them as pings. Anything else returns None (for the engine)."""
    if not _MAYBE_CONSTANT.match(sql):
        return None
    from sqlglot import exp

    from privsql.sql.parse import bind_parameters, parse_statement

    try:
        tree = bind_parameters(parse_statement(sql), params)
    except PrivsqlError:
        return None  # let the engine word the error
    if not isinstance(tree, exp.Select) or any(v for k, v in tree.args.items() if k != "expressions"):
        return None
    columns, row = [], []
    for item in tree.expressions:
        name = item.alias if isinstance(item, exp.Alias) else "?column?"
        node = item.unalias() if isinstance(item, exp.Alias) else item
        negative = isinstance(node, exp.Neg)
        if negative:
            node = node.this
        if isinstance(node, exp.Literal) and node.is_string and not negative:
            columns.append(OutputColumn(name, "text"))
            row.append(node.this)
        elif isinstance(node, exp.Literal) and node.is_number:
            text = ("-" if negative else "") + node.this
            try:
                value: Any = int(text)
                ctype = "bigint"
            except ValueError:
                import decimal

                try:
                    value, ctype = decimal.Decimal(text), "numeric"
                except decimal.InvalidOperation:
                    return None
            columns.append(OutputColumn(name, ctype))
            row.append(value)
        elif isinstance(node, exp.Boolean) and not negative:
            columns.append(OutputColumn(name if name != "?column?" else "bool", "boolean"))
            row.append(bool(node.this))
        elif isinstance(node, exp.Null) and not negative:
            columns.append(OutputColumn(name, "text"))
            row.append(None)
        else:
            return None
    return _Result(columns, [tuple(row)])


# ---------------------------------------------------------------------------
# Engines shared by connections to the same config (data loaded once per process)


class _EngineCache:
    """Refcounted engines keyed by config file (resolved path) or Config object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, list[Any]] = {}  # key -> [engine, refcount, config object kept alive]

    def acquire(self, key: Any, factory: Callable[[], Engine], keep: Any = None) -> Engine:
        with self._lock:  # held while loading, so two threads never load the same data twice
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [factory(), 0, keep]
            entry[1] += 1
            return entry[0]  # type: ignore[no-any-return]

    def release(self, key: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._entries[key]
        entry[0].close()

    def __len__(self) -> int:
        return len(self._entries)


_engines = _EngineCache()


def _open_engine(config: str | os.PathLike[str] | Config | None) -> tuple[Engine, Any]:
    from privsql.config import DEFAULT_CONFIG_PATH, Config, load_config
    from privsql.engine import Engine

    if isinstance(config, Config):
        cfg = config
        key: Any = ("config", id(cfg))
        return _engines.acquire(key, lambda: Engine(cfg), keep=cfg), key
    path = Path(config or os.environ.get("PRIVSQL_CONFIG") or DEFAULT_CONFIG_PATH).expanduser()
    key = ("path", str(path.resolve()))
    return _engines.acquire(key, lambda: Engine(load_config(path))), key


def _call(fn: Callable[[], Any]) -> Any:
    """Run engine code, raising its refusals as DB-API exceptions."""
    try:
        return fn()
    except PrivsqlError as exc:
        raise _translate(exc) from exc
    except Error:
        raise
    except Exception as exc:
        # the engine words every expected failure itself; anything else is a bug, named by its type only
        # (its text might quote data) and chained as __cause__ for debugging
        raise InternalError(f"internal error: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class Explanation:
    """``connection.explain(sql)``: what a query would cost and how noisy it would be. Nothing spent."""

    epsilon: float
    delta: float
    rows: tuple[tuple[str, str], ...]  # (item, detail), as ``EXPLAIN <query>`` returns them
    columns: tuple[OutputColumn, ...] = ()  # the result columns (embedded mode; empty remotely)

    def __str__(self) -> str:
        width = max((len(item) for item, _ in self.rows), default=0)
        return "\n".join(f"{item:<{width}}  {detail}" for item, detail in self.rows)


_Params = Sequence[Any] | Mapping[str, Any] | None


class _Embedded:
    """The engine in this process."""

    remote = False

    def __init__(self, engine: Engine, analyst: str) -> None:
        self.engine = engine
        self.analyst = analyst

    def run(self, text: str, values: _Params, eps: float | None, delta: float | None) -> _Result:
        engine = self.engine
        if _TRANSACTION.match(text):
            return _NO_ROWS
        explained = _EXPLAIN.match(text)
        if explained and text.lstrip()[:7].lower() == "explain":
            target = text[explained.end():]
            res = _call(lambda: engine.explain(target, analyst=self.analyst, epsilon=eps, delta=delta, params=values))
            return _Result(res.columns, res.rows)
        constant = _call(lambda: _constant_select(text, values))
        if constant is not None:
            return constant  # type: ignore[no-any-return]
        res = _call(lambda: engine.execute(text, analyst=self.analyst, epsilon=eps, delta=delta, params=values))
        return _Result(res.columns, res.rows, res.privacy, tuple(res.notices))

    def explain(self, text: str, values: _Params, eps: float | None, delta: float | None) -> Explanation:
        engine = self.engine

        def run() -> Explanation:
            result = engine.explain(text, analyst=self.analyst, epsilon=eps, delta=delta, params=values)
            plan = engine.prepare(text, params=values, epsilon=eps, delta=delta,
                                  analyst=engine.analyst(self.analyst)).plan
            cost = (0.0, 0.0) if plan is None else (plan.epsilon, plan.delta)  # None: a public table, free
            return Explanation(*cost, tuple((str(a), str(b)) for a, b in result.rows),
                               tuple(engine.describe(text, params=values)))

        return _call(run)  # type: ignore[no-any-return]

    def budget(self) -> BudgetStatus:
        return _call(lambda: self.engine.budget(self.analyst))  # type: ignore[no-any-return]

    def tables(self) -> dict[str, TableMeta]:
        return dict(self.engine.config.tables)


# Remote mode: a running ``privsql serve`` over the PostgreSQL wire protocol, through psycopg 3.

_NOTICE = re.compile(
    r"privsql: (?:spent epsilon=(?P<eps>[^,;]+)(?:, delta=(?P<delta>[^;]+))?|(?P<cached>repeated query)[^;]*)"
    r"; remaining epsilon=(?P<eps_left>[^,;]+)(?:, delta=(?P<delta_left>[^;]+))?")
_COST = re.compile(r"ε = (?P<eps>[^,]+), δ = (?P<delta>\S+)")


def _privacy_from_notice(analyst: str, notice: str) -> PrivacyReport | None:
    m = _NOTICE.search(notice)
    if m is None:
        return None
    try:
        return PrivacyReport(analyst=analyst, epsilon=float(m["eps"] or 0), delta=float(m["delta"] or 0),
                             epsilon_remaining=float(m["eps_left"]), delta_remaining=float(m["delta_left"] or 0),
                             cached=bool(m["cached"]))
    except ValueError:
        return None


def _from_psycopg(exc: Exception) -> Error:
    """A psycopg exception as the DB-API exception of its SQLSTATE (the codes privsql serve sends)."""
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    if sqlstate:
        position = getattr(diag, "statement_position", None)
        return error_from_sqlstate(sqlstate, message, position=int(position) if position else None,
                                   hint=getattr(diag, "message_hint", None))
    names = [c.__name__ for c in type(exc).__mro__]
    for cls in (InterfaceError, DataError, IntegrityError, InternalError, ProgrammingError, NotSupportedError,
                OperationalError, DatabaseError):
        if cls.__name__ in names:
            return cls(message)
    return InterfaceError(message)


class _Remote:
    """A psycopg connection to ``privsql serve``. Calls are serialised by a lock, so the session's
    ε/δ settings and the privacy NOTICE of each query always belong to the same statement."""

    remote = True

    def __init__(self, dsn: str, kwargs: dict[str, Any]) -> None:
        import psycopg

        self._psycopg = psycopg
        try:
            self.pg = psycopg.connect(dsn, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise _from_psycopg(exc) from exc
        self.analyst = self.pg.info.user
        self._lock = threading.Lock()
        self._notices: list[str] = []
        self._budget: tuple[float | None, float | None] = (None, None)  # what the session has SET
        self.pg.add_notice_handler(lambda diag: self._notices.append(diag.message_primary or ""))

    def _execute(self, text: str, values: _Params, eps: float | None, delta: float | None) -> _Result:
        if isinstance(values, Mapping):
            raise NotSupportedError("named :name placeholders are embedded-mode only; use %(name)s")
        with self._lock:
            try:
                self._set_budget(eps, delta)
                self._notices.clear()
                cur = self._psycopg.RawCursor(self.pg)
                cur.execute(text, values)
                if cur.description is None:
                    return _Result(None, [], None, tuple(self._notices))
                columns = [OutputColumn(d.name, _BY_OID[d.type_code].name if d.type_code in _BY_OID else "text")
                           for d in cur.description]
                rows = [tuple(r) for r in cur.fetchall()]
            except self._psycopg.Error as exc:
                raise _from_psycopg(exc) from exc
            notices = tuple(self._notices)
        privacy = next((p for p in (_privacy_from_notice(self.analyst, n) for n in notices) if p), None)
        return _Result(columns, rows, privacy, notices)

    def _set_budget(self, eps: float | None, delta: float | None) -> None:
        for i, (name, value) in enumerate((("privsql.epsilon", eps), ("privsql.delta", delta))):
            if value == self._budget[i]:
                continue
            if value is None:
                self.pg.execute(f"RESET {name}")
            else:
                number = float(value)  # a float's repr is digits, '.', 'e', '-' only: safe in the text
                if not math.isfinite(number):
                    raise InvalidParameter(f"{name} must be a finite number")
                self.pg.execute(f"SET {name} = '{number!r}'")
            self._budget = (value, self._budget[1]) if i == 0 else (self._budget[0], value)

    def run(self, text: str, values: _Params, eps: float | None, delta: float | None) -> _Result:
        return self._execute(text, values, eps, delta)

    def explain(self, text: str, values: _Params, eps: float | None, delta: float | None) -> Explanation:
        res = self._execute("EXPLAIN " + text, values, eps, delta)
        rows = tuple((str(a), str(b)) for a, b in res.rows)
        detail = next((d for item, d in rows if item == "cost"), None)
        if detail is None:
            raise InternalError("the server's EXPLAIN has no cost row")
        cost = _COST.search(detail)
        if cost is None:  # 'none: a public table, answered exactly'
            return Explanation(0.0, 0.0, rows)
        return Explanation(float(cost["eps"]), float(cost["delta"]), rows)

    def budget(self) -> BudgetStatus:
        raise NotSupportedError("privsql serve does not report budgets over the wire yet; cursor.privacy "
                                "holds the remaining budget after each query")

    def tables(self) -> dict[str, TableMeta]:
        raise NotSupportedError("table metadata is embedded-mode only; remotely, read information_schema")

    def close(self) -> None:
        self.pg.close()


# ---------------------------------------------------------------------------
# Connections


class Connection:
    """A PEP 249 connection for one analyst. Read-only: ``commit`` and ``rollback`` do nothing,
    and nothing spent is ever given back.

    ``epsilon`` and ``delta`` (settable) are this connection's per-query budget;
    None means the config's defaults (remotely: the server's). ``cursor.execute(...,
    epsilon=...)`` overrides them for one query.
    """

    # PEP 249 optional extension: the exceptions as connection attributes
    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, session: _Embedded | _Remote, *, epsilon: float | None = None, delta: float | None = None,
                 release: Callable[[], None] | None = None) -> None:
        self._session: _Embedded | _Remote | None = session
        self.analyst = session.analyst
        self.remote = session.remote
        self.epsilon = epsilon
        self.delta = delta
        # runs once: on close(), or when the connection is garbage-collected unclosed
        self._finalizer = weakref.finalize(self, release) if release else None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ PEP 249
    def close(self) -> None:
        """Close the connection (again: no-op). Later use raises InterfaceError."""
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        if isinstance(session, _Remote):
            session.close()
        if self._finalizer is not None:
            self._finalizer()

    def commit(self) -> None:
        """Nothing to commit: privsql is read-only, and a query is charged when it runs."""
        self._live()

    def rollback(self) -> None:
        """Nothing to roll back (read-only). Spent budget is never refunded."""
        self._live()

    def cursor(self) -> Cursor:
        self._live()
        return Cursor(self)

    @property
    def closed(self) -> bool:
        return self._session is None

    @property
    def autocommit(self) -> bool:
        """Always True: every statement stands alone (there are no transactions to group them)."""
        return True

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._live()

    def __enter__(self) -> Self:
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ privsql extensions
    @property
    def engine(self) -> Engine:
        """The in-process engine (embedded mode only)."""
        session = self._live()
        if not isinstance(session, _Embedded):
            raise NotSupportedError("a remote connection has no in-process engine")
        return session.engine

    def budget(self) -> BudgetStatus:
        """This analyst's budget: totals, spent, remaining, number of queries (embedded mode)."""
        return self._live().budget()

    def explain(self, sql: str, params: _Params = None, *, epsilon: float | None = None,
                delta: float | None = None) -> Explanation:
        """The plan of a query: its cost, the noise and expected 95% error of each column, the
        backend SQL. Reads no data and spends nothing."""
        session = self._live()
        text, values = _placeholders_to_numbers(sql, params)
        eps, dlt = self._budget_args(epsilon, delta)
        return session.explain(text, values, eps, dlt)

    def tables(self) -> dict[str, TableMeta]:
        """The configured tables (name → metadata: columns, types, bounds, privacy unit). No data.
        Embedded mode only."""
        return self._live().tables()

    # ------------------------------------------------------------ internals
    def _live(self) -> _Embedded | _Remote:
        session = self._session
        if session is None:
            raise InterfaceError("the connection is closed")
        return session

    def _budget_args(self, epsilon: float | None, delta: float | None) -> tuple[float | None, float | None]:
        return (self.epsilon if epsilon is None else epsilon, self.delta if delta is None else delta)

    def _run(self, sql: str, params: Any, epsilon: float | None, delta: float | None) -> _Result:
        session = self._live()
        if not isinstance(sql, str):
            raise ProgrammingError(f"the query must be a str, not {type(sql).__name__}")
        text, values = _placeholders_to_numbers(sql, params)
        eps, dlt = self._budget_args(epsilon, delta)
        return session.run(text, values, eps, dlt)


# ---------------------------------------------------------------------------
# Cursors


class Cursor:
    """A PEP 249 cursor. Not thread-safe (threadsafety 2): give each thread its own cursor."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._closed = False
        self._sets: list[_Result] = []
        self._result: _Result | None = None
        self._pos = 0

    # ------------------------------------------------------------ attributes
    @property
    def description(self) -> tuple[Column, ...] | None:
        """Name and type code (PostgreSQL OID, see :class:`TypeCode`) of each result column;
        None before a query and after statements that return no rows."""
        if self._result is None or self._result.columns is None:
            return None
        return _describe(self._result.columns)

    @property
    def rowcount(self) -> int:
        """Rows in the current result; -1 before a query and for statements that return no rows."""
        if self._result is None or self._result.columns is None:
            return -1
        return len(self._result.rows)

    @property
    def rownumber(self) -> int | None:
        """0-based index of the next row to fetch (PEP 249 extension)."""
        if self._result is None or self._result.columns is None:
            return None
        return self._pos

    @property
    def privacy(self) -> PrivacyReport | None:
        """After a DP answer: ``epsilon``/``delta`` spent, ``epsilon_remaining``/``delta_remaining``,
        for each output column its mechanism, noise ``scale`` and typical ``ci95`` half-width,
        ``cell_ci`` (per row, each cell's own 95% half-width or None) and ``notes`` (why cells are
        NULL, which columns the contribution bounds may bias). None before a query and for
        statements that read no private data."""
        return None if self._result is None else self._result.privacy

    @property
    def notices(self) -> list[str]:
        """Messages of the last query (as the wire server sends NOTICEs)."""
        return [] if self._result is None else list(self._result.notices)

    lastrowid = None

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ execution
    def execute(self, operation: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None, *,
                epsilon: float | None = None, delta: float | None = None) -> Cursor:
        """Run one statement (charged to the connection's analyst). ``epsilon``/``delta`` override
        the connection's per-query budget. Returns the cursor, so ``cur.execute(q).fetchall()`` works."""
        self._check()
        self._set_results([])
        result = self.connection._run(operation, parameters, epsilon, delta)
        self._set_results([result])
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any] | Mapping[str, Any]], *,
                    epsilon: float | None = None, delta: float | None = None) -> Cursor:
        """Run ``operation`` once per parameter set, each a separate query charged on its own. The
        results are kept as consecutive result sets: the first is current, ``nextset()`` moves on.
        If one fails, the exception propagates; the queries before it stay charged."""
        self._check()
        self._set_results([])
        results = [self.connection._run(operation, params, epsilon, delta) for params in seq_of_parameters]
        self._set_results(results)
        return self

    def nextset(self) -> bool | None:
        """Move to the next result set of ``executemany``; None when there is none."""
        self._check()
        if len(self._sets) <= 1:
            return None
        self._sets.pop(0)
        self._result, self._pos = self._sets[0], 0
        return True

    def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> None:
        raise NotSupportedError("privsql has no stored procedures")

    def setinputsizes(self, sizes: Any) -> None:
        self._check()

    def setoutputsize(self, size: int, column: int | None = None) -> None:
        self._check()

    # ------------------------------------------------------------ fetching
    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._rows()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        rows = self._rows()
        size = self.arraysize if size is None else size
        if size < 0:
            raise ProgrammingError("fetchmany size must be non-negative")
        out = rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows()
        out = rows[self._pos:]
        self._pos = len(rows)
        return out

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._closed = True
        self._set_results([])

    def __enter__(self) -> Self:
        self._check()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._live()

    def _set_results(self, results: list[_Result]) -> None:
        self._sets = results
        self._result = results[0] if results else None
        self._pos = 0

    def _rows(self) -> list[tuple[Any, ...]]:
        self._check()
        if self._result is None or self._result.columns is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows"
                                   if self._result is not None else "no results to fetch: execute a query first")
        return self._result.rows


# ---------------------------------------------------------------------------
# connect()

_REMOTE_PREFIXES = ("postgresql://", "postgres://")


def connect(dsn: str | None = None, *, config: str | os.PathLike[str] | Config | None = None,
            analyst: str | None = None, epsilon: float | None = None, delta: float | None = None,
            engine: Engine | None = None, **remote_options: Any) -> Connection:
    """Open a connection.

    Embedded (the engine runs in this process)::

        connect(config="config/privsql.yaml", analyst="alice")

    ``config`` is a path (default: ``$PRIVSQL_CONFIG``, else ``config/privsql.yaml``)
    or a :class:`privsql.config.Config`; connections to the same file share one
    engine, closed with the last of them. ``engine`` passes an engine you manage
    yourself (never closed here). ``analyst`` defaults to ``$PRIVSQL_ANALYST``,
    then to the config's ``defaults.analyst``.

    Remote (a running ``privsql serve``, through psycopg 3)::

        connect("postgresql://alice:secret@127.0.0.1:5433/privsql")

    ``dsn`` is a ``postgresql://`` URL or a libpq ``key=value`` string;
    ``remote_options`` (``password=``, ``connect_timeout=``, ...) go to
    ``psycopg.connect``; ``analyst`` is the user name.

    ``epsilon``/``delta``: the per-query budget of this connection (default: the
    config's ``defaults``), also settable later as attributes.
    """
    for label, value in (("epsilon", epsilon), ("delta", delta)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidParameter(f"{label} must be a number, not {type(value).__name__}")
    if dsn is not None:
        if not isinstance(dsn, str) or not (dsn.startswith(_REMOTE_PREFIXES) or "=" in dsn):
            raise InterfaceError(f"dsn must be a postgresql:// URL or a key=value string, not {dsn!r}; for "
                                 "embedded mode use connect(config=PATH, analyst=NAME)")
        if config is not None or engine is not None:
            raise InterfaceError("give a dsn (remote) or config=/engine= (embedded), not both")
        if analyst is not None:
            remote_options["user"] = analyst
        return Connection(_Remote(dsn, remote_options), epsilon=epsilon, delta=delta)
    if remote_options:
        raise InterfaceError(f"unknown arguments for embedded mode: {', '.join(sorted(remote_options))}")
    if engine is not None and config is not None:
        raise InterfaceError("give either config= or engine=, not both")
    release: Callable[[], None] | None = None
    if engine is None:
        try:
            engine, key = _open_engine(config)
        except PrivsqlError as exc:
            raise _translate(exc) from exc
        except Exception as exc:
            raise OperationalError(f"cannot start privsql: {type(exc).__name__}: {exc}") from exc
        release = _release_callback(key)
    try:
        name = analyst or os.environ.get("PRIVSQL_ANALYST") or engine.config.defaults.analyst
        if not name:
            raise InvalidAuthorization("no analyst given: pass analyst=NAME, set PRIVSQL_ANALYST, or set "
                                       "defaults.analyst in the config")
        _call(lambda: engine.analyst(name))  # type: ignore[union-attr]
    except BaseException:
        if release is not None:
            release()
        raise
    return Connection(_Embedded(engine, str(name)), epsilon=epsilon, delta=delta, release=release)


def _release_callback(key: Any) -> Callable[[], None]:
    return lambda: _engines.release(key)


__all__ = [  # noqa: RUF022 - grouped by kind, as PEP 249 lists them
    "apilevel", "threadsafety", "paramstyle", "connect", "Connection", "Cursor", "Column", "Explanation",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError", "IntegrityError",
    "InternalError", "ProgrammingError", "NotSupportedError", "QuerySyntaxError", "UndefinedTable",
    "UndefinedColumn", "DatatypeMismatch", "UndefinedParameter", "PrivacyRefused", "InvalidParameter",
    "BudgetExhausted", "InvalidAuthorization", "QueryCanceled", "error_from_sqlstate",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "BOOLEAN", "TypeCode", "TYPE_CODES",
    "Date", "Time", "Timestamp", "Binary", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks",
]
