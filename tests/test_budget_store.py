"""Budget store behaviour, the same tests for the SQLite and the PostgreSQL store."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest_budget import PG_DSN, open_test_store, pg_admin, store_ledger_units, unique_pg_schema

from privsql.accounting import Cost, LedgerEntry, Limits, Spent, open_store
from privsql.accounting.postgres_store import PostgresBudgetStore
from privsql.accounting.sqlite_store import SqliteBudgetStore
from privsql.accounting.store import SqlBudgetStore, cost_units, limit_units, refusal_message
from privsql.errors import BudgetExhausted, BudgetStoreError

Q = {"sql_hash": "h1", "sql_text": "SELECT COUNT(*) FROM people"}
TEN = Limits(epsilon=10.0)

Opener = Callable[[], SqlBudgetStore]
KindLocation = tuple[str, str | Path]  # ('sqlite', file) or ('postgres', schema)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    yield from unique_pg_schema()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kind_location(request: pytest.FixtureRequest, tmp_path: Path) -> KindLocation:
    """An empty store location: a fresh SQLite file, or the session's PostgreSQL schema emptied."""
    if request.param == "sqlite":
        return "sqlite", tmp_path / "var" / "budget.sqlite"
    schema = request.getfixturevalue("pg_schema")
    open_test_store("postgres", schema).close()  # create the tables
    with pg_admin() as admin:
        admin.execute(f"TRUNCATE {schema}.budget, {schema}.ledger, {schema}.cache RESTART IDENTITY")
    return "postgres", schema


@pytest.fixture
def opener(kind_location: KindLocation) -> Iterator[Opener]:
    """Opens the store at this test's location (again and again); closes them all afterwards."""
    opened: list[SqlBudgetStore] = []

    def open_() -> SqlBudgetStore:
        opened.append(open_test_store(*kind_location))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> SqlBudgetStore:
    return opener()


def exhaust(store: SqlBudgetStore, analyst: str, cost: Cost, limits: Limits) -> int:
    """Reserve ``cost`` until refused; return how many were granted."""
    granted = 0
    while True:
        try:
            store.reserve(analyst, cost, limits, **Q)
        except BudgetExhausted:
            return granted
        granted += 1
        assert granted <= 10_000, "never refused"


# ---------------------------------------------------------------- reserve / finish / ledger


def test_reserve_charges_and_writes_a_reserved_ledger_row(store: SqlBudgetStore) -> None:
    before = datetime.now(UTC)
    lid = store.reserve("alice", Cost(epsilon=0.5, delta=1e-7, rho=0.01), Limits(10, 1e-5, 1), **Q)
    assert store.spent("alice") == Spent(epsilon=0.5, delta=1e-7, rho=0.01, queries=1)
    [entry] = store.ledger("alice")
    assert entry == LedgerEntry(id=lid, time=entry.time, analyst="alice", sql_hash="h1",
                                sql_text="SELECT COUNT(*) FROM people", epsilon=0.5, delta=1e-7, rho=0.01,
                                outcome="reserved")
    assert entry.time.tzinfo is not None and entry.time.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= entry.time <= datetime.now(UTC) + timedelta(seconds=5)


def test_finish_sets_the_outcome_and_never_refunds(store: SqlBudgetStore) -> None:
    a = store.reserve("alice", Cost(1.0), TEN, **Q)
    b = store.reserve("alice", Cost(2.0), TEN, **Q)
    store.finish(a, "answered")
    store.finish(b, "failed")
    assert [e.outcome for e in store.ledger("alice")] == ["failed", "answered"]
    assert store.spent("alice") == Spent(3.0, 0.0, 0.0, 2)


def test_finish_refuses_bad_outcomes_unknown_ids_and_second_finishes(store: SqlBudgetStore) -> None:
    lid = store.reserve("alice", Cost(1.0), TEN, **Q)
    with pytest.raises(ValueError, match="one of"):
        store.finish(lid, "cached")
    with pytest.raises(ValueError, match="does not exist"):
        store.finish(lid + 1000, "answered")
    store.finish(lid, "answered")
    with pytest.raises(ValueError, match="already 'answered'"):
        store.finish(lid, "failed")
    assert store.ledger("alice")[0].outcome == "answered"


def test_spent_is_zero_for_an_analyst_never_seen(store: SqlBudgetStore) -> None:
    assert store.spent("nobody") == Spent(0.0, 0.0, 0.0, 0)


def test_record_free_writes_a_zero_cost_row_and_charges_nothing(store: SqlBudgetStore) -> None:
    store.reserve("alice", Cost(1.0), TEN, **Q)
    lid = store.record_free("alice", sql_hash="h2", sql_text="SELECT 1")
    newest = store.ledger("alice")[0]
    assert (newest.id, newest.outcome, newest.epsilon, newest.delta, newest.rho) == (lid, "cached", 0, 0, 0)
    assert store.spent("alice") == Spent(1.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="outcome"):
        store.record_free("alice", sql_hash="h2", sql_text="SELECT 1", outcome="reserved")


def test_ledger_is_newest_first_limited_and_filtered(store: SqlBudgetStore) -> None:
    ids = [store.reserve(name, Cost(0.1), TEN, **Q) for name in ["alice", "bob", "alice", "bob", "alice"]]
    assert [e.id for e in store.ledger()] == ids[::-1]
    assert [e.id for e in store.ledger(limit=2)] == ids[:2:-1]
    assert [e.id for e in store.ledger("bob")] == [ids[3], ids[1]]
    assert store.ledger("carol") == []


# ---------------------------------------------------------------- refusals


def test_refusal_names_what_is_left_and_writes_nothing(store: SqlBudgetStore) -> None:
    store.reserve("alice", Cost(9.6), TEN, **Q)
    with pytest.raises(BudgetExhausted) as info:
        store.reserve("alice", Cost(1.0), TEN, **Q)
    assert info.value.message == ("privacy budget exhausted for analyst 'alice': "
                                  "0.40 ε left, this query needs 1.00 ε")
    assert info.value.sqlstate == "53400"
    assert store.spent("alice") == Spent(9.6, 0.0, 0.0, 1)
    assert len(store.ledger("alice")) == 1


def test_refusal_of_an_unknown_analyst_writes_no_row(store: SqlBudgetStore, kind_location: KindLocation) -> None:
    with pytest.raises(BudgetExhausted, match="0 ε left, this query needs 1.00 ε"):
        store.reserve("nobody", Cost(1.0), Limits(epsilon=0.5), **Q)
    assert store.ledger() == []
    assert store_ledger_units(*kind_location, "nobody") == ((0, 0, 0), (0, 0, 0))


def test_delta_refusal_names_delta_and_charges_no_epsilon(store: SqlBudgetStore) -> None:
    limits = Limits(epsilon=10.0, delta=1e-6)
    store.reserve("alice", Cost(epsilon=1.0, delta=7.5e-7), limits, **Q)
    with pytest.raises(BudgetExhausted) as info:
        store.reserve("alice", Cost(epsilon=1.0, delta=3e-7), limits, **Q)
    assert info.value.message == ("privacy budget exhausted for analyst 'alice': "
                                  "2.50e-7 δ left, this query needs 3.00e-7 δ")
    assert store.spent("alice") == Spent(1.0, 7.5e-7, 0.0, 1)


def test_rho_dimension_is_checked(store: SqlBudgetStore) -> None:
    limits = Limits(rho=0.5)
    assert exhaust(store, "alice", Cost(rho=0.125), limits) == 4
    with pytest.raises(BudgetExhausted, match="0 ρ left, this query needs 0.13 ρ"):
        store.reserve("alice", Cost(rho=0.125), limits, **Q)
    assert store.spent("alice") == Spent(0.0, 0.0, 0.5, 4)


def test_infinite_limits_do_not_check(store: SqlBudgetStore) -> None:
    for _ in range(3):
        store.reserve("alice", Cost(epsilon=1000.0, delta=0.5, rho=100.0), Limits(), **Q)
    assert store.spent("alice") == Spent(3000.0, 1.5, 300.0, 3)
    store.reserve("alice", Cost(epsilon=0.5, delta=100.0), Limits(epsilon=3001.0), **Q)


@pytest.mark.parametrize("cost", [Cost(epsilon=-0.1), Cost(delta=math.nan), Cost(rho=math.inf),
                                  Cost(epsilon=-0.0 - 1e-300), Cost(epsilon=1e30)])
def test_bad_costs_are_value_errors(store: SqlBudgetStore, cost: Cost) -> None:
    with pytest.raises(ValueError, match="cost"):
        store.reserve("alice", cost, Limits(), **Q)
    assert store.ledger() == []


@pytest.mark.parametrize("limits", [Limits(epsilon=-1.0), Limits(delta=math.nan)])
def test_bad_limits_are_value_errors(store: SqlBudgetStore, limits: Limits) -> None:
    with pytest.raises(ValueError, match="budget"):
        store.reserve("alice", Cost(0.1), limits, **Q)


# ---------------------------------------------------------------- exact arithmetic


def test_a_tenth_a_hundred_times_fits_ten_exactly(store: SqlBudgetStore, kind_location: KindLocation) -> None:
    assert exhaust(store, "alice", Cost(0.1), TEN) == 100
    assert store.spent("alice") == Spent(10.0, 0.0, 0.0, 100)
    assert store_ledger_units(*kind_location, "alice") == ((10**13, 0, 0), (10**13, 0, 0))


def test_rounding_errs_toward_privacy(store: SqlBudgetStore) -> None:
    # a third costs 0.333333333334 (rounded up): three of them overrun 1.0
    assert exhaust(store, "third", Cost(1 / 3), Limits(epsilon=1.0)) == 2
    # a cost below one unit still costs one unit; a limit below one unit allows nothing
    assert exhaust(store, "tiny", Cost(delta=1e-15), Limits(delta=2.5e-12)) == 2
    with pytest.raises(BudgetExhausted):
        store.reserve("tinier", Cost(delta=1e-15), Limits(delta=9e-13), **Q)


def test_unit_conversion() -> None:
    assert cost_units(Cost(0.1, 1e-9, 0.5)) == (10**11, 1000, 5 * 10**11)
    assert cost_units(Cost(1 / 3)) == (333333333334, 0, 0)
    assert limit_units(Limits(2 / 3, 1e-13)) == (666666666666, 0, 4 * 10**18)


def test_refusal_message_never_prints_left_and_needed_as_equal() -> None:
    message = refusal_message("bob", (599999999999, 0, 0), (400000000002, 0, 0), (10**12, 0, 0))
    assert message.endswith("0.40 ε left, this query needs 0.41 ε")
    small = refusal_message("bob", (0, 0, 0), (0, 1234567, 0), (10**12, 1234000, 10**12))
    assert small.endswith("1.23e-6 δ left, this query needs 1.24e-6 δ")


# ---------------------------------------------------------------- cache


def test_cache_first_writer_wins(store: SqlBudgetStore) -> None:
    assert store.cache_get("alice", "k") is None
    store.cache_put("alice", "k", b"\x00first")
    store.cache_put("alice", "k", b"second")
    assert store.cache_get("alice", "k") == b"\x00first"
    assert store.cache_get("bob", "k") is None


# ---------------------------------------------------------------- persistence, threads


def test_everything_persists_across_reopen(opener: Opener) -> None:
    first = opener()
    lid = first.reserve("alice", Cost(9.5), TEN, **Q)
    first.finish(lid, "answered")
    first.cache_put("alice", "k", b"blob")
    first.close()
    again = opener()
    assert again.spent("alice") == Spent(9.5, 0.0, 0.0, 1)
    assert [(e.id, e.outcome) for e in again.ledger()] == [(lid, "answered")]
    assert again.cache_get("alice", "k") == b"blob"
    with pytest.raises(BudgetExhausted):
        again.reserve("alice", Cost(1.0), TEN, **Q)
    again.reserve("alice", Cost(1.0), Limits(epsilon=11.0), **Q)  # an admin raised the budget in config


def test_one_store_shared_by_threads_never_overspends(store: SqlBudgetStore) -> None:
    def work(_: int) -> int:
        return exhaust(store, "alice", Cost(0.25), Limits(epsilon=20.0))

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(work, range(8))) == 80
    assert store.spent("alice") == Spent(20.0, 0.0, 0.0, 80)


# ---------------------------------------------------------------- open_store, SQLite specifics


def test_open_store_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        open_store("mysql", path=tmp_path / "x")
    with pytest.raises(ValueError, match="path"):
        open_store("sqlite")
    with pytest.raises(ValueError, match="dsn"):
        open_store("postgres", path=tmp_path / "x")
    with open_store("sqlite", path=tmp_path / "a" / "b" / "budget.sqlite") as s:
        assert isinstance(s, SqliteBudgetStore)


def test_sqlite_file_is_wal_with_schema_version_1(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite"
    SqliteBudgetStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    conn.close()


def test_sqlite_store_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BudgetStoreError, match="budget.sqlite"):
        SqliteBudgetStore(path)


def test_sqlite_store_of_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite"
    SqliteBudgetStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    with pytest.raises(BudgetStoreError, match="schema version 2"):
        SqliteBudgetStore(path)


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = SqliteBudgetStore(tmp_path / "budget.sqlite")
    for _ in range(5):
        t = threading.Thread(target=store.spent, args=("alice",))
        t.start()
        t.join()
    store.spent("alice")
    assert len(store._conns) <= 2  # this thread's, and the last finished thread's until the next connect
    store.close()


# ---------------------------------------------------------------- PostgreSQL specifics


@pytest.mark.postgres
def test_postgres_unreachable_is_a_store_error() -> None:
    with pytest.raises(BudgetStoreError, match="cannot open the PostgreSQL budget store at 127.0.0.1:1/test"):
        PostgresBudgetStore("postgresql://postgres:secret@127.0.0.1:1/test", timeout=2)


@pytest.mark.postgres
def test_postgres_store_error_messages_hide_the_password() -> None:
    with pytest.raises(BudgetStoreError) as info:
        PostgresBudgetStore("postgresql://postgres:hunter2@127.0.0.1:1/test", timeout=1)
    assert "hunter2" not in str(info.value)


@pytest.mark.postgres
def test_postgres_schema_created_by_many_at_once(pg_schema: str) -> None:
    schema = f"{pg_schema}_race"
    start = threading.Barrier(6)

    def open_at_once(_: int) -> SqlBudgetStore:
        start.wait(timeout=30)
        return open_test_store("postgres", schema)

    try:
        with ThreadPoolExecutor(6) as pool:
            stores = list(pool.map(open_at_once, range(6)))
        for s in stores:
            s.close()
    finally:
        with pg_admin() as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.postgres
def test_postgres_recovers_from_a_dropped_idle_connection(pg_schema: str) -> None:
    store = PostgresBudgetStore(PG_DSN, schema=pg_schema, max_connections=1)
    try:
        with store._pool.connection() as conn:
            pid = conn.info.backend_pid
        with pg_admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        store.reserve("recover", Cost(0.5), TEN, **Q)  # the pool's check replaces the dead connection
        assert store.spent("recover").epsilon == 0.5
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_connection_lost_mid_reservation_charges_nothing(pg_schema: str) -> None:
    class Dying(PostgresBudgetStore):
        def _insert_ledger(self, cur, *args, **kwargs):  # type: ignore[no-untyped-def]
            cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return super()._insert_ledger(cur, *args, **kwargs)

    store = Dying(PG_DSN, schema=pg_schema)
    try:
        with pytest.raises(BudgetStoreError, match="PostgreSQL budget store .* failed"):
            store.reserve("dying", Cost(1.0), TEN, **Q)
    finally:
        store.close()
    with PostgresBudgetStore(PG_DSN, schema=pg_schema) as fresh:
        assert fresh.spent("dying") == Spent(0.0, 0.0, 0.0, 0)
        assert fresh.ledger("dying") == []
