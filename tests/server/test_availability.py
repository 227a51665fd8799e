"""Work that really stops: timeouts, cancels, disconnects and shutdown interrupt the statement's
work; limits on size, nesting and per-analyst concurrency keep one analyst from freezing the
server for the others. Real servers over loopback, real psycopg clients, the real engine.

A "long DP query" runs on ``big``, a DuckDB view over ten billion generated rows (nothing is
stored), so it is slow on any machine and only an interrupt ends it early.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import psycopg
import pytest
import yaml
from conftest import ROOT, sample_config
from wire_helpers import RunningServer, free_port

from privsql.engine import Engine
from privsql.errors import StatementTooComplex, StatementTooLarge

SERIES = "SELECT count(*) FROM generate_series(1, 20000000000) t(x) WHERE x % 7 = 3"
BIG_COUNT = "SELECT COUNT(*) FROM big"
BIG_TABLE = {"source": "big", "privacy_unit": "pid", "max_groups": 1, "max_rows": 1,
             "columns": {"pid": {"type": "int"}, "v": {"type": "int", "lower": 0, "upper": 100}}}
DEEP = {
    "parentheses": "SELECT COUNT(*) FROM people WHERE " + "(" * 1000 + "age > 1" + ")" * 1000,
    "functions": "SELECT SUM(" + "ABS(" * 200 + "age" + ")" * 200 + ") FROM people",
    "or chain": "SELECT COUNT(*) FROM people WHERE " + " OR ".join(f"age = {i}" for i in range(500)),
    "not chain": "SELECT COUNT(*) FROM people WHERE " + "NOT " * 300 + "age > 1",
    "case": "SELECT SUM(" + "CASE WHEN age > 1 THEN " * 100 + "age" + " ELSE 0 END" * 100 + ") FROM people",
    "arrays": "SELECT 1 = ANY(" + "ARRAY[" * 20 + "1" + "]" * 20 + ")",
}
HUGE = "SELECT COUNT(*) FROM people WHERE age IN (" + ",".join(str(i % 100) for i in range(300_000)) + ")"
MANY_TOKENS = "SELECT COUNT(*) FROM people WHERE age IN (" + ",".join(str(100000 + i) for i in range(30_000)) + ")"
#: under every size and nesting limit, but sqlglot backtracks on nested ARRAYs: seconds to parse
SLOW_TO_PARSE = "SELECT " + ", ".join(["1 = ANY(" + "ARRAY[" * 10 + "1" + "]" * 10 + ")"] * 30)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The sample config plus ``big`` (a view over 10^10 rows) in a DuckDB file; a large budget."""
    tmp = tmp_path_factory.mktemp("availability")
    path = tmp / "big.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE VIEW big AS SELECT i % 1000 AS pid, i % 100 AS v FROM range(10000000000) t(i)")
    e = Engine(sample_config(tmp, backend={"kind": "duckdb", "path": str(path), "query_timeout": 30},
                             tables={"big": BIG_TABLE}, cache={"enabled": False},
                             analysts={"alice": {"epsilon": 1.0e6, "delta": 0.5},
                                       "bob": {"epsilon": 1.0e6, "delta": 0.5}}))
    yield e
    e.close()


@pytest.fixture
def serve(engine: Engine) -> Iterator[Callable[..., RunningServer]]:
    """Start a wire server on the module's engine with some settings (trust auth)."""
    servers: list[RunningServer] = []

    def start(**settings: Any) -> RunningServer:
        srv = RunningServer(engine, auth="trust", **settings)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def connect(srv: RunningServer, user: str = "alice") -> psycopg.Connection:
    return psycopg.connect(srv.dsn(user), autocommit=True)


def failure(conn: psycopg.Connection, sql: str, params: Any = None) -> tuple[str | None, float]:
    """(SQLSTATE, seconds) of a statement expected to fail."""
    start = time.monotonic()
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, params).fetchall()
    return info.value.sqlstate, time.monotonic() - start


def simple_query_state(conn: psycopg.Connection, sql: str) -> str | None:
    """SQLSTATE of ``sql`` sent as a simple Query message (psycopg itself uses Parse/Bind/Execute)."""
    result = conn.pgconn.exec_(sql.encode())
    state = result.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    return state.decode() if state else None


def cancel_after(conn: psycopg.Connection, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, conn.cancel_safe)
    timer.start()
    return timer


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def idle(srv: RunningServer, seconds: float = 3.0) -> bool:
    """Whether every statement's work stopped (worker threads free) within ``seconds``."""
    return wait_until(lambda: srv.server.busy == 0, seconds)


# --------------------------------------------------------------------- cancel


def test_cancel_stops_a_long_catalog_statement(serve) -> None:
    srv = serve(query_timeout=60)
    with connect(srv) as conn:
        cancel_after(conn, 0.5)
        state, seconds = failure(conn, SERIES)
        assert state == "57014" and seconds < 5
        assert idle(srv), "the catalog statement kept running after its cancel"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_stops_a_long_dp_query_and_its_budget_stays_spent(serve, engine: Engine) -> None:
    srv = serve(query_timeout=60)
    before = engine.budget("alice").epsilon_spent
    with connect(srv) as conn:
        conn.execute("SET privsql.epsilon = 0.25")
        cancel_after(conn, 0.5)
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute(BIG_COUNT).fetchall()
        assert time.monotonic() - start < 5
        assert "budget stays spent" in str(info.value)
        assert idle(srv), "the backend query kept running after its cancel"
        assert engine.budget("alice").epsilon_spent == pytest.approx(before + 0.25)
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] > 0


def test_timeouts_interrupt_catalog_and_dp_work(serve) -> None:
    srv = serve(query_timeout=1)
    with connect(srv) as conn:
        state, seconds = failure(conn, SERIES)
        assert state == "57014" and 0.9 <= seconds < 4
        assert idle(srv)
        conn.execute("SET statement_timeout = '500ms'")
        state, seconds = failure(conn, BIG_COUNT)
        assert state == "57014" and 0.4 <= seconds < 4
        assert idle(srv)
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] > 0


def _raw_query_then_hang_up(port: int, user: str, sql: str) -> None:
    """Start ``sql`` over a bare socket (trust auth) and close the socket while it runs."""
    body = b"user\x00" + user.encode() + b"\x00database\x00privsql\x00\x00"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
        received = b""
        while b"Z\x00\x00\x00\x05" not in received:
            received += sock.recv(65536)
        text = sql.encode() + b"\x00"
        sock.sendall(b"Q" + struct.pack("!i", 4 + len(text)) + text)
        time.sleep(0.5)


def test_a_client_disconnect_interrupts_its_statement(serve) -> None:
    srv = serve(query_timeout=60)
    _raw_query_then_hang_up(srv.port, "alice", SERIES)
    assert idle(srv), "the statement kept running after its client went away"
    _raw_query_then_hang_up(srv.port, "alice", BIG_COUNT)
    assert idle(srv), "the DP query kept running after its client went away"


# ------------------------------------------------------------ size and depth


@pytest.mark.parametrize("form", list(DEEP))
def test_deep_nesting_is_54001_and_the_connection_stays_usable(serve, form: str) -> None:
    srv = serve()
    with connect(srv) as conn:
        assert failure(conn, DEEP[form])[0] == "54001"
        assert simple_query_state(conn, DEEP[form]) == "54001"
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] > 0


def test_deep_nesting_and_huge_statements_in_process(engine: Engine) -> None:
    """The DB-API/CLI path (the engine) refuses them with the same SQLSTATEs."""
    for sql in DEEP.values():
        with pytest.raises(StatementTooComplex):
            engine.execute(sql, analyst="alice", epsilon=0.1)
    with pytest.raises(StatementTooLarge):
        engine.execute(HUGE + " " * (1 << 20), analyst="alice", epsilon=0.1)


def test_huge_statement_is_54000_and_the_connection_stays_usable(serve) -> None:
    srv = serve(max_statement_size=500_000)
    with connect(srv) as conn:
        state, seconds = failure(conn, HUGE + " AND age > %s", (1,))
        assert state == "54000" and seconds < 2
        assert simple_query_state(conn, HUGE) == "54000"
        assert simple_query_state(conn, MANY_TOKENS) == "54000"  # 80 kB, but 30,000 tokens
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] > 0


def test_parsing_has_a_time_limit(serve) -> None:
    """A statement under the size limit that takes too long to parse is stopped (54001)."""
    srv = serve()
    with connect(srv) as conn:
        state, seconds = failure(conn, SLOW_TO_PARSE)
        assert state == "54001" and 1.9 < seconds < 10
        assert idle(srv)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --------------------------------------------------------- one analyst vs others


def test_per_analyst_limit_on_concurrent_statements(serve) -> None:
    srv = serve(max_statements_per_analyst=2, queue_timeout=0.5, query_timeout=30)
    bobs = [connect(srv, "bob") for _ in range(3)]
    errors: list[str | None] = []

    def run(conn: psycopg.Connection) -> None:
        try:
            conn.execute(SERIES).fetchall()
        except psycopg.Error as exc:
            errors.append(exc.sqlstate)

    threads = [threading.Thread(target=run, args=(c,)) for c in bobs[:2]]
    try:
        for t in threads:
            t.start()
        assert wait_until(lambda: srv.server.busy == 2, 5)
        state, seconds = failure(bobs[2], "SELECT count(*) FROM pg_class")
        assert state == "53300" and seconds < 3
        with connect(srv, "alice") as alice:
            assert alice.execute("SELECT count(*) FROM pg_class").fetchone()[0] >= 0
    finally:
        for conn in bobs[:2]:
            conn.cancel_safe()
        for t in threads:
            t.join(10)
    assert errors == ["57014", "57014"]
    assert idle(srv)
    assert bobs[2].execute("SELECT count(*) FROM pg_class").fetchone()[0] >= 0
    for conn in bobs:
        conn.close()


def test_a_statement_whose_deadline_passes_while_queued_never_runs(serve, engine: Engine) -> None:
    srv = serve(max_statements_per_analyst=1, queue_timeout=10, query_timeout=30)
    with connect(srv, "bob") as busy, connect(srv, "bob") as queued:
        thread = threading.Thread(target=_run_quietly, args=(busy, SERIES))
        thread.start()
        try:
            assert wait_until(lambda: srv.server.busy == 1, 5)
            spent = engine.budget("bob").epsilon_spent
            queued.execute("SET statement_timeout = '300ms'")
            state, seconds = failure(queued, "SELECT COUNT(*) FROM people")
            assert state == "57014" and seconds < 3
            assert engine.budget("bob").epsilon_spent == spent, "the queued DP query ran"
        finally:
            busy.cancel_safe()
            thread.join(10)
    assert idle(srv)


def test_another_analyst_stays_fast_while_one_sends_pathological_statements(serve) -> None:
    srv = serve(query_timeout=3)
    stop = threading.Event()
    bad = [SERIES, MANY_TOKENS, DEEP["parentheses"], HUGE + " " * (1 << 20), DEEP["or chain"], SLOW_TO_PARSE]

    def bob(i: int) -> None:
        with connect(srv, "bob") as conn:
            while not stop.is_set():
                try:
                    conn.execute(bad[i % len(bad)]).fetchall()
                except psycopg.Error:
                    pass
                i += 1

    threads = [threading.Thread(target=bob, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    select_one, dp = [], []
    try:
        time.sleep(0.5)
        with connect(srv, "alice") as alice:
            alice.execute("SET privsql.epsilon = 0.01")
            end = time.monotonic() + 5
            while time.monotonic() < end:
                start = time.monotonic()
                alice.execute("SELECT 1").fetchone()
                select_one.append(time.monotonic() - start)
                if len(select_one) % 10 == 0:
                    start = time.monotonic()
                    alice.execute("SELECT COUNT(*) FROM people").fetchone()
                    dp.append(time.monotonic() - start)
                time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    select_one.sort()
    assert select_one[len(select_one) // 2] < 0.2, select_one
    assert max(select_one) < 3 and max(dp) < 5, (select_one[-5:], dp)
    assert idle(srv, 5)


# ------------------------------------------------------------------ shutdown


def test_sigterm_interrupts_running_work_and_exits_in_time(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "privsql.yaml").read_text())
    for table in raw["tables"].values():
        table["source"] = str(ROOT / table["source"])
    raw["budget_store"] = {"kind": "sqlite", "path": str(tmp_path / "budget.sqlite")}
    port = free_port()
    raw["server"] = {"auth": "trust", "host": "127.0.0.1", "port": port, "shutdown_grace": 1}
    config = tmp_path / "privsql.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "privsql.cli", "serve", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert wait_until(lambda: _accepts(port), 30), "privsql serve did not start"
        conn = psycopg.connect(f"host=127.0.0.1 port={port} user=alice dbname=privsql", autocommit=True)
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(_run_quietly(conn, SERIES)))
        thread.start()
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - start < 10
        thread.join(5)
        assert outcome and outcome[0] != "ok"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _run_quietly(conn: psycopg.Connection, sql: str) -> str:
    try:
        conn.execute(sql).fetchall()
        return "ok"
    except psycopg.Error as exc:
        return exc.sqlstate or type(exc).__name__
