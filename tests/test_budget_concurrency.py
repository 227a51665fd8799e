"""Several processes reserving from one budget at once never overspend, even when one is killed."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest_budget import open_test_store, store_ledger_units, unique_pg_schema

from privsql.accounting import Cost, Limits
from privsql.errors import BudgetExhausted

CTX = multiprocessing.get_context("spawn")
UNIT = 10**12
_start: Any = None  # the barrier every pool worker waits on before reserving


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    yield from unique_pg_schema()


def _init_worker(barrier: Any) -> None:
    global _start
    _start = barrier


def reserve_many(kind: str, location: str, analyst: str, cost: float, limit: float, attempts: int | None,
                 tag: str = "worker", start: Any = None, tried: Any = None, stop_when_refused: bool = True) -> int:
    """Wait for the others at ``start`` (default: the pool's barrier), open the store, then
    reserve ``attempts`` times (None: until refused, or forever with ``stop_when_refused`` off,
    for a process that is to be killed), counting tries in ``tried`` (a shared Value).
    Returns how many reservations were granted.
    """
    (start or _start).wait(timeout=60)
    store = open_test_store(kind, location)
    tried = tried or CTX.Value("i", lock=False)
    granted = 0
    try:
        while attempts is None or tried.value < attempts:
            tried.value += 1
            try:
                store.reserve(analyst, Cost(epsilon=cost), Limits(epsilon=limit), sql_hash=tag, sql_text="q")
            except BudgetExhausted:
                if attempts is None and stop_when_refused:
                    break
                time.sleep(0.001)
            else:
                granted += 1
    finally:
        store.close()
    return granted


def run_together(jobs: list[tuple[Any, ...]]) -> list[int]:
    """Run ``reserve_many(*job)`` for every job, each in its own process, all starting at once."""
    barrier = CTX.Barrier(len(jobs))
    with ProcessPoolExecutor(len(jobs), mp_context=CTX, initializer=_init_worker, initargs=(barrier,)) as pool:
        futures = [pool.submit(reserve_many, *job) for job in jobs]
        return [f.result(timeout=300) for f in futures]


def assert_consistent(kind: str, location: str, analyst: str, limit: float) -> int:
    """Spent equals the sum of the ledger's charges exactly and is within the limit; returns spent ε units."""
    spent, charged = store_ledger_units(kind, location, analyst)
    assert spent == charged
    assert spent[0] <= round(limit * UNIT)
    return spent[0]


@pytest.mark.slow
def test_sqlite_8_processes_never_overspend(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh" / "budget.sqlite")  # created by the workers, all at once
    granted = run_together([("sqlite", path, "alice", 0.1, 10.0, 200)] * 8)
    assert sum(granted) == 100
    assert assert_consistent("sqlite", path, "alice", 10.0) == 10 * UNIT
    with open_test_store("sqlite", path) as store:
        assert store.spent("alice").epsilon == 10.0
        assert store.spent("alice").queries == 100
        assert len(store.ledger("alice", limit=1000)) == 100


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_4_processes_never_overspend(pg_schema: str) -> None:
    granted = run_together([("postgres", pg_schema, "pg-many", 0.001, 5.0, 2500)] * 4)
    assert sum(granted) == 5000
    assert assert_consistent("postgres", pg_schema, "pg-many", 5.0) == 5 * UNIT
    with open_test_store("postgres", pg_schema) as store:
        assert store.spent("pg-many").epsilon == 5.0


def _wait_until(condition: Callable[[], bool], deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, "the reserving processes made no progress"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_mid_run_leaves_the_store_consistent(kind: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    location = str(tmp_path / "budget.sqlite") if kind == "sqlite" else request.getfixturevalue("pg_schema")
    analyst, cost, limit = f"killed-{kind}", 0.001, 1.5
    tags = ["victim0", "victim1", "victim2", "survivor", "survivor"]
    start = CTX.Barrier(len(tags))
    tries = [CTX.Value("i") for _ in tags]
    procs = [CTX.Process(target=reserve_many, args=(kind, location, analyst, cost, limit, None, tag, start, tried),
                         kwargs={"stop_when_refused": not tag.startswith("victim")})  # victims run until killed
             for tag, tried in zip(tags, tries, strict=True)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 60
        with open_test_store(kind, location) as store:
            for i, victim in enumerate(procs[:3]):  # kill each victim in its loop, at a random moment
                _wait_until(lambda n=100 * (i + 1): store.spent(analyst).queries >= n, deadline)
                _wait_until(lambda tried=tries[i]: tried.value >= 1, deadline)  # in its loop
                time.sleep(random.uniform(0, 0.02))
                os.kill(victim.pid, signal.SIGKILL)
                victim.join()
                assert victim.exitcode == -signal.SIGKILL
                assert_consistent(kind, location, analyst, limit)
            for survivor in procs[3:]:
                survivor.join(timeout=120)
                assert survivor.exitcode == 0
            # the survivors carried on until the budget was spent exactly, never beyond it
            assert assert_consistent(kind, location, analyst, limit) == round(limit * UNIT)
            rows = store.ledger(analyst, limit=10_000)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert len(rows) == 1500
    assert sum(r.sql_hash == "survivor" for r in rows) > 0
    if kind == "sqlite":
        conn = sqlite3.connect(location)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
