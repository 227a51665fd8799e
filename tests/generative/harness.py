"""Running generated queries on neighbouring data sets and judging the outcomes.

An *outcome* is what the analyst can see apart from the noisy numbers: answered, refused
(SQLSTATE and message, before any data is read) or failed (an error after the budget was
reserved: BackendError, QueryCanceled, or any other exception). The differential property:

* **no failure ever** on D, on D minus one person, or on the empty table;
* the outcome on D equals the outcome on every neighbour checked.

Why checking D, the empty table and a rotating sample of D − r suffices (see ``check_batch``):
refusals come from ``Engine.prepare`` (parse, allow-list, plan), which never reads data, so a
query refused on D is refused identically on every data set. For a query that passes
``prepare``, the backend evaluates the row expressions row by row (WHERE, keys, arguments, join
conditions, the per-person sub-query), so a row-level error on any subset of D fires on D too;
checking D covers every D − r for those. What D does not cover is an error that needs *fewer*
rows (an empty group or table: divisions by counts, empty aggregates, no rows to convert) or
depends on the set of people (a group bound, a threshold): the empty table and D − r for a
rotating adversarial r (query k removes adversarial person k mod |A|, then k+1 ...) cover those.
Group bounding uses a fixed salt, so a run is deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

import privsql.engine as engine_module
from privsql.engine import Engine
from privsql.errors import PrivsqlError

from .adversarial import ANALYST, World, person_label
from .grammar import QueryGenerator

EPSILON, DELTA = 1.0, 1e-6
SALT = 0x6E4E_5A17_0C0F_FEE5


@dataclass(frozen=True)
class Outcome:
    status: str  # answered | refused | failed
    sqlstate: str = ""
    message: str = ""
    error: str = ""  # exception class name
    detail: str = field(default="", compare=False)  # the operator log's line (backend text), never compared

    def __str__(self) -> str:
        if self.status == "answered":
            return "answered"
        detail = f" -- {self.detail}" if self.detail else ""
        return f"{self.status} {self.error} [{self.sqlstate}] {self.message[:200]}{detail}"


ANSWERED = Outcome("answered")


class _LastError(logging.Handler):
    """Keeps the last error privsql logged (the backend's own text, which the analyst never sees)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage().split("; sql:")[0][:400]


LAST_ERROR = _LastError()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """privsql's error log captured (for diagnoses) instead of printed."""
    logger = logging.getLogger("privsql")
    saved = logger.propagate
    logger.addHandler(LAST_ERROR)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(LAST_ERROR)
        logger.propagate = saved


@contextlib.contextmanager
def fixed_salt(salt: int = SALT) -> Iterator[None]:
    """Every query's group-bounding salt fixed, so which rows of a person are kept is deterministic."""
    secrets = engine_module.secrets
    original = secrets.randbits
    secrets.randbits = lambda bits: salt & ((1 << bits) - 1)  # type: ignore[assignment]
    try:
        yield
    finally:
        secrets.randbits = original  # type: ignore[assignment]


def refusal(engine: Engine, sql: str) -> Outcome | None:
    """The refusal of ``sql`` (it never reads data), or None when privsql would run it."""
    try:
        engine.prepare(sql, epsilon=EPSILON, delta=DELTA, analyst=engine.analyst(ANALYST))
    except PrivsqlError as err:
        return Outcome("refused", err.sqlstate, err.message, type(err).__name__)
    except Exception as err:  # a crash before any data is read: still a bug, reported as a failure
        return Outcome("failed", "", f"{type(err).__name__}: {err}"[:300], f"prepare:{type(err).__name__}")
    return None


def run(engine: Engine, sql: str) -> Outcome:
    found = refusal(engine, sql)
    if found is not None:
        return found
    LAST_ERROR.last = ""
    try:
        engine.execute(sql, analyst=ANALYST, epsilon=EPSILON, delta=DELTA)
    except PrivsqlError as err:
        return Outcome("failed", err.sqlstate, err.message, type(err).__name__, LAST_ERROR.last)
    except Exception as err:
        return Outcome("failed", "", f"{type(err).__name__}: {err}"[:300], type(err).__name__, LAST_ERROR.last)
    return ANSWERED


@dataclass
class Failure:
    backend: str
    sql: str
    data: str  # "D", "empty", "D-<pid>"
    outcome: Outcome
    expected: Outcome | None = None  # the outcome on D when a neighbour differed

    def __str__(self) -> str:
        extra = f" (on D: {self.expected})" if self.expected is not None else ""
        return f"[{self.backend} on {self.data}] {self.outcome}{extra}\n    {self.sql[:400]}"


@dataclass
class Stats:
    backend: str
    answered: int = 0
    refused: int = 0
    failed: int = 0
    neighbour_runs: int = 0
    seconds: float = 0.0
    refusals: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.answered + self.refused + self.failed

    def line(self) -> str:
        share = self.answered / self.total if self.total else 0.0
        return (f"{self.backend}: {self.total} queries, {self.answered} answered ({share:.0%}), "
                f"{self.refused} refused, {self.failed} failed on D; {self.neighbour_runs} neighbour runs "
                f"(D - r, empty); {len(self.failures)} failures; {self.seconds:.1f} s")


def count(stats: Stats, outcome: Outcome) -> None:
    if outcome.status == "answered":
        stats.answered += 1
    elif outcome.status == "refused":
        stats.refused += 1
        stats.refusals[outcome.error] += 1
    else:
        stats.failed += 1


def variant_name(world: World, excluded: frozenset[int]) -> str:
    if not excluded:
        return "D"
    if excluded == world.all_pids:
        return "empty"
    if len(excluded) == 1:
        (pid,) = excluded
        return f"D-{pid} ({person_label(world.kind, pid)})"
    return f"D minus {len(excluded)} people"


def check_batch(world: World, queries: list[str], stats: Stats, *, removed: int | None,
                with_empty: bool = True) -> list[Failure]:
    """Run ``queries`` on D; those that ran again on D minus person ``removed`` and on the empty table.

    Call it on chunks of queries (the engine's plan cache then serves the neighbour runs) with
    ``removed`` rotating over the adversarial people."""
    start = time.perf_counter()
    found: list[Failure] = []
    base = world.engine()
    ran: list[tuple[str, Outcome]] = []
    for sql in queries:
        outcome = run(base, sql)
        count(stats, outcome)
        if outcome.status == "failed":
            found.append(Failure(world.kind, sql, "D", outcome))
        elif outcome.status == "answered":
            ran.append((sql, outcome))
    variants = ([frozenset([removed])] if removed is not None else []) + ([world.all_pids] if with_empty else [])
    for excluded in variants:
        engine = world.engine(excluded)
        for sql, expected in ran:
            stats.neighbour_runs += 1
            got = run(engine, sql)
            if got != expected:
                found.append(Failure(world.kind, sql, variant_name(world, excluded), got, expected))
    world.engine()  # back to D
    stats.failures += found
    stats.seconds += time.perf_counter() - start
    return found


# ---------------------------------------------------------------------------------------- diagnosis
def triggers(world: World, sql: str, limit: int = 3) -> tuple[str, frozenset[int] | None]:
    """Which data makes ``sql`` fail: 'empty', 'ordinary rows' or adversarial people (labels)."""
    if run(world.engine(world.all_pids), sql).status == "failed":
        return "the empty table", world.all_pids
    if run(world.engine(world.ordinary_plus()), sql).status == "failed":
        return "ordinary rows only (no adversarial person needed)", world.ordinary_plus()
    found = []
    first: frozenset[int] | None = None
    for pid in world.adversarial:
        excluded = world.ordinary_plus([pid])
        if run(world.engine(excluded), sql).status == "failed":
            found.append(person_label(world.kind, pid))
            first = first or excluded
            if len(found) >= limit:
                break
    world.engine()
    return (", ".join(found) if found else "only the whole of D (no single adversarial person)"), first


def signature(outcome: Outcome) -> str:
    return re.sub(r"\d+", "N", f"{outcome.error}:{outcome.message}")[:160]


def _candidates(tree: exp.Expression) -> Iterator[exp.Expression]:
    """Smaller trees: a node replaced by one of its sub-expressions, a clause dropped, a SELECT item dropped."""
    select = tree if isinstance(tree, exp.Select) else None
    if select is not None:
        for key in ("where", "group", "having", "order", "limit"):
            if select.args.get(key) is not None:
                smaller = select.copy()
                smaller.set(key, None)
                yield smaller
        if len(select.expressions) > 1:
            for i in range(len(select.expressions)):
                smaller = select.copy()
                smaller.set("expressions", [e for j, e in enumerate(smaller.expressions) if j != i])
                yield smaller
    nodes = list(tree.walk())
    for index, node in enumerate(nodes):
        if isinstance(node, (exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Identifier, exp.DataType)):
            continue
        children = [c for c in node.iter_expressions() if not isinstance(c, (exp.Identifier, exp.DataType, exp.Var))]
        options = [c for c in children if not isinstance(c, exp.Ordered)]
        if isinstance(node, exp.Case):
            options = [b.args["true"] for b in node.args.get("ifs") or []] + options
        if isinstance(node, exp.Literal) and not node.is_string and node.this not in ("0", "1"):
            options.append(exp.Literal.number(1))
        for child in options:
            smaller = tree.copy()
            target = list(smaller.walk())[index]
            replacement = list(child.copy().walk())[0]
            if target is smaller:
                continue
            target.replace(replacement)
            yield smaller


def minimize(world: World, sql: str, excluded: frozenset[int] | None, sig: str, budget: int = 400) -> str:
    """Greedy shrinking of ``sql`` while it still fails with the same signature on the same data."""
    engine = world.engine(excluded or frozenset())
    try:
        best = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError:
        return sql
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for cand in _candidates(best):
            tries += 1
            if tries > budget:
                break
            text = cand.sql(dialect="postgres")
            if len(text) >= len(best.sql(dialect="postgres")):
                continue
            got = run(engine, text)
            if got.status == "failed" and signature(got) == sig:
                best = cand
                improved = True
                break
    world.engine()
    return best.sql(dialect="postgres")


def backend_error(world: World, sql: str, excluded: frozenset[int] | None) -> str:
    """The backend's own error text for ``sql`` (what privsql hides from the analyst)."""
    engine = world.engine(excluded or frozenset())
    try:
        prepared = engine.prepare(sql, epsilon=EPSILON, delta=DELTA, analyst=engine.analyst(ANALYST))
        backend_sql = engine.backend_sql(prepared, salt=SALT)
        raw: Any = getattr(engine.backend, "_con", None)
        if world.kind == "duckdb" and raw is not None:
            raw.cursor().execute(backend_sql).fetchall()
        elif world.kind == "postgres":
            with world.raw_connection() as con:  # type: ignore[attr-defined]
                con.execute(backend_sql).fetchall()
        elif world.kind == "spark":
            engine.backend.spark.sql(backend_sql).collect()  # type: ignore[attr-defined]
        else:
            return "?"
        result = "no error when run directly"
    except Exception as exc:  # noqa: BLE001 - we want the text
        result = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
    world.engine()
    return result


@dataclass
class Diagnosis:
    backend: str
    signature: str
    sql: str
    minimal_sql: str
    trigger: str
    backend_error: str
    outcome: Outcome
    data: str


def diagnose(world: World, failure: Failure, minimize_budget: int = 150) -> Diagnosis:
    trigger, excluded = triggers(world, failure.sql)
    sig = signature(failure.outcome)
    if excluded is not None and failure.outcome.status == "failed":
        small = minimize(world, failure.sql, excluded, sig, minimize_budget)
    else:
        small = failure.sql
    return Diagnosis(world.kind, sig, failure.sql, small, trigger, backend_error(world, small, excluded),
                     failure.outcome, failure.data)


def failure_class(failure: Failure) -> str:
    """A short key that groups failures with the same cause: backend + the backend's error, numbers elided."""
    o = failure.outcome
    text = o.detail.split("the backend failed: ", 1)[-1] if o.detail else f"{o.error}: {o.message}"
    text = text.split("\n")[0]
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"-?\d[\d.e+-]*", "N", text)
    return f"{failure.backend}: {text[:140]}"


def generate(seed: int, count: int) -> list[str]:
    gen = QueryGenerator(seed)
    return [gen.query() for _ in range(count)]


def run_generated(world: World, queries: list[str], *, chunk: int = 50, empty_every: int = 2,
                  stats: Stats | None = None, progress: Callable[[Stats], None] | None = None) -> Stats:
    """The differential check over ``queries`` in chunks: chunk c removes adversarial person c mod |A|,
    every ``empty_every``-th chunk also runs on the empty table."""
    stats = stats or Stats(world.kind)
    with fixed_salt(), quiet_logs():
        for c, begin in enumerate(range(0, len(queries), chunk)):
            removed = world.adversarial[c % len(world.adversarial)] if world.adversarial else None
            check_batch(world, queries[begin:begin + chunk], stats, removed=removed,
                        with_empty=bool(empty_every) and c % empty_every == 0)
            if progress is not None:
                progress(stats)
    return stats
