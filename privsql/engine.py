"""The query pipeline, one entry point for every front end (CLI, DB-API, wire server).

    parse → validate (allow-list) → plan → reserve budget → rewrite → execute
          → noise (one vectorised call per measure) → post-process → ledger

Guarantees this module relies on and provides:
* every refusal (syntax, allow-list, bounds, budget) happens before the backend
  is touched and costs nothing;
* the budget is reserved atomically *before* the backend runs; once data may
  have been read, nothing is refunded (a failed query stays charged);
* only noisy measures leave this module; exact partial aggregates are dropped
  as soon as the noise is added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from sqlglot import exp

from privsql.accounting import BudgetStore, Cost, LedgerEntry, open_store
from privsql.accounting.policy import limits_for, mechanism_for, standing
from privsql.backends.base import Backend
from privsql.cancel import check_current
from privsql.config import AnalystConfig, Config, TableMeta, load_config
from privsql.display import readable, rounded_ci
from privsql.errors import (
    BackendError,
    InvalidParameter,
    PrivsqlError,
    QueryCanceled,
    StatementTooComplex,
    UnknownAnalyst,
    UnsupportedQuery,
)
from privsql.mechanisms import add_gaussian_noise, add_laplace_noise
from privsql.postprocess import (
    NoisyTable,
    build_output_query,
    column_accuracy,
    count_floor,
    empty_group_notes,
    empty_noisy_table,
    noisy_quantile,
    pair_count_ci,
    run_output_query,
)
from privsql.result_cache import cache_key, decode_result, encode_result
from privsql.results import OutputColumn, PrivacyReport, QueryResult
from privsql.sql.domains import expression_domain
from privsql.sql.fold import CLOCK_WORDS, fold_datetime
from privsql.sql.joins import JoinSource, flatten_joins
from privsql.sql.normalize import canonical_aggregates
from privsql.sql.parse import bind_parameters, parse_statement
from privsql.sql.plan import PAIR_BITS, DPPlan, Measure, OutputAgg, build_plan
from privsql.sql.rewrite import rewrite
from privsql.sql.subquery import SubquerySource, flatten_subquery
from privsql.sql.validate import CheckedQuery, check_query, output_name

#: δ spent on releasing groups whose keys have no public domain when neither the
#: query nor ``defaults.delta`` gives one.
DEFAULT_THRESHOLD_DELTA = 1e-7
DEFAULT_QUERY_TIMEOUT = 300.0
PLAN_CACHE_SIZE = 256
#: the plan cache is also bounded by the statements' size: a parsed and planned statement holds
#: ~400 bytes of sqlglot trees per character of SQL, so 128 Ki characters in all is ~50 MB, and a
#: statement over 16 Ki characters is planned afresh each time (never cached)
PLAN_CACHE_CHARS = 128 * 1024
PLAN_CACHE_MAX_STATEMENT = 16 * 1024
#: what the analyst sees when the backend fails after the reservation: one fixed text, never the
#: backend's own (which could depend on the data, name the host, or reveal which row failed)
BACKEND_FAILURE = ("the query failed in the backend; its budget stays spent (the operator's log has the "
                   "details)")
log = logging.getLogger("privsql.engine")


@dataclass
class PreparedQuery:
    """A checked and planned query: everything known before any data is read."""

    sql: str  # normalised SQL (bound parameters), hashed into the ledger
    checked: CheckedQuery
    plan: DPPlan | None  # None: a query over a public table, answered exactly and free
    source: JoinSource | SubquerySource | None = None  # a join or per-person sub-query, as one virtual table
    sql_template: str | None = field(default=None, repr=False)  # backend SQL with the sentinel salt
    output_query: tuple[str, list[int]] | None = field(default=None, repr=False)
    columns: list[OutputColumn] | None = None  # result columns, known before any data is read

    def output(self) -> tuple[str, list[int]]:
        """The post-processing query over noisy measures (built once per plan)."""
        if self.output_query is None:
            assert self.plan is not None
            self.output_query = build_output_query(self.checked, self.plan)
        return self.output_query

    @property
    def sql_hash(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class BudgetStatus:
    analyst: str
    epsilon_total: float
    delta_total: float
    epsilon_spent: float  # for zCDP analysts: the ε of the total ρ (tight conversion)
    delta_spent: float
    queries: int
    accounting: str = "pure"
    rho_spent: float = 0.0

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon_total - self.epsilon_spent)

    @property
    def delta_remaining(self) -> float:
        return max(0.0, self.delta_total - self.delta_spent)


def open_backend(config: Config) -> Backend:
    kind = config.backend["kind"]
    if kind == "duckdb":
        from privsql.backends.duckdb_backend import DuckDBBackend

        return DuckDBBackend(config)
    if kind == "postgres":
        from privsql.backends.postgres_backend import PostgresBackend  # type: ignore[import-not-found]

        return PostgresBackend(config)  # type: ignore[no-any-return]
    from privsql.backends.spark_backend import SparkBackend  # type: ignore[import-not-found]

    return SparkBackend(config)  # type: ignore[no-any-return]


def open_budget_store(config: Config) -> BudgetStore:
    s = config.budget_store
    if s["kind"] == "sqlite":
        return open_store("sqlite", path=config.resolve_path(s["path"]))
    return open_store("postgres", dsn=s["dsn"], schema=s.get("schema", "privsql"))


class Engine:
    """Answers aggregate SQL with differential privacy and charges the analyst. Thread-safe."""

    def __init__(self, config: Config, *, backend: Backend | None = None, store: BudgetStore | None = None) -> None:
        self.config = config
        self.backend = backend or open_backend(config)
        try:
            self.store = store or open_budget_store(config)
        except Exception:
            self.backend.close()
            raise
        self.query_timeout = float(config.backend.get("query_timeout", DEFAULT_QUERY_TIMEOUT))
        cache_settings = config.raw.get("cache") or {}
        self.cache_enabled = bool(cache_settings.get("enabled", True))
        self._closed = threading.Event()
        self._plans: OrderedDict[tuple, PreparedQuery] = OrderedDict()
        self._plans_lock = threading.Lock()
        self._plan_chars = 0  # characters of SQL held by the plan cache
        self._salt_sentinel = secrets.randbits(62) | (1 << 61)

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Engine:
        return cls(load_config(path))

    # ------------------------------------------------------------------ helpers
    def analyst(self, name: str) -> AnalystConfig:
        a = self.config.analysts.get(name)
        if a is None:
            raise UnknownAnalyst(f"unknown analyst {name!r}: analysts are declared in the config")
        return a

    def prepare(self, sql: str, *, params: Sequence[Any] | Mapping[str, Any] | None = None,
                epsilon: float | None = None, delta: float | None = None,
                analyst: AnalystConfig | None = None) -> PreparedQuery:
        """Parse, check and plan a query (with the analyst's mechanism). Touches neither data nor budget.

        Plans are cached by (SQL text, parameters, ε, δ, mechanism): a plan depends on nothing else,
        except the plans of statements that may read the clock (CURRENT_DATE, NOW()), never cached."""
        if CLOCK_WORDS.search(sql):  # the plan holds the date or time it was made at: never cached
            return self._prepare(sql, params=params, epsilon=epsilon, delta=delta, analyst=analyst)
        try:
            key = (sql, _params_key(params), epsilon, delta, mechanism_for(analyst))
            hash(key)
        except TypeError:
            return self._prepare(sql, params=params, epsilon=epsilon, delta=delta, analyst=analyst)
        with self._plans_lock:
            cached = self._plans.get(key)
            if cached is not None:
                self._plans.move_to_end(key)
                return cached
        prepared = self._prepare(sql, params=params, epsilon=epsilon, delta=delta, analyst=analyst)
        if len(sql) > PLAN_CACHE_MAX_STATEMENT:
            return prepared
        with self._plans_lock:
            if key not in self._plans:
                self._plans[key] = prepared
                self._plan_chars += len(sql)
            while len(self._plans) > PLAN_CACHE_SIZE or self._plan_chars > PLAN_CACHE_CHARS:
                old_key, _ = self._plans.popitem(last=False)
                self._plan_chars -= len(old_key[0])
        return prepared

    def _prepare(self, sql: str, *, params: Sequence[Any] | Mapping[str, Any] | None,
                 epsilon: float | None, delta: float | None, analyst: AnalystConfig | None) -> PreparedQuery:
        try:
            prepared = self._plan(sql, params=params, epsilon=epsilon, delta=delta, analyst=analyst)
            if prepared.plan is not None:
                prepared.columns = self._check_output(prepared)
            return prepared
        except RecursionError:
            raise StatementTooComplex("statement too complex: the query is nested too deeply") from None
        except ArithmeticError as exc:  # planning reads no data: its numbers come from the query and config
            raise UnsupportedQuery(f"cannot plan this query: a number in it is out of range ({exc})") from None

    def _check_output(self, prepared: PreparedQuery) -> list[OutputColumn]:
        """Run the post-processing on an empty table once, so a SELECT list that cannot be
        computed is refused before any budget is reserved; returns the result columns."""
        assert prepared.plan is not None
        out_query, ci_index = prepared.output()
        try:
            return run_output_query(out_query, ci_index, prepared.plan, empty_noisy_table(prepared.plan))[0]
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise UnsupportedQuery(f"the SELECT list cannot be computed from the aggregates: {first}") from None

    def _plan(self, sql: str, *, params: Sequence[Any] | Mapping[str, Any] | None,
              epsilon: float | None, delta: float | None, analyst: AnalystConfig | None) -> PreparedQuery:
        tree = canonical_aggregates(fold_datetime(bind_parameters(parse_statement(sql), params)))
        source: JoinSource | SubquerySource | None = None
        flat = tree
        if isinstance(tree, exp.Select):
            flat, source = flatten_joins(tree, self.config)
            if source is None:
                flat, source = flatten_subquery(flat, self.config)
        checked = check_query(flat, self.config, source.table if source is not None else None)
        if not checked.table.is_private:
            return PreparedQuery(sql=tree.sql(dialect="postgres"), checked=checked, plan=None)
        eps = self.config.defaults.epsilon if epsilon is None else float(epsilon)
        if delta is None:
            delta = self.config.defaults.delta or DEFAULT_THRESHOLD_DELTA
        try:
            plan = build_plan(checked, epsilon=eps, delta=float(delta), defaults=self.config.defaults,
                              mechanism=mechanism_for(analyst), derive_domain=self._derive_domain)
        except (ValueError, OverflowError) as exc:
            raise InvalidParameter(f"cannot plan this query at ε={eps:g}, δ={delta:g}: {exc}") from None
        return PreparedQuery(sql=tree.sql(dialect="postgres"), checked=checked, plan=plan, source=source)

    def _derive_domain(self, expr: exp.Expression, table: TableMeta, *,
                       where: exp.Expression | None = None) -> tuple[tuple[Any, ...], str] | None:
        """A key expression's public domain in the active backend's semantics (reads no private data);
        with ``where``, the part of it that passes the WHERE's tests of that key.

        DuckDB and Spark compute in DOUBLE, which the isolated DuckDB reproduces; PostgreSQL computes
        in NUMERIC (and compares text in its collation), so the domain is evaluated there, over
        literal inputs."""
        target = self.backend.target
        run = None if target.safe_numeric.upper() == "DOUBLE" else (lambda sql: self.backend.run(sql, timeout=10.0))
        return expression_domain(expr, table, target, run=run, where=where)

    def backend_sql(self, prepared: PreparedQuery, salt: int = 0) -> str:
        """The bounded per-person query for the backend (``salt`` orders each person's groups).

        The SQL is generated once per plan with a sentinel salt and the real salt substituted
        as text (the sentinel is a random 62-bit number, checked to occur exactly once)."""
        template = prepared.sql_template
        if template is None:
            template = prepared.sql_template = self._generate_sql(prepared, self._salt_sentinel)
        sentinel = str(self._salt_sentinel)
        if template.count(sentinel) == 1:
            return template.replace(sentinel, str(salt))
        if sentinel not in template:
            return template  # no group bounding: the salt is not used
        return self._generate_sql(prepared, salt)

    def _generate_sql(self, prepared: PreparedQuery, salt: int) -> str:
        assert prepared.plan is not None
        if prepared.source is not None:
            source = prepared.source.relation(self.backend.table_ref, self.backend.target)
        else:
            source = self.backend.table_ref(prepared.plan.table)
        tree = rewrite(prepared.plan, self.backend.target, table_ref=source, salt=salt)
        return tree.sql(dialect=self.backend.target.dialect)

    # ------------------------------------------------------------------ public API
    def execute(self, sql: str, *, analyst: str, epsilon: float | None = None, delta: float | None = None,
                params: Sequence[Any] | Mapping[str, Any] | None = None) -> QueryResult:
        """Answer one aggregate query with DP noise, charging ``analyst``.

        Raises a PrivsqlError subclass (with SQLSTATE) for every refusal; a refusal
        before the reservation costs nothing. A repeat of an earlier query (same
        normalised SQL, ε, δ and plan) returns the earlier answer for free.
        """
        who = self.analyst(analyst)
        prepared = self.prepare(sql, params=params, epsilon=epsilon, delta=delta, analyst=who)
        if prepared.plan is None:
            return self._public(prepared)
        plan = prepared.plan
        plan_sql = self.backend_sql(prepared)
        key = cache_key(prepared.sql, plan_sql, plan.epsilon, plan.delta) if self.cache_enabled else None
        if key is not None:
            cached = self._cached(who, key, prepared)
            if cached is not None:
                return cached
        backend_sql = self.backend_sql(prepared, salt=secrets.randbits(63)) if plan.bound_groups else plan_sql
        cost = Cost(epsilon=0.0 if plan.mechanism == "gaussian" else plan.epsilon, delta=plan.delta, rho=plan.rho)
        check_current()  # cancelled while planning: refused before the reservation, so not charged
        ledger_id = self.store.reserve(who.name, cost, limits_for(who), sql_hash=prepared.sql_hash,
                                       sql_text=prepared.sql)
        try:
            exact = self.run_reserved(backend_sql, analyst=who.name)
            noisy = release(plan, exact)
            del exact
            out_query, ci_index = prepared.output()
            try:
                columns, rows, cis = run_output_query(out_query, ci_index, plan, noisy)
            except duckdb.Error as exc:  # depends on noisy values only, so its message may be shown
                raise UnsupportedQuery("the SELECT list could not be computed from the noisy aggregates: "
                                       f"{str(exc).splitlines()[0]}") from None
        except BaseException as exc:
            try:
                self.store.finish(ledger_id, "failed")
            except PrivsqlError:
                pass  # the charge is committed; only the ledger outcome is missing
            if isinstance(exc, Exception) and not isinstance(exc, PrivsqlError):  # a bug: say no more than that
                raise _generic_failure(who.name, exc, backend_sql) from None
            raise
        accuracy = column_accuracy(columns, ci_index, cis, prepared.checked, plan)
        provisional = QueryResult(columns=columns, rows=rows, cell_ci=cis, privacy=PrivacyReport(
            analyst=who.name, epsilon=plan.epsilon, delta=plan.delta, epsilon_remaining=0.0, delta_remaining=0.0,
            columns=accuracy, cell_ci=tuple(cis),
            notes=clipping_notes(columns, prepared.checked, plan) + empty_group_notes(columns, rows,
                                                                                     prepared.checked, plan)))
        cache = (key, encode_result(provisional)) if key is not None else None
        now = standing(who, self.store.complete(ledger_id, who.name, "answered", cache=cache))
        report = dataclasses.replace(provisional.privacy, epsilon_remaining=now.epsilon_remaining,
                                     delta_remaining=now.delta_remaining)
        notice = (f"privsql: spent ε={plan.epsilon:g}" + (f", δ={plan.delta:g}" if plan.delta else "")
                  + (f" (ρ={plan.rho:.4g}, zCDP)" if plan.rho else "")
                  + f"; remaining ε={report.epsilon_remaining:.6g}, δ={report.delta_remaining:.3g}")
        return QueryResult(columns=columns, rows=rows, privacy=report, notices=[notice], cell_ci=cis)

    def run_reserved(self, backend_sql: str, *, analyst: str) -> list[tuple[Any, ...]]:
        """Run a reserved query on the backend. Any failure but a cancellation reaches the analyst
        as one fixed BackendError (no backend text, class or host); the operator's log gets the
        details and the SQL. Privacy rests on the rewrite being total (no row can make it fail):
        this only keeps a failure that should not happen from saying more than that it happened."""
        try:
            return self.backend.run(backend_sql, timeout=self.query_timeout)
        except QueryCanceled:
            raise
        except Exception as exc:
            raise _generic_failure(analyst, exc, backend_sql) from None

    def _public(self, prepared: PreparedQuery) -> QueryResult:
        """A query over a public table: no personal data, so exact and free."""
        columns, rows = self.backend.run_with_columns(self._public_sql(prepared), timeout=self.query_timeout)
        return QueryResult(columns=columns, rows=rows, privacy=None, notices=[
            f"privsql: {prepared.checked.table.name} is a public table: exact answer, no budget spent"])

    def _public_sql(self, prepared: PreparedQuery, *, no_rows: bool = False) -> str:
        """The analyst's query on the backend's public table, with PostgreSQL output names."""
        tree = prepared.checked.select.copy()
        tree.set("expressions", [item if isinstance(item, exp.Alias) or item.is_star else
                                 item.as_(output_name(item), quoted=True) for item in tree.expressions])
        if no_rows:
            tree.set("limit", exp.Limit(expression=exp.Literal.number(0)))
        for node in list(tree.find_all(exp.Table)):
            node.replace(self.backend.table_ref(prepared.checked.table).as_(node.alias_or_name))
        return tree.sql(dialect=self.backend.target.dialect)

    def _cached(self, who: AnalystConfig, key: str, prepared: PreparedQuery) -> QueryResult | None:
        found = self.store.replay(who.name, key, sql_hash=prepared.sql_hash, sql_text=prepared.sql)
        if found is None:
            return None
        blob, spent = found
        now = standing(who, spent)
        try:
            return decode_result(blob, analyst=who.name, epsilon_remaining=now.epsilon_remaining,
                                 delta_remaining=now.delta_remaining)
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable entry is ignored: the query is answered (and charged) afresh

    def describe(self, sql: str, *, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[OutputColumn]:
        """The result columns of a query, without reading data or spending budget."""
        prepared = self.prepare(sql, params=params)
        if prepared.plan is None:
            return self.backend.run_with_columns(self._public_sql(prepared, no_rows=True))[0]
        assert prepared.columns is not None
        return prepared.columns

    def explain(self, sql: str, *, analyst: str | None = None, epsilon: float | None = None,
                delta: float | None = None, params: Sequence[Any] | Mapping[str, Any] | None = None,
                verbose: bool = True) -> QueryResult:
        """The DP plan as rows (item, detail): cost, expected 95% error per column and, when
        ``verbose``, each internal measure and the backend SQL. Spends nothing and reads no data."""
        who = self.analyst(analyst) if analyst is not None else None
        prepared = self.prepare(sql, params=params, epsilon=epsilon, delta=delta, analyst=who)
        if prepared.plan is None:
            rows = [("cost", "none: a public table, answered exactly"), ("table", prepared.checked.table.name)]
            return QueryResult(columns=[OutputColumn("item", "text"), OutputColumn("detail", "text")], rows=rows)
        written = _written_items(bind_parameters(parse_statement(sql), params))
        rows = explain_rows(prepared, self.describe(sql, params=params), self.backend_sql(prepared), verbose=verbose,
                            written=written)
        return QueryResult(columns=[OutputColumn("item", "text"), OutputColumn("detail", "text")], rows=rows)

    def epsilon_for_error(self, sql: str, target: float, *, analyst: str | None = None,
                          params: Sequence[Any] | Mapping[str, Any] | None = None,
                          reference_rows: int | None = None) -> float:
        """The smallest ε (to 3 significant digits, rounded up) at which every noisy COUNT/SUM
        column of the query has a 95% error of at most ``target`` and, given ``reference_rows``,
        so does every AVG/VAR column in a group of that many rows (``error_at``: the largest CI the
        release can state there, whatever the values). Reads no data."""
        if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
            raise InvalidParameter(f"target error must be a positive number, not {target!r}")
        if reference_rows is not None and not (isinstance(reference_rows, int) and reference_rows > 0):
            raise InvalidParameter(f"reference rows must be a positive integer, not {reference_rows!r}")
        who = self.analyst(analyst) if analyst is not None else None

        def worst(eps: float) -> float:
            prepared = self.prepare(sql, params=params, epsilon=eps, analyst=who)
            if prepared.plan is None:
                return 0.0
            plan = prepared.plan
            errors = [error_at(o, plan, reference_rows or 1) for o in plan.outputs
                      if o.func in (*_COUNTS, "sum") or (reference_rows and o.func.startswith(("avg", "var")))]
            if not errors:
                raise InvalidParameter(_no_target_message(plan, reference_rows))
            return max(e for e in errors if e is not None)

        eps = float(f"{worst(1.0) / target:.3g}")  # noise scale is proportional to 1/ε
        limit = self.config.defaults.max_epsilon_per_query
        while eps <= limit and (error := worst(eps)) > target:  # AVG's error is capped at the range: step up
            eps = float(f"{eps * max(1.01, error / target):.3g}")
        if eps > limit:
            raise InvalidParameter(f"a 95% error of {target:g} needs ε ≈ {eps:.3g}, above the per-query maximum "
                                   f"{limit:g}")
        return eps

    def budget(self, analyst: str) -> BudgetStatus:
        who = self.analyst(analyst)
        spent = self.store.spent(who.name)
        now = standing(who, spent)
        return BudgetStatus(who.name, who.epsilon, who.delta, now.epsilon_spent, now.delta_spent, spent.queries,
                            who.accounting, now.rho_spent)

    def ledger(self, analyst: str | None = None, limit: int = 20) -> list[LedgerEntry]:
        if analyst is not None:
            self.analyst(analyst)
        return self.store.ledger(analyst, limit)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.store.close()
        finally:
            self.backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _generic_failure(analyst: str, exc: BaseException, backend_sql: str) -> BackendError:
    """Log a failure after the reservation for the operator (class, text, cause, SQL) and return the
    one fixed error the analyst sees instead."""
    cause = exc.__cause__ or exc.__context__ or exc
    log.error("failure after the reservation for analyst %s: %s: %s (%s: %s); sql: %s", analyst, type(exc).__name__,
              exc, type(cause).__name__, cause, backend_sql)
    return BackendError(BACKEND_FAILURE)


def _params_key(params: Sequence[Any] | Mapping[str, Any] | None) -> Any:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return tuple(sorted((k, type(v).__name__, v) for k, v in params.items()))
    return tuple((type(v).__name__, v) for v in params)


def _as_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value)  # Decimal from PostgreSQL NUMERIC sums: exact integers


def add_noise(plan: DPPlan, values: np.ndarray, scale: float) -> np.ndarray:
    """The plan's mechanism on one vector of exact integers (one vectorised call)."""
    if plan.mechanism == "gaussian":
        return add_gaussian_noise(values, scale)
    return add_laplace_noise(values, scale)


def release(plan: DPPlan, exact_rows: list[tuple[Any, ...]]) -> NoisyTable:
    """Add noise to the exact measures and decide which groups are released.

    Public key domains: every declared key combination is released (noise on 0
    where the data has no row), no δ. Otherwise: a group is released only if
    its noisy count of people reaches the plan's threshold (this costs δ).
    Quantiles are then post-processed from their noisy histograms.
    """
    nkeys = len(plan.keys)
    offsets: dict[str, slice] = {}
    width = 0
    for m in plan.measures:
        offsets[m.name] = slice(width, width + len(m.columns))
        width += len(m.columns)
    domain = plan.public_domain if nkeys else [()]
    if domain is not None:
        index = {key: i for i, key in enumerate(domain)}
        exact = np.zeros((len(domain), width), dtype=np.int64)
        filled = np.zeros(len(domain), dtype=bool)
        for row in exact_rows:
            pos = index.get(tuple(row[:nkeys]))
            if pos is None:
                continue  # keys outside the domain were filtered in SQL; never released
            if filled[pos]:  # two backend groups, one domain value: would break the per-group bound
                raise BackendError(BACKEND_FAILURE)  # cannot happen: domains come back as the backend's values
            filled[pos] = True
            exact[pos] = [_as_int(v) for v in row[nkeys:]]
        keys = list(domain)
    else:
        keys = [tuple(row[:nkeys]) for row in exact_rows]
        exact = np.array([[_as_int(v) for v in row[nkeys:]] for row in exact_rows], dtype=np.int64).reshape(
            len(exact_rows), width)
        t = offsets[plan.threshold_measure].start  # type: ignore[index]
        noisy_people = add_noise(plan, exact[:, t], plan.measure(plan.threshold_measure).scale)  # type: ignore[arg-type]
        keep = noisy_people >= plan.threshold
        exact = exact[keep]
        exact[:, t] = noisy_people[keep]
        keys = [k for k, kept in zip(keys, keep) if kept]
    measures: dict[str, np.ndarray] = {}
    histograms: dict[str, np.ndarray] = {}
    for m in plan.measures:
        block = exact[:, offsets[m.name]]
        if m.kind == "pair":  # (A, C) → (A, B = C·2^PAIR_BITS − A): both noised alike, then (Â, N̂)
            pair = np.stack([block[:, 0], block[:, 1] * 2**PAIR_BITS - block[:, 0]], axis=1)
            noisy = add_noise(plan, pair.reshape(-1), m.scale).reshape(pair.shape) if m.scale > 0 else pair
            measures[f"{m.name}_a"] = noisy[:, 0].astype(np.float64) * m.unit
            measures[f"{m.name}_n"] = noisy.sum(axis=1).astype(np.float64) / 2**PAIR_BITS
            continue
        if m.scale > 0 and (m.name != plan.threshold_measure or domain is not None):
            block = add_noise(plan, block.reshape(-1), m.scale).reshape(block.shape)
        if m.kind == "hist":
            histograms[m.name] = block.astype(np.float64) * m.unit
        else:
            measures[m.name] = block[:, 0].astype(np.float64) * m.unit
    for out in plan.outputs:
        if out.func == "quantile":
            m = plan.measure(out.measures[0])
            measures[out.derived] = noisy_quantile(histograms[m.name], m, out.param)  # type: ignore[index,arg-type]
    key_columns = [[None if k[i] is None else str(k[i]) for k in keys] for i in range(nkeys)]
    return NoisyTable(keys=key_columns, measures=measures)


#: group sizes (rows) at which explain states the error of aggregates whose error depends on it
REFERENCE_ROWS = (100, 1_000, 10_000)
_COUNTS = ("count", "count_expr", "count_units", "count_distinct")


def _written_items(tree: exp.Expression) -> list[str]:
    """The SELECT items as the analyst wrote them (before MEDIAN becomes QUANTILE, aliases removed)."""
    items = tree.expressions if isinstance(tree, exp.Select) else []
    return [(i.unalias() if isinstance(i, exp.Alias) else i).sql(dialect="postgres") for i in items]


def explain_rows(prepared: PreparedQuery, columns: list[OutputColumn], backend_sql: str, *,
                 verbose: bool = True, written: list[str] | None = None) -> list[tuple[str, str]]:
    """The plan as (item, detail) rows: cost, privacy unit, groups, each output column (named as the
    analyst wrote it) with its expected 95% error in numbers; with ``verbose`` also each internal
    measure and the backend SQL."""
    plan = prepared.plan
    assert plan is not None
    rows = [("cost", f"ε = {plan.epsilon:g}, δ = {plan.delta:g}"
             + (f" (charged as ρ = {plan.rho:.4g} under zCDP)" if plan.rho else ""))]
    rows.append(("privacy unit", f"{plan.table.privacy_unit} (table {plan.table.name}); a person counts in at most "
                 f"{plan.max_groups} group(s) with at most {plan.max_rows} row(s) each"))
    if plan.keys:
        desc = [f"{k.name}: " + (f"public domain of {len(k.domain)} values" if k.domain is not None else
                "released above a noisy threshold of " f"{readable(plan.threshold or 0.0)} people")
                for k in plan.keys]
        rows.append(("groups", "; ".join(desc)))
    if verbose:
        for m in plan.measures:
            budget = f"ρ = {m.epsilon:.4g}" if m.mechanism == "gaussian" else f"ε = {m.epsilon:.4g}"
            noise = (f"{m.mechanism.capitalize()} scale {readable(m.scale * m.unit, 4)}, {budget}, 95% error "
                     f"±{rounded_ci(m.ci95)}" if m.scale > 0 else "no noise needed (data-independent)")
            rows.append((f"measure {m.name}", f"{_measure_text(m)}: {noise}"))
    items = prepared.checked.select.expressions
    texts = written if written is not None and len(written) == len(items) else _written_items(prepared.checked.select)
    for col, item, text in zip(columns, items, texts):
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        label = col.name if text == col.name else f"{col.name} = {text}"
        rows.append((f"column {label}", _column_error(inner, plan)))
    if verbose:
        rows.append(("backend sql", backend_sql))
    return rows


def error_at(out: OutputAgg, plan: DPPlan, rows: float) -> float | None:
    """The 95% error of one aggregate in a group of ``rows`` rows, from the plan alone: exact for
    COUNT/SUM (any group), for AVG and VAR the largest per-cell CI the release can state at that
    noisy count (worst case over the data's values); None where it depends on the data otherwise
    (STDDEV, quantiles, COVAR/CORR). Reads no data."""
    first = plan.measure(out.measures[0])
    if out.func in _COUNTS or out.func == "sum":
        return pair_count_ci(first) if first.kind == "pair" else first.ci95
    if out.lower is None or out.upper is None:
        return None
    width, half = out.upper - out.lower, (out.upper - out.lower) / 2
    if out.func == "avg":  # pair: half·√((u − m)² + (m − l)²)/(width·N) ≤ half/N; constant interval: exact
        return min(first.ci95 / rows, width) if first.kind == "pair" else 0.0
    if out.func.startswith(("var", "stddev")):  # _variance_ci's terms at |mean| ≤ h, |E[y²] − 2mean²| ≤ 2h²
        s, q, n = (plan.measure(name) for name in out.measures)
        var = min(math.hypot(q.ci95, 2 * s.ci95 * half, 2 * n.ci95 * half**2) / rows, half**2)
        if out.func.startswith("stddev"):  # _sqrt_ci at the reference standard deviation
            sd = reference_sd(out)
            return min(max(math.sqrt(sd**2 + var) - sd, sd - math.sqrt(max(sd**2 - var, 0.0))), half)
        return var
    return None


def reference_sd(out: OutputAgg) -> float:
    """The standard deviation at which explain states STDDEV's error: a quarter of the value range."""
    assert out.lower is not None and out.upper is not None
    return (out.upper - out.lower) / 4


#: aggregates that add up rows or people, so dropping a person's extra rows or groups lowers them
_TOTALS = (*_COUNTS, "sum")


def clipping_bias(out: OutputAgg, plan: DPPlan) -> str | None:
    """Why a COUNT/SUM column may be biased by the contribution bounds, or None. From the plan and
    config only (it says what the bounds could do, not what they did), so it reveals nothing."""
    if out.func not in _TOTALS:
        return None
    rows = plan.per_person and out.func != "count_units"  # COUNT(DISTINCT unit) counts a person once anyway
    caps = ([f"at most {plan.max_rows} row(s) per group (max_rows)"] if rows else []) + \
        ([f"in at most {plan.max_groups} group(s) (max_groups)"] if plan.bound_groups else [])
    if not caps:
        return None
    low = " low" if out.func != "sum" or (out.lower is not None and out.lower >= 0) else ""  # mixed signs: either way
    return f"may be biased{low}: each person counts {' and '.join(caps)}, so totals miss what people have beyond that"


def clipping_notes(columns: list[OutputColumn], query: CheckedQuery, plan: DPPlan) -> tuple[str, ...]:
    """One note per COUNT/SUM output column the contribution bounds could bias (``clipping_bias``)."""
    from privsql.sql.validate import AGG_META

    notes = []
    for col, item in zip(columns, query.select.expressions):
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        bias = clipping_bias(plan.outputs[inner.meta[AGG_META]], plan) if isinstance(inner, exp.AggFunc) else None
        if bias is not None:
            notes.append(f"{col.name}: {bias}")
    return tuple(notes)


def _no_target_message(plan: DPPlan, reference_rows: int | None) -> str:
    """Why a query has no column a target error can be met for, and what to use instead."""
    if not reference_rows and any(o.func.startswith(("avg", "var")) for o in plan.outputs):
        return ("the error of AVG and VAR depends on how many rows a group has: give the smallest group size "
                "you need that error for (--reference-rows N, or reference_rows=N), or add a COUNT or SUM")
    return ("a target error needs a COUNT, SUM, AVG or VAR in the query (the error of STDDEV, quantiles, MIN/MAX "
            "and COVAR/CORR depends on the data): compare `privsql explain` at a few values of --epsilon")


def _at_reference_rows(out: OutputAgg, plan: DPPlan) -> str:
    """``±a at N = 100, ±b at N = 1,000, ...`` for an aggregate whose error shrinks with the group."""
    return ", ".join(f"±{rounded_ci(error_at(out, plan, n) or 0.0)} with {n:,} rows" for n in REFERENCE_ROWS)


def _column_error(node: exp.Expression, plan: DPPlan) -> str:
    """One output column's expected 95% error, in numbers."""
    from privsql.sql.validate import AGG_META

    if not isinstance(node, exp.AggFunc):
        if node.find(exp.AggFunc):
            return "computed from noisy aggregates (post-processing): no CI of its own"
        return "group key (exact, no noise)"
    out = plan.outputs[node.meta[AGG_META]]
    first = plan.measure(out.measures[0])
    floor = count_floor(out, plan)
    empty = f"; NULL where the group's noisy count is below {rounded_ci(floor)} rows" if floor else ""
    if out.func == "quantile":
        what = {0.0: "MIN", 1.0: "MAX"}.get(out.param, f"the {out.param:g} quantile")  # type: ignore[arg-type]
        return (f"{what} read off a noisy histogram: error about one bin ({readable(first.width)}) where data is "
                "dense, more where it is sparse; no CI")
    if out.func in ("covar_pop", "covar_samp", "corr"):
        return "computed from noisy centred sums (post-processing): no CI, its error depends on the data"
    if out.func in _TOTALS:
        free = " (the AVG pair's count, free with the AVG)" if first.kind == "pair" else ""
        bias = clipping_bias(out, plan)
        return (f"{first.mechanism.capitalize()} noise, 95% error ±{rounded_ci(error_at(out, plan, 1) or 0.0)}{free}"
                + (f"; {bias}" if bias else ""))
    if out.func == "avg" and first.kind != "pair":
        return f"AVG over a constant interval: exact where the group has rows{empty}"
    if out.func == "avg" or out.func.startswith("var"):
        return f"95% error depends on the group's row count: at most {_at_reference_rows(out, plan)}{empty}"
    return (f"95% error depends on the group's row count and spread: at a standard deviation of "
            f"{readable(reference_sd(out))}, {_at_reference_rows(out, plan)}{empty}")


def _measure_text(m: Measure) -> str:
    arg = m.arg.sql(dialect="postgres") if m.arg is not None else ""
    if m.kind == "rows":
        return "row count"
    if m.kind == "units":
        return "count of people"
    if m.kind == "pair":
        return (f"sums of ({arg} − {m.clamp_lo:g}) and ({m.clamp_hi:g} − {arg}), {arg} clamped to "
                f"[{m.clamp_lo:g}, {m.clamp_hi:g}], released as a pair (their total gives the count)")
    if m.kind == "hist":
        return (f"histogram of {arg} over [{m.clamp_lo:g}, {m.clamp_hi:g}] in {m.bins} bins of width {m.width:g} "
                "(rows per bin)")
    if m.kind == "nonnull":
        return f"count of non-NULL {arg}"
    if m.kind == "distinct":
        return f"count of distinct {arg}, at most {m.person_hi:g} values per person and group"
    clamp = f"clamped to [{m.clamp_lo:g}, {m.clamp_hi:g}]"
    if m.kind == "csum":
        return f"sum of ({arg} − {m.center:g}), {arg} {clamp}"
    if m.kind == "csq":
        return f"sum of ({arg} − {m.center:g})², {arg} {clamp}"
    return f"sum of {arg} {clamp}"


__all__ = ["Engine", "PreparedQuery", "BudgetStatus", "release"]
