"""The persistent per-analyst privacy budget store: interface and shared logic.

Amounts are kept as integers in units of 1e-12 (``UNITS_PER_ONE``) in every
dimension (ε, δ, ρ), never as floats, so a total is an exact sum of its ledger
rows. A float coming in is read as the decimal it prints as (``repr``: the
value the planner or config meant, e.g. ``0.1`` not 0.1000000000000000055…),
then a cost is rounded *up* and a limit *down* to whole units: rounding always
errs toward more privacy, and 100 charges of 0.1 fit a limit of 10.0 exactly.

``SqlBudgetStore`` holds the SQL both backends share; a backend supplies only
its connections, its transactions and its DDL.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Protocol, Self

from privsql.errors import BudgetExhausted, BudgetStoreError

#: One unit of ε, δ or ρ as stored: 1e-12.
UNITS_PER_ONE = 10**12
#: The largest amount a store records in one dimension (4e6 ε): spent and
#: cost each stay at or below it, so their sum fits a signed 64-bit integer.
MAX_UNITS = 4 * 10**18

#: Ledger outcomes. A reservation starts 'reserved' and is finished as
#: 'answered' or 'failed'; free rows (cache hits) are written directly.
OUTCOMES = ("reserved", "answered", "failed", "cached")
FINISH_OUTCOMES = ("answered", "failed")
FREE_OUTCOMES = ("answered", "failed", "cached")

#: (field name, symbol) of each budget dimension, in the order refusals name them.
DIMENSIONS = (("epsilon", "ε"), ("delta", "δ"), ("rho", "ρ"))

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Cost:
    """What one query charges, as floats from the planner."""

    epsilon: float = 0.0
    delta: float = 0.0
    rho: float = 0.0  # zero-concentrated DP charge (zCDP budgets)


@dataclass(frozen=True)
class Limits:
    """An analyst's totals from config; ``math.inf`` means unlimited in that dimension."""

    epsilon: float = math.inf
    delta: float = math.inf
    rho: float = math.inf


@dataclass(frozen=True)
class Spent:
    """What an analyst has spent; ``queries`` counts granted reservations."""

    epsilon: float
    delta: float
    rho: float
    queries: int


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row: a reservation (its charge) or a free query."""

    id: int
    time: datetime  # UTC
    analyst: str
    sql_hash: str
    sql_text: str
    epsilon: float
    delta: float
    rho: float
    outcome: str  # one of OUTCOMES


# ---------------------------------------------------------------- units


def _as_decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def cost_units(cost: Cost) -> tuple[int, int, int]:
    """(ε, δ, ρ) of ``cost`` in units, each rounded up: never undercharges.

    Raises ValueError for a negative, NaN, infinite or unrecordably large cost.
    """
    units = []
    for name, _ in DIMENSIONS:
        value = getattr(cost, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a query's {name} cost must be finite and >= 0, not {value!r}")
        n = math.ceil(_as_decimal(value) * UNITS_PER_ONE)
        if n > MAX_UNITS:
            raise ValueError(f"a query's {name} cost of {value!r} is larger than the store can record")
        units.append(n)
    return units[0], units[1], units[2]


def limit_units(limits: Limits) -> tuple[int, int, int]:
    """(ε, δ, ρ) of ``limits`` in units, each rounded down: never over-grants.

    An infinite limit becomes ``MAX_UNITS`` (no budget check, only the store's
    capacity). Raises ValueError for a negative or NaN limit.
    """
    units = []
    for name, _ in DIMENSIONS:
        value = getattr(limits, name)
        if math.isnan(value) or value < 0:
            raise ValueError(f"a {name} budget must be >= 0, not {value!r}")
        n = MAX_UNITS if value == math.inf else math.floor(_as_decimal(value) * UNITS_PER_ONE)
        units.append(min(n, MAX_UNITS))
    return units[0], units[1], units[2]


def from_units(units: int) -> float:
    """The float nearest to ``units`` × 1e-12 (correctly rounded)."""
    return units / UNITS_PER_ONE


def _format_amount(units: int, rounding: str) -> str:
    """An amount for a message: 2 decimals, or 3 significant digits below 0.01."""
    if units == 0:
        return "0"
    value = Decimal(units).scaleb(-12)
    if value >= Decimal("0.01"):
        return str(value.quantize(Decimal("0.01"), rounding=rounding))
    exponent = value.adjusted() - 2  # keep 3 significant digits
    return f"{value.quantize(Decimal(1).scaleb(exponent), rounding=rounding):.2e}"


def refusal_message(analyst: str, spent: tuple[int, ...], cost: tuple[int, ...], limit: tuple[int, ...]) -> str:
    """The BudgetExhausted message naming the first dimension that does not fit.

    What is left is rounded down and what is needed up, so the two never print
    as equal.
    """
    for (_, symbol), s, c, lim in zip(DIMENSIONS, spent, cost, limit, strict=True):
        if s + c > lim:
            left = _format_amount(max(lim - s, 0), ROUND_FLOOR)
            need = _format_amount(c, ROUND_CEILING)
            return (f"privacy budget exhausted for analyst {analyst!r}: "
                    f"{left} {symbol} left, this query needs {need} {symbol}")
    return f"privacy budget exhausted for analyst {analyst!r}"  # not reached: a refusal has a cause


# ---------------------------------------------------------------- interface


class BudgetStore(ABC):
    """Per-analyst privacy budgets, a ledger of queries and a free-repeat cache.

    Every method is safe to call from several threads and processes at once.
    Limits are passed on each call (they live in config, not in the store), so
    raising a budget is a config edit.
    """

    @abstractmethod
    def reserve(self, analyst: str, cost: Cost, limits: Limits, *, sql_hash: str, sql_text: str) -> int:
        """Charge ``cost`` and write a 'reserved' ledger row in one transaction; return its id.

        Never overspends: the charge is granted only if spent + cost <= limits
        in every dimension, checked and applied atomically. Otherwise raises
        BudgetExhausted and writes nothing. Raises BudgetStoreError if the
        store fails (the query must then be refused).
        """

    @abstractmethod
    def finish(self, ledger_id: int, outcome: str) -> None:
        """Mark a reservation 'answered' or 'failed'. Never refunds."""

    def complete(self, ledger_id: int, analyst: str, outcome: str, *,
                 cache: tuple[str, bytes] | None = None) -> Spent:
        """Finish a reservation, optionally cache its answer, and return what ``analyst``
        has spent now. Stores may do this in one transaction; never refunds."""
        self.finish(ledger_id, outcome)
        if cache is not None:
            self.cache_put(analyst, cache[0], cache[1])
        return self.spent(analyst)

    def replay(self, analyst: str, key: str, *, sql_hash: str, sql_text: str) -> tuple[bytes, Spent] | None:
        """A cached answer for (analyst, key) with a free 'cached' ledger row and what the
        analyst has spent, or None (nothing written) when there is no such answer."""
        blob = self.cache_get(analyst, key)
        if blob is None:
            return None
        self.record_free(analyst, sql_hash=sql_hash, sql_text=sql_text, outcome="cached")
        return blob, self.spent(analyst)

    @abstractmethod
    def record_free(self, analyst: str, *, sql_hash: str, sql_text: str, outcome: str = "cached") -> int:
        """Write a zero-cost ledger row (e.g. a cache hit); return its id."""

    @abstractmethod
    def spent(self, analyst: str) -> Spent:
        """What ``analyst`` has spent so far (zeros if never seen)."""

    @abstractmethod
    def ledger(self, analyst: str | None = None, limit: int = 20) -> list[LedgerEntry]:
        """The newest ``limit`` ledger rows, newest first, of one analyst or all."""

    @abstractmethod
    def cache_get(self, analyst: str, key: str) -> bytes | None:
        """The cached answer blob for (analyst, key), or None."""

    @abstractmethod
    def cache_put(self, analyst: str, key: str, blob: bytes) -> None:
        """Cache ``blob`` for (analyst, key); the first writer wins, never overwritten."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- shared SQL


class Cursor(Protocol):
    """The part of a DB-API cursor the shared SQL uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


_LEDGER_COLUMNS = "id, time, analyst, sql_hash, sql_text, epsilon, delta, rho, outcome"


class SqlBudgetStore(BudgetStore):
    """The budget store logic on SQL tables ``budget``, ``ledger`` and ``cache``.

    Statements use ``:name`` parameters; a backend whose driver wants another
    style overrides ``_sql``. A backend supplies ``_transaction`` (commit on
    success, roll back on exception, driver errors raised as BudgetStoreError)
    and the time encoding of its ``ledger.time`` column.
    """

    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction; ``write`` takes the write lock up front."""

    def _sql(self, statement: str) -> str:
        return statement

    def _encode_time(self, when: datetime) -> Any:
        return when

    def _decode_time(self, value: Any) -> datetime:
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    def _execute(self, cur: Cursor, statement: str, params: dict[str, Any]) -> None:
        cur.execute(self._sql(statement), params)

    def _init_schema(self, cur: Cursor, ddl: str) -> None:
        """Run ``ddl`` (idempotent ``;``-separated statements) and check the schema version."""
        for statement in ddl.split(";"):
            if statement.strip():
                cur.execute(statement)
        self._execute(cur, "SELECT max(version) FROM schema_version", {})
        version = cur.fetchone()[0]
        if version is None:
            self._execute(cur, "INSERT INTO schema_version (version) VALUES (:v)", {"v": SCHEMA_VERSION})
        elif version != SCHEMA_VERSION:
            raise BudgetStoreError(f"{self!r} has schema version {version}; "
                                   f"this privsql reads version {SCHEMA_VERSION}")

    def _insert_ledger(self, cur: Cursor, analyst: str, sql_hash: str, sql_text: str,
                       units: tuple[int, int, int], outcome: str) -> int:
        self._execute(cur, "INSERT INTO ledger (time, analyst, sql_hash, sql_text, epsilon, delta, rho, outcome)"
                           " VALUES (:time, :a, :h, :t, :e, :d, :r, :o) RETURNING id",
                      {"time": self._encode_time(datetime.now(UTC)), "a": analyst, "h": sql_hash,
                       "t": sql_text, "e": units[0], "d": units[1], "r": units[2], "o": outcome})
        return int(cur.fetchone()[0])

    def reserve(self, analyst: str, cost: Cost, limits: Limits, *, sql_hash: str, sql_text: str) -> int:
        c, lim = cost_units(cost), limit_units(limits)
        params = {"a": analyst, "ce": c[0], "cd": c[1], "cr": c[2], "le": lim[0], "ld": lim[1], "lr": lim[2]}
        with self._transaction(write=True) as cur:
            self._execute(cur, "INSERT INTO budget (analyst) VALUES (:a) ON CONFLICT (analyst) DO NOTHING", params)
            self._execute(cur, "UPDATE budget SET epsilon = epsilon + :ce, delta = delta + :cd, rho = rho + :cr,"
                               " queries = queries + 1"
                               " WHERE analyst = :a AND epsilon + :ce <= :le AND delta + :cd <= :ld"
                               " AND rho + :cr <= :lr", params)
            if cur.rowcount != 1:
                self._execute(cur, "SELECT epsilon, delta, rho FROM budget WHERE analyst = :a", params)
                raise BudgetExhausted(refusal_message(analyst, tuple(cur.fetchone()), c, lim))
            return self._insert_ledger(cur, analyst, sql_hash, sql_text, c, "reserved")

    def finish(self, ledger_id: int, outcome: str) -> None:
        with self._transaction(write=True) as cur:
            self._finish(cur, ledger_id, outcome)

    def _finish(self, cur: Cursor, ledger_id: int, outcome: str) -> None:
        if outcome not in FINISH_OUTCOMES:
            raise ValueError(f"a reservation finishes as one of {FINISH_OUTCOMES}, not {outcome!r}")
        params = {"id": ledger_id, "o": outcome}
        self._execute(cur, "UPDATE ledger SET outcome = :o WHERE id = :id AND outcome = 'reserved'", params)
        if cur.rowcount != 1:
            self._execute(cur, "SELECT outcome FROM ledger WHERE id = :id", params)
            row = cur.fetchone()
            state = "does not exist" if row is None else f"is already {row[0]!r}"
            raise ValueError(f"cannot finish ledger entry {ledger_id}: it {state}")

    def complete(self, ledger_id: int, analyst: str, outcome: str, *,
                 cache: tuple[str, bytes] | None = None) -> Spent:
        """Finish, cache and read what is spent in one transaction."""
        with self._transaction(write=True) as cur:
            self._finish(cur, ledger_id, outcome)
            if cache is not None:
                self._cache_put(cur, analyst, *cache)
            return self._spent(cur, analyst)

    def replay(self, analyst: str, key: str, *, sql_hash: str, sql_text: str) -> tuple[bytes, Spent] | None:
        """Look up, record the free repeat and read what is spent in one transaction."""
        with self._transaction(write=True) as cur:
            blob = self._cache_get(cur, analyst, key)
            if blob is None:
                return None
            self._insert_ledger(cur, analyst, sql_hash, sql_text, (0, 0, 0), "cached")
            return blob, self._spent(cur, analyst)

    def record_free(self, analyst: str, *, sql_hash: str, sql_text: str, outcome: str = "cached") -> int:
        if outcome not in FREE_OUTCOMES:
            raise ValueError(f"a free ledger row's outcome is one of {FREE_OUTCOMES}, not {outcome!r}")
        with self._transaction(write=True) as cur:
            return self._insert_ledger(cur, analyst, sql_hash, sql_text, (0, 0, 0), outcome)

    def spent(self, analyst: str) -> Spent:
        with self._transaction(write=False) as cur:
            return self._spent(cur, analyst)

    def _spent(self, cur: Cursor, analyst: str) -> Spent:
        self._execute(cur, "SELECT epsilon, delta, rho, queries FROM budget WHERE analyst = :a", {"a": analyst})
        row = cur.fetchone()
        if row is None:
            return Spent(0.0, 0.0, 0.0, 0)
        return Spent(from_units(row[0]), from_units(row[1]), from_units(row[2]), int(row[3]))

    def ledger(self, analyst: str | None = None, limit: int = 20) -> list[LedgerEntry]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        where = "" if analyst is None else " WHERE analyst = :a"
        with self._transaction(write=False) as cur:
            self._execute(cur, f"SELECT {_LEDGER_COLUMNS} FROM ledger{where} ORDER BY id DESC LIMIT :n",
                          {"a": analyst, "n": limit})
            rows = cur.fetchall()
        return [LedgerEntry(id=int(r[0]), time=self._decode_time(r[1]), analyst=r[2], sql_hash=r[3],
                            sql_text=r[4], epsilon=from_units(r[5]), delta=from_units(r[6]),
                            rho=from_units(r[7]), outcome=r[8]) for r in rows]

    def cache_get(self, analyst: str, key: str) -> bytes | None:
        with self._transaction(write=False) as cur:
            return self._cache_get(cur, analyst, key)

    def _cache_get(self, cur: Cursor, analyst: str, key: str) -> bytes | None:
        self._execute(cur, "SELECT blob FROM cache WHERE analyst = :a AND key = :k", {"a": analyst, "k": key})
        row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def cache_put(self, analyst: str, key: str, blob: bytes) -> None:
        with self._transaction(write=True) as cur:
            self._cache_put(cur, analyst, key, blob)

    def _cache_put(self, cur: Cursor, analyst: str, key: str, blob: bytes) -> None:
        self._execute(cur, "INSERT INTO cache (analyst, key, blob) VALUES (:a, :k, :b)"
                           " ON CONFLICT (analyst, key) DO NOTHING", {"a": analyst, "k": key, "b": blob})


_NAMED_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def pyformat(statement: str) -> str:
    """Rewrite ``:name`` parameters as ``%(name)s`` (for drivers using the pyformat style)."""
    return _NAMED_PARAM.sub(r"%(\1)s", statement)

