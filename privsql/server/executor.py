"""Blocking work for the wire server: engine queries, EXPLAIN, describe and catalog answers.

Every method here may block (DuckDB, the budget store, the backend), so the
transport runs them on a thread pool; each returns an :class:`Outcome` or
column list, or raises a :class:`PrivsqlError`. Unexpected exceptions become a
generic internal error: their text could carry data values, so it is logged,
never sent to the client.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol, Sequence, TypeVar

from privsql.errors import PrivsqlError
from privsql.results import OutputColumn, PrivacyReport, QueryResult
from privsql.server import types as pgt
from privsql.server.cache import BoundedLRU
from privsql.server.catalog import Rewriter, SessionValues, ShadowCatalog
from privsql.server.outcome import Column, Outcome, rows_tag
from privsql.server.router import Plan

log = logging.getLogger("privsql.server")
T = TypeVar("T")


class EngineLike(Protocol):
    """The part of :class:`privsql.engine.Engine` the server uses."""

    def execute(self, sql: str, *, analyst: str, epsilon: float | None = None, delta: float | None = None,
                params: list | None = None) -> QueryResult: ...

    def describe(self, sql: str, *, params: list | None = None) -> list[OutputColumn]: ...

    def explain(self, sql: str, *, analyst: str, epsilon: float | None = None, delta: float | None = None,
                params: list | None = None) -> QueryResult: ...


class InternalError(PrivsqlError):
    sqlstate = "XX000"


def wire_columns(columns: Sequence[OutputColumn]) -> list[Column]:
    return [Column(c.name, pgt.RESULT_TYPES.get(c.type, pgt.TEXT)) for c in columns]


def privacy_notice(report: PrivacyReport) -> str:
    """The NoticeResponse text after a DP answer."""
    if report.cached:
        spent = "repeated query: cached answer, nothing spent"
    else:
        spent = f"spent epsilon={report.epsilon:g}" + (f", delta={report.delta:g}" if report.delta else "")
    left = f"remaining epsilon={report.epsilon_remaining:g}"
    if report.delta or report.delta_remaining:
        left += f", delta={report.delta_remaining:g}"
    return f"privsql: {spent}; {left}"


#: estimated bytes held per cached cell / per entry besides its SQL text
_CELL_BYTES = 64
_ENTRY_BYTES = 512


def guarded(what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; an unexpected exception becomes a generic InternalError (details only in the log)."""
    try:
        return fn()
    except PrivsqlError:
        raise
    except Exception as exc:  # noqa: BLE001 - never leak an unexpected message to the client
        log.exception("internal error during %s", what)
        raise InternalError(f"internal error during {what}; see the privsql server log") from exc


class Executor:
    """Runs planned statements against the engine or the shadow catalog."""

    def __init__(self, engine: EngineLike, catalog: ShadowCatalog) -> None:
        self.engine = engine
        self.catalog = catalog
        self._describe_cache = BoundedLRU(1024, 8 << 20)
        self._constant_cache = BoundedLRU(256, 8 << 20)

    # ---------------------------------------------------------------- engine

    def _outcome(self, result: QueryResult, tag: str | None = None) -> Outcome:
        notices = list(result.notices)
        if result.privacy is not None:
            # the engine may already word its own budget line; send one, built from the report
            notices = [n for n in notices if "remaining" not in n] + [privacy_notice(result.privacy)]
        return Outcome(tag or rows_tag("SELECT", len(result.rows)), wire_columns(result.columns),
                       list(result.rows), notices, privacy=result.privacy)

    def execute(self, sql: str, *, analyst: str, epsilon: float | None, delta: float | None,
                params: list | None) -> Outcome:
        """A DP query (or a refusal) through ``engine.execute``."""
        result = guarded("query execution", lambda: self.engine.execute(
            sql, analyst=analyst, epsilon=epsilon, delta=delta, params=params or None))
        return self._outcome(result)

    def explain(self, sql: str, *, analyst: str, epsilon: float | None, delta: float | None,
                params: list | None) -> Outcome:
        result = guarded("EXPLAIN", lambda: self.engine.explain(
            sql, analyst=analyst, epsilon=epsilon, delta=delta, params=params or None))
        return self._outcome(result, "EXPLAIN")

    def describe(self, sql: str, params: list | None = None) -> list[Column]:
        """Result columns of a DP query: no data touched, nothing charged."""
        cached = self._describe_cache.get(sql)
        if cached is not None:
            return list(cached)
        columns = wire_columns(guarded("describe", lambda: self.engine.describe(sql, params=params or None)))
        # output columns depend on the text, not the values
        self._describe_cache.put(sql, tuple(columns), len(sql) + _ENTRY_BYTES)
        return columns

    # --------------------------------------------------------------- catalog

    def cached_constant(self, plan: Plan) -> Outcome | None:
        """A constant query's answer computed before, or None (cheap: safe on the event loop)."""
        hit = self._constant_cache.get(plan.sql) if plan.constant else None
        if hit is None:
            return None
        columns, rows = hit
        return Outcome(rows_tag("SELECT", len(rows)), list(columns), list(rows))

    def run_catalog(self, plan: Plan, session: SessionValues, params: Sequence[Any] = ()) -> Outcome:
        """Answer a catalog or constant query from the shadow catalog."""
        assert plan.ast is not None
        sql = Rewriter(session).rewrite(plan.ast)
        try:
            columns, rows = guarded("catalog query", lambda: self.catalog.run(sql, params))
        except PrivsqlError as exc:
            log.info("catalog query not answered (%s): %s -- rewritten: %s", exc.message, plan.sql, sql)
            raise
        if plan.constant:
            cost = len(plan.sql) + _ENTRY_BYTES + _CELL_BYTES * len(columns) * (len(rows) + 1)
            self._constant_cache.put(plan.sql, (tuple(columns), tuple(rows)), cost)
        return Outcome(rows_tag("SELECT", len(rows)), columns, rows)
