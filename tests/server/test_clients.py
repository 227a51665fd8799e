"""Client conformance: real PostgreSQL clients against a proxy started by the test.

For each client: a DP query returns the right columns and types; a refused
query raises a normal SQL error with its SQLSTATE; the same connection then
answers the next query; the budget is charged to the authenticated analyst.
A client that is not installed skips locally and fails in CI (env CI=true).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from wire_helpers import (
    DP_COLUMNS, DP_QUERY, EPSILON, PARAM_QUERY, PASSWORD, REFUSED, RunningServer, need, need_module, remaining,
    which,
)

pytestmark = pytest.mark.slow


def _charged(srv: RunningServer, before_alice: float, before_bob: float) -> None:
    assert remaining(srv.engine, "alice") < before_alice
    assert remaining(srv.engine, "bob") == before_bob


def _before(srv: RunningServer) -> tuple[float, float]:
    return remaining(srv.engine, "alice"), remaining(srv.engine, "bob")


def test_psycopg3_simple_params_prepared_and_binary(engine_server: RunningServer) -> None:
    import psycopg

    srv = engine_server
    before = _before(srv)
    notices: list[str] = []
    with psycopg.connect(srv.dsn(), autocommit=True, options=f"-c privsql.epsilon={EPSILON}") as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur = conn.execute(DP_QUERY)
        assert [(d.name, conn.adapters.types[d.type_code].name) for d in cur.description] == DP_COLUMNS
        assert len(cur.fetchall()) == 1
        assert any("remaining epsilon" in n for n in notices)
        with pytest.raises(psycopg.Error) as err:
            conn.execute(REFUSED)
        assert err.value.sqlstate == "42501"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute(PARAM_QUERY.format("%s"), (30,)).fetchone()[0] is not None
        for age in range(7):  # prepared server-side after prepare_threshold
            assert conn.execute(PARAM_QUERY.format("%s"), (20 + age,), prepare=True).fetchone()
        with conn.cursor(binary=True) as bcur:
            row = bcur.execute(DP_QUERY).fetchone()
            assert isinstance(row[0], int) and isinstance(row[1], float)
        assert conn.execute("SHOW privsql.epsilon").fetchone() == (EPSILON,)
    _charged(srv, *before)


def test_psycopg3_transaction_block_needs_rollback_after_error(engine_server: RunningServer) -> None:
    import psycopg

    with psycopg.connect(engine_server.dsn(), options=f"-c privsql.epsilon={EPSILON}") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(REFUSED)
        conn.rollback()
        assert conn.execute(DP_QUERY).fetchone()


def test_psycopg2(engine_server: RunningServer) -> None:
    psycopg2 = need_module("psycopg2")
    srv = engine_server
    before = _before(srv)
    conn = psycopg2.connect(srv.dsn(), options=f"-c privsql.epsilon={EPSILON}")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(DP_QUERY)
    assert [d.name for d in cur.description] == ["n", "avg_income"]
    assert [d.type_code for d in cur.description] == [20, 701]
    with pytest.raises(psycopg2.Error) as err:
        cur.execute(REFUSED)
    assert err.value.pgcode == "42501"
    cur.execute(PARAM_QUERY.format("%s"), (30,))
    assert cur.fetchone()[0] is not None
    conn.close()
    _charged(srv, *before)


def test_asyncpg_fetch_prepared_and_binary(engine_server: RunningServer) -> None:
    asyncpg = need_module("asyncpg")
    srv = engine_server
    before = _before(srv)

    async def run() -> None:
        conn = await asyncpg.connect(host=srv.host, port=srv.port, user="alice", password=PASSWORD,
                                     database="privsql", ssl=False, server_settings={"privsql.epsilon": EPSILON})
        try:
            rows = await conn.fetch(DP_QUERY)
            assert list(rows[0].keys()) == ["n", "avg_income"]
            assert isinstance(rows[0]["n"], int) and isinstance(rows[0]["avg_income"], float)
            stmt = await conn.prepare(PARAM_QUERY.format("$1"))
            assert [a.name for a in stmt.get_parameters()] == ["int8"]
            for age in range(3):
                assert (await stmt.fetchval(20 + age)) is not None
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.fetch(REFUSED)
            assert err.value.sqlstate == "42501"
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(run())
    _charged(srv, *before)


def test_pg8000(engine_server: RunningServer) -> None:
    pg8000 = need_module("pg8000")
    import pg8000.dbapi

    srv = engine_server
    before = _before(srv)
    conn = pg8000.dbapi.connect(host=srv.host, port=srv.port, user="alice", password=PASSWORD, database="privsql",
                                startup_params={"privsql.epsilon": EPSILON})
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(DP_QUERY)
    assert [d[0] for d in cur.description] == ["n", "avg_income"]
    assert [d[1] for d in cur.description] == [20, 701]
    with pytest.raises(pg8000.dbapi.DatabaseError) as err:
        cur.execute(REFUSED)
    assert err.value.args[0]["C"] == "42501"
    cur.execute(PARAM_QUERY.format("%s"), (30,))
    assert cur.fetchone()[0] is not None
    conn.close()
    _charged(srv, *before)


def test_sqlalchemy_reflection_and_pandas_read_sql(engine_server: RunningServer) -> None:
    import pandas as pd
    import sqlalchemy as sa

    srv = engine_server
    before = _before(srv)
    engine = sa.create_engine(srv.url(), connect_args={"options": f"-c privsql.epsilon={EPSILON}"})
    with engine.connect() as conn:
        frame = pd.read_sql(DP_QUERY, conn)
        assert list(frame.columns) == ["n", "avg_income"] and len(frame) == 1
        insp = sa.inspect(conn)
        assert "people" in insp.get_table_names()
        assert "income" in [c["name"] for c in insp.get_columns("people")]
        table = sa.Table("people", sa.MetaData(), autoload_with=conn)
        assert "age" in table.c
        with pytest.raises(sa.exc.DBAPIError) as err:
            conn.execute(sa.text(REFUSED))
        assert err.value.orig.sqlstate == "42501"
        conn.rollback()
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()
    _charged(srv, *before)


def _psql(srv: RunningServer, *commands: str) -> subprocess.CompletedProcess:
    args = ["psql", "-X", "-h", srv.host, "-p", str(srv.port), "-U", "alice", "-d", "privsql", "-v", "ON_ERROR_STOP=0"]
    for c in commands:
        args += ["-c", c]
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable", "PGOPTIONS": f"-c privsql.epsilon={EPSILON}"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


def test_psql(engine_server: RunningServer) -> None:
    need(which("psql") is not None, "psql (Debian postgresql-client)")
    srv = engine_server
    before = _before(srv)
    out = _psql(srv, r"\dt", r"\d people", r"\l", DP_QUERY, REFUSED, "SELECT 1 AS after")
    assert "people" in out.stdout and "table" in out.stdout
    assert 'Table "public.people"' in out.stdout and "income" in out.stdout
    assert "avg_income" in out.stdout and "(1 row)" in out.stdout
    assert "ERROR:" in out.stderr and "after" in out.stdout
    assert "remaining epsilon" in out.stderr
    _charged(srv, *before)


JAR = Path("/usr/share/java/postgresql.jar")


def test_pgjdbc(engine_server: RunningServer, tmp_path: Path) -> None:
    need(which("javac") is not None and which("java") is not None, "Java 17 (javac)")
    need(JAR.exists(), "pgJDBC (Debian libpostgresql-jdbc-java)")
    srv = engine_server
    before = _before(srv)
    source = Path(__file__).with_name("ClientCheck.java")
    subprocess.run(["javac", "-d", str(tmp_path), str(source)], check=True, timeout=120)
    url = f"jdbc:postgresql://{srv.host}:{srv.port}/privsql?sslmode=disable&options=-c%20privsql.epsilon={EPSILON}"
    out = subprocess.run(["java", "-cp", f"{JAR}:{tmp_path}", "ClientCheck", url, "alice", PASSWORD, DP_QUERY,
                          REFUSED, PARAM_QUERY.format("?")], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert "COLUMNS n:int8 avg_income:float8" in lines
    assert "REFUSED 42501" in lines
    assert "AFTER 1" in lines
    assert sum(line.startswith("PREPARED") for line in lines) == 7
    assert "TABLE people" in lines
    assert any(line.startswith("COLUMN income") for line in lines)
    _charged(srv, *before)


def test_psqlodbc_via_pyodbc(engine_server: RunningServer) -> None:
    pyodbc = need_module("pyodbc")
    need("PostgreSQL Unicode" in pyodbc.drivers(), "psqlODBC (Debian odbc-postgresql)")
    srv = engine_server
    before = _before(srv)
    conn = pyodbc.connect(
        f"DRIVER={{PostgreSQL Unicode}};SERVER={srv.host};PORT={srv.port};DATABASE=privsql;UID=alice;"
        f"PWD={PASSWORD};SSLmode=disable;ConnSettings=SET privsql.epsilon={EPSILON}", autocommit=True)
    cur = conn.cursor()
    cur.execute(DP_QUERY)
    assert [d[0] for d in cur.description] == ["n", "avg_income"]
    assert len(cur.fetchall()) == 1
    with pytest.raises(pyodbc.Error) as err:
        cur.execute(REFUSED)
    assert "42501" in str(err.value)
    cur.execute(PARAM_QUERY.format("?"), 30)
    assert cur.fetchone()[0] is not None
    assert "people" in [r.table_name for r in cur.tables(tableType="TABLE")]
    assert "income" in [r.column_name for r in cur.columns(table="people")]
    conn.close()
    _charged(srv, *before)
