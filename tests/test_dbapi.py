"""The PEP 249 driver (privsql.dbapi): conformance in the style of the classic dbapi20 suite,
privsql's extensions (cursor.privacy, explain, budget), parameter binding, error mapping,
thread safety and remote mode against an in-process ``privsql serve``."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEFAULT_CONFIG, ROOT, sample_config

import privsql.errors as perr
from privsql import dbapi
from privsql.config import Config
from privsql.dbapi import _placeholders_to_numbers as renumber
from privsql.engine import Engine

COUNT = "SELECT COUNT(*) AS n FROM people"
GROUPED = "SELECT sex, COUNT(*) AS n, AVG(income) AS avg_income FROM people GROUP BY sex"
# A small budget shared by racing threads; the answer cache is off so that every query is charged.
SMALL = {"epsilon": 3.0, "delta": 0.0}
ANALYSTS = {"alice": {"epsilon": 1.0e6, "delta": 0.5}, "tiny": SMALL, "tiny2": SMALL, "broke": {"epsilon": 0.5}}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return sample_config(tmp_path_factory.mktemp("dbapi"), analysts=ANALYSTS, cache={"enabled": False})


@pytest.fixture(scope="module")
def con(config: Config) -> Iterator[dbapi.Connection]:
    connection = dbapi.connect(config=config, analyst="alice")
    yield connection
    connection.close()


@pytest.fixture
def cur(con: dbapi.Connection) -> Iterator[dbapi.Cursor]:
    cursor = con.cursor()
    yield cursor
    cursor.close()


def config_file(directory: Path, **changes: Any) -> Path:
    """The sample config as a file of its own: absolute data paths, a budget store in ``directory``."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for table in raw["tables"].values():
        if table.get("source"):
            table["source"] = str(ROOT / table["source"])
    raw["budget_store"] = {"kind": "sqlite", "path": str(directory / "budget.sqlite")}
    raw.update(changes)
    path = directory / "privsql.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- module interface


def test_module_globals() -> None:
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety == 2
    assert dbapi.paramstyle == "pyformat"


def test_exception_hierarchy() -> None:
    assert issubclass(dbapi.Warning, Exception)
    assert issubclass(dbapi.Error, Exception)
    for cls in (dbapi.InterfaceError, dbapi.DatabaseError):
        assert issubclass(cls, dbapi.Error)
    for cls in (dbapi.DataError, dbapi.OperationalError, dbapi.IntegrityError, dbapi.InternalError,
                dbapi.ProgrammingError, dbapi.NotSupportedError):
        assert issubclass(cls, dbapi.DatabaseError)
    assert issubclass(dbapi.PrivacyRefused, dbapi.ProgrammingError)
    assert issubclass(dbapi.BudgetExhausted, dbapi.OperationalError)


def test_exceptions_as_connection_attributes(con: dbapi.Connection) -> None:
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert getattr(con, name) is getattr(dbapi, name)


def test_type_objects_and_constructors() -> None:
    assert dbapi.NUMBER == dbapi.TYPE_CODES["bigint"] == 20
    assert dbapi.NUMBER == dbapi.TYPE_CODES["double"]
    assert dbapi.STRING == dbapi.TYPE_CODES["text"]
    assert dbapi.DATETIME == dbapi.TYPE_CODES["date"]
    assert dbapi.STRING != dbapi.TYPE_CODES["bigint"]
    assert dbapi.BINARY != dbapi.TYPE_CODES["text"] and dbapi.ROWID != dbapi.TYPE_CODES["text"]
    assert dbapi.Date(2024, 2, 29) == dt.date(2024, 2, 29)
    assert dbapi.Time(13, 5, 0) == dt.time(13, 5)
    assert dbapi.Timestamp(2024, 2, 29, 13, 5) == dt.datetime(2024, 2, 29, 13, 5)
    assert isinstance(dbapi.DateFromTicks(0), dt.date)
    assert isinstance(dbapi.TimeFromTicks(0), dt.time)
    assert isinstance(dbapi.TimestampFromTicks(0), dt.datetime)
    assert dbapi.Binary(b"x") == b"x"


# ---------------------------------------------------------------- connection


def test_commit_and_rollback_are_noops(con: dbapi.Connection) -> None:
    con.commit()
    con.rollback()
    assert con.autocommit is True


def test_close_semantics(config: Config) -> None:
    c = dbapi.connect(config=config, analyst="alice")
    cur = c.cursor()
    c.close()
    c.close()  # a second close is harmless
    assert c.closed
    for op in (c.cursor, c.commit, c.rollback, c.budget, lambda: cur.execute(COUNT), cur.fetchall,
               lambda: c.explain(COUNT)):
        with pytest.raises(dbapi.InterfaceError):
            op()


def test_context_managers(config: Config) -> None:
    with dbapi.connect(config=config, analyst="alice") as c:
        with c.cursor() as cur:
            assert cur.execute(COUNT).fetchone() is not None
        assert cur.closed
        with pytest.raises(dbapi.InterfaceError):
            cur.execute(COUNT)
    assert c.closed


def test_connections_share_one_engine_per_config(config: Config, con: dbapi.Connection) -> None:
    other = dbapi.connect(config=config, analyst="bob")
    try:
        assert other.engine is con.engine
    finally:
        other.close()
    assert not con.closed and con.engine.budget("alice")  # closing one connection leaves the engine open


def test_engine_argument_is_never_closed(config: Config, con: dbapi.Connection) -> None:
    engine = con.engine
    with dbapi.connect(engine=engine, analyst="bob") as c:
        assert c.engine is engine
    assert engine.budget("bob").analyst == "bob"  # still usable


def test_config_path_engine_cache_and_persistent_budget(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    before = len(dbapi._engines)
    a = dbapi.connect(config=str(path), analyst="bob")
    b = dbapi.connect(config=path, analyst="alice")
    assert a.engine is b.engine and len(dbapi._engines) == before + 1
    a.cursor().execute(COUNT, epsilon=0.5)
    a.close()
    b.close()
    assert len(dbapi._engines) == before  # the last close closes the engine
    with dbapi.connect(config=path, analyst="bob") as again:  # a new engine on the same budget store
        assert again.budget().epsilon_spent == pytest.approx(0.5)


def test_connect_errors(tmp_path: Path, config: Config) -> None:
    with pytest.raises(dbapi.InvalidAuthorization) as info:
        dbapi.connect(config=config, analyst="mallory")
    assert info.value.sqlstate == "28000"
    with pytest.raises(dbapi.OperationalError) as info2:
        dbapi.connect(config=tmp_path / "missing.yaml", analyst="alice")
    assert info2.value.sqlstate == "F0000"
    with pytest.raises(dbapi.InterfaceError):
        dbapi.connect("config/privsql.yaml")  # a path is config=, not a dsn
    with pytest.raises(dbapi.InvalidParameter):
        dbapi.connect(config=config, analyst="alice", epsilon="1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- cursor


def test_description(cur: dbapi.Cursor) -> None:
    assert cur.description is None
    cur.execute(GROUPED)
    desc = cur.description
    assert desc is not None and [d.name for d in desc] == ["sex", "n", "avg_income"]
    assert all(len(d) == 7 for d in desc)
    assert desc[0].type_code == dbapi.STRING
    assert desc[1].type_code == dbapi.NUMBER and desc[1].type_code.name == "bigint"
    assert desc[2].type_code == dbapi.NUMBER and desc[2].type_code.name == "double"
    cur.execute("ROLLBACK")
    assert cur.description is None


def test_rowcount(cur: dbapi.Cursor) -> None:
    assert cur.rowcount == -1
    cur.execute(GROUPED)
    assert cur.rowcount == 2
    cur.execute("BEGIN")
    assert cur.rowcount == -1


def test_fetchone(cur: dbapi.Cursor) -> None:
    with pytest.raises(dbapi.ProgrammingError):
        cur.fetchone()  # nothing executed yet
    cur.execute("COMMIT")
    with pytest.raises(dbapi.ProgrammingError):
        cur.fetchone()  # no result set
    cur.execute(COUNT)
    row = cur.fetchone()
    assert isinstance(row, tuple) and len(row) == 1 and isinstance(row[0], int)
    assert cur.fetchone() is None
    assert cur.rownumber == 1


def test_fetchmany(cur: dbapi.Cursor) -> None:
    cur.execute("SELECT educ, COUNT(*) FROM people GROUP BY educ")  # 16 public keys: 16 rows
    assert cur.arraysize == 1
    assert len(cur.fetchmany()) == 1
    cur.arraysize = 5
    assert len(cur.fetchmany()) == 5
    assert len(cur.fetchmany(7)) == 7
    assert len(cur.fetchmany(100)) == 3
    assert cur.fetchmany() == []
    with pytest.raises(dbapi.ProgrammingError):
        cur.fetchmany(-1)


def test_fetchall_and_mixed_fetches(cur: dbapi.Cursor) -> None:
    cur.execute("SELECT race, COUNT(*) FROM people GROUP BY race")
    first = cur.fetchone()
    rest = cur.fetchall()
    assert first is not None and len(rest) == 5
    assert sorted([first[0]] + [r[0] for r in rest]) == [1, 2, 3, 4, 5, 6]
    assert cur.fetchall() == []


def test_iteration(cur: dbapi.Cursor) -> None:
    rows = list(cur.execute(GROUPED))
    assert sorted(r[0] for r in rows) == ["0", "1"]
    assert iter(cur) is cur


def test_cursors_are_isolated(con: dbapi.Connection) -> None:
    a, b = con.cursor(), con.cursor()
    a.execute(GROUPED)
    b.execute(COUNT)
    assert len(a.fetchall()) == 2 and len(b.fetchall()) == 1


def test_executemany_keeps_each_result_set(cur: dbapi.Cursor) -> None:
    cur.executemany("SELECT COUNT(*) FROM people WHERE sex = %s", [["0"], ["1"], ["2"]])
    counts = [cur.fetchone()]
    while cur.nextset():
        counts.append(cur.fetchone())
    assert len(counts) == 3 and all(isinstance(c, tuple) for c in counts)
    assert cur.nextset() is None


def test_optional_methods(cur: dbapi.Cursor) -> None:
    cur.setinputsizes([None])
    cur.setoutputsize(10)
    with pytest.raises(dbapi.NotSupportedError):
        cur.callproc("anything")
    assert cur.lastrowid is None
    assert cur.connection is not None


def test_session_statements_are_answered_locally(con: dbapi.Connection, cur: dbapi.Cursor) -> None:
    spent = con.budget().epsilon_spent
    for statement in ("BEGIN", "START TRANSACTION READ ONLY", "COMMIT", "ROLLBACK", "END;", "SAVEPOINT s1"):
        assert cur.execute(statement).description is None
    assert cur.execute("SELECT 1").fetchall() == [(1,)]
    assert cur.description is not None and cur.description[0].name == "?column?"
    assert cur.execute("SELECT 1 AS one, 'x' AS s, -2.5 AS d, NULL AS z").fetchall() == [
        (1, "x", decimal.Decimal("-2.5"), None)]
    assert cur.execute("SELECT %s AS p", [7]).fetchall() == [(7,)]
    assert cur.privacy is None
    assert con.budget().epsilon_spent == spent  # nothing charged


# ---------------------------------------------------------------- privsql extensions


def test_cursor_privacy_report(con: dbapi.Connection, cur: dbapi.Cursor) -> None:
    before = con.budget()
    cur.execute(GROUPED)
    report = cur.privacy
    assert report is not None and report.analyst == "alice"
    assert report.epsilon == pytest.approx(1.0)  # the config default
    assert report.epsilon_remaining == pytest.approx(before.epsilon_remaining - 1.0)
    accuracy = {c.column: c for c in report.columns}
    assert accuracy["sex"].mechanism == "none"
    assert accuracy["n"].scale > 0 and accuracy["n"].ci95 > 0
    assert accuracy["avg_income"].ci95 > 0
    assert any("remaining" in n for n in cur.notices)


def test_per_connection_and_per_query_epsilon(config: Config) -> None:
    with dbapi.connect(config=config, analyst="alice", epsilon=0.5) as c:
        cur = c.cursor()
        assert cur.execute(COUNT).privacy.epsilon == pytest.approx(0.5)  # type: ignore[union-attr]
        assert cur.execute(COUNT, epsilon=0.25).privacy.epsilon == pytest.approx(0.25)  # type: ignore[union-attr]
        c.epsilon = 2.0
        assert cur.execute(COUNT).privacy.epsilon == pytest.approx(2.0)  # type: ignore[union-attr]


def test_explain_spends_nothing(con: dbapi.Connection, cur: dbapi.Cursor) -> None:
    before = con.budget()
    plan = con.explain("SELECT COUNT(*) FROM people WHERE age > %s", [30], epsilon=0.5)
    assert plan.epsilon == pytest.approx(0.5) and plan.delta == 0
    assert [c.name for c in plan.columns] == ["count"]
    items = dict(plan.rows)
    assert "cost" in items and "WHERE age > 30" in items["backend sql"]
    assert "backend sql" in str(plan)
    cur.execute("EXPLAIN SELECT sex, COUNT(*) FROM people GROUP BY sex")
    assert [d.name for d in cur.description or ()] == ["item", "detail"]
    assert cur.fetchone() == ("cost", "ε = 1, δ = 0")
    after = con.budget()
    assert (after.epsilon_spent, after.queries) == (before.epsilon_spent, before.queries)


def test_public_table_is_exact_and_free(con: dbapi.Connection, cur: dbapi.Cursor) -> None:
    before = con.budget().epsilon_spent
    assert con.explain("SELECT COUNT(*) FROM depts").epsilon == 0
    assert cur.execute("SELECT COUNT(*) FROM depts").fetchone() is not None
    assert con.budget().epsilon_spent == before


def test_budget(con: dbapi.Connection) -> None:
    status = con.budget()
    assert status.analyst == "alice" and status.epsilon_total == 1.0e6
    assert status.epsilon_remaining == pytest.approx(status.epsilon_total - status.epsilon_spent)


def test_tables_metadata(con: dbapi.Connection) -> None:
    tables = con.tables()
    assert set(tables) == {"people", "visits", "depts"}
    assert tables["people"].privacy_unit == "pid" and not tables["depts"].is_private
    assert tables["people"].columns["age"].upper == 100


# ---------------------------------------------------------------- parameters


def test_injection_through_a_parameter_counts_nothing(con: dbapi.Connection, cur: dbapi.Cursor) -> None:
    for value in ["0' OR '1'='1", "0'; SELECT COUNT(*) FROM visits; --"]:
        queries = con.budget().queries
        (count,) = cur.execute("SELECT COUNT(*) FROM people WHERE sex = %s", [value]).fetchone()  # type: ignore[misc]
        assert count < 30  # Laplace noise on 0 at ε = 1 (95% within ±3); the real count is about 1000
        assert con.budget().queries == queries + 1  # one statement ran, and it was charged once
        ledger = con.engine.ledger("alice", 1)[0]
        assert ledger.sql_text == "SELECT COUNT(*) FROM people WHERE sex = '" + value.replace("'", "''") + "'"


def test_parameter_types(cur: dbapi.Cursor) -> None:
    params = {"lo": 18, "hi": decimal.Decimal("65.5"), "sex": "1", "f": 0.0, "none": None}
    cur.execute("SELECT COUNT(*) FROM people WHERE age BETWEEN %(lo)s AND %(hi)s AND sex = %(sex)s "
                "AND income >= %(f)s AND educ IS DISTINCT FROM %(none)s AND age > %(lo)s", params)
    assert cur.rowcount == 1
    cur.execute("SELECT COUNT(*) FROM visits WHERE day >= %s", ["2025-01-01"])
    assert cur.rowcount == 1
    with pytest.raises(dbapi.InvalidParameter) as info:
        cur.execute("SELECT COUNT(*) FROM people WHERE age > %s", [float("nan")])
    assert info.value.sqlstate == "22023"


def test_date_parameters(cur: dbapi.Cursor) -> None:
    cur.execute("SELECT COUNT(*) FROM visits WHERE day >= %s AND day < %s",
                [dt.date(2025, 1, 1), dt.datetime(2030, 1, 1, 12, 30)])
    assert cur.rowcount == 1


def test_placeholder_count_mismatch(cur: dbapi.Cursor) -> None:
    for sql, params in [("SELECT COUNT(*) FROM people WHERE sex = %s", ["0", "1"]),
                        ("SELECT COUNT(*) FROM people WHERE sex = %s AND age > %s", ["0"]),
                        ("SELECT COUNT(*) FROM people WHERE sex = %(s)s", {"t": 1}),
                        ("SELECT COUNT(*) FROM people WHERE sex = %(s)s", ["0"]),
                        ("SELECT COUNT(*) FROM people WHERE sex = %s", {"s": "0"})]:
        with pytest.raises(dbapi.ProgrammingError) as info:
            cur.execute(sql, params)
        assert info.value.sqlstate == "42P02"
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("SELECT COUNT(*) FROM people WHERE sex = %s", "0")  # a str is not a parameter sequence


@pytest.mark.parametrize("sql, params, expected", [
    ("a = %s AND b = %s", [1, 2], ("a = $1 AND b = $2", [1, 2])),
    ("a = %(x)s OR b = %(x)s OR c = %(y)s", {"x": 1, "y": 2, "extra": 3}, ("a = $1 OR b = $1 OR c = $2", [1, 2])),
    ("a %% 2 = %s", [0], ("a %  2 = $1", [0])),
    ("x LIKE 'a%%' AND y = %s", ["v"], ("x LIKE 'a%' AND y = $1", ["v"])),
    ("x = '%s' AND y = %s", ["v"], ("x = '%s' AND y = $1", ["v"])),  # quoted: not a placeholder
    ("x = E'it\\'s %s' AND y = %s", ["v"], ("x = E'it\\'s %s' AND y = $1", ["v"])),
    ('"we%%ird" = %s', [1], ('"we%ird" = $1', [1])),
    ("x = $q$ %s $q$ AND y = %s", [1], ("x = $q$ %s $q$ AND y = $1", [1])),
    ("a = %s -- %s\n", [1], ("a = $1 -- %s\n", [1])),
    ("a = %s /* %s /* %s */ */", [1], ("a = $1 /* %s /* %s */ */", [1])),
    ("a = %sb", [1], ("a = $1 b", [1])),
    ("a LIKE 'x%'", None, ("a LIKE 'x%'", None)),  # no parameters: the text as is
    ("a %% 2", None, ("a %% 2", None)),
    ("a = 1", [], ("a = 1", None)),
    ("a = $1", [5], ("a = $1", [5])),  # the engine's own styles pass through
    ("a = :name", {"name": 5}, ("a = :name", {"name": 5})),
])
def test_placeholder_renumbering(sql: str, params: Any, expected: tuple[str, Any]) -> None:
    assert renumber(sql, params) == expected


def test_mixed_placeholder_styles_are_refused() -> None:
    with pytest.raises(dbapi.UndefinedParameter):
        renumber("a = %s AND b = $1", [1])


def test_nested_positional_placeholders_bind_in_text_order(cur: dbapi.Cursor) -> None:
    """$n numbering keeps values in text order however deep the placeholder sits in the tree."""
    cur.execute("SELECT COUNT(*) FROM people WHERE (age + %s) > 1000 AND sex = %s", [1000, "1"])
    (count,) = cur.fetchone()  # type: ignore[misc]
    assert 300 < count < 700  # sex = '1' and age > 0: about half the people


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sql, cls, sqlstate", [
    ("SELECT COUNT(* FROM people", dbapi.QuerySyntaxError, "42601"),
    ("SELECT COUNT(*) FROM nope", dbapi.UndefinedTable, "42P01"),
    ("SELECT COUNT(nope) FROM people", dbapi.UndefinedColumn, "42703"),
    ("SELECT COUNT(*) FROM people WHERE sex + 1 > 2", dbapi.DatatypeMismatch, "42804"),
    ("SELECT pid FROM people", dbapi.PrivacyRefused, "42501"),
    ("SELECT SUM(pid) FROM people", dbapi.PrivacyRefused, "42501"),
    ("DELETE FROM people", dbapi.PrivacyRefused, "42501"),
    ("SELECT string_agg(sex, ',') FROM people", dbapi.NotSupportedError, "0A000"),
    ("SELECT COUNT(*) FROM people; SELECT 1", dbapi.NotSupportedError, "0A000"),
])
def test_refusals_map_to_dbapi_exceptions(con: dbapi.Connection, cur: dbapi.Cursor, sql: str,
                                          cls: type[dbapi.Error], sqlstate: str) -> None:
    spent = con.budget().epsilon_spent
    with pytest.raises(cls) as info:
        cur.execute(sql)
    assert info.value.sqlstate == sqlstate and info.value.message
    assert isinstance(info.value.__cause__, perr.PrivsqlError)
    assert con.budget().epsilon_spent == spent  # refusals cost nothing
    assert cur.description is None
    assert cur.execute(COUNT).fetchone() is not None  # the connection and the cursor still work


def test_budget_exhausted(config: Config) -> None:
    with dbapi.connect(config=config, analyst="broke") as c:
        cur = c.cursor()
        with pytest.raises(dbapi.BudgetExhausted) as info:
            cur.execute(COUNT)  # needs ε = 1, has 0.5
        assert info.value.sqlstate == "53400" and isinstance(info.value, dbapi.OperationalError)
        assert cur.execute(COUNT, epsilon=0.5).fetchone() is not None  # still usable
        with pytest.raises(dbapi.InvalidParameter):
            cur.execute(COUNT, epsilon=-1)


def _privsql_error_classes() -> list[type[perr.PrivsqlError]]:
    return [c for c in vars(perr).values()
            if isinstance(c, type) and issubclass(c, perr.PrivsqlError) and c is not perr.PrivsqlError]


EXPECTED = {
    "QuerySyntaxError": dbapi.ProgrammingError, "UndefinedTable": dbapi.ProgrammingError,
    "UndefinedColumn": dbapi.ProgrammingError, "DatatypeMismatch": dbapi.ProgrammingError,
    "PrivacyRefused": dbapi.PrivacyRefused, "UnsupportedQuery": dbapi.NotSupportedError,
    "BudgetExhausted": dbapi.BudgetExhausted, "InvalidParameter": dbapi.DataError,
    "QueryCanceled": dbapi.OperationalError, "BackendError": dbapi.OperationalError,
    "BudgetStoreError": dbapi.OperationalError, "ConfigError": dbapi.OperationalError,
    "UnknownAnalyst": dbapi.OperationalError,
}


@pytest.mark.parametrize("cls", _privsql_error_classes(), ids=lambda c: c.__name__)
def test_every_engine_error_class_has_a_mapping(cls: type[perr.PrivsqlError]) -> None:
    error = dbapi._translate(cls("boom", position=3, hint="try this"))
    assert isinstance(error, EXPECTED.get(cls.__name__, dbapi.DatabaseError))
    assert (error.sqlstate, error.message, error.position, error.hint) == (cls.sqlstate, "boom", 3, "try this")


# ---------------------------------------------------------------- threads


def _race(run_one: Any, threads: int = 8, per_thread: int = 4) -> tuple[int, int, list[BaseException]]:
    barrier = threading.Barrier(threads)
    ok, refused, other = [0], [0], []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            try:
                run_one(i, j)
                with lock:
                    ok[0] += 1
            except dbapi.BudgetExhausted:
                with lock:
                    refused[0] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                other.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return ok[0], refused[0], other


def test_threads_sharing_one_connection_never_overspend(config: Config) -> None:
    with dbapi.connect(config=config, analyst="tiny", epsilon=0.25) as shared:
        def one(i: int, j: int) -> None:
            cur = shared.cursor()  # threadsafety 2: the connection is shared, cursors are not
            assert cur.execute("SELECT COUNT(*) FROM people WHERE age > %s", [i * 10 + j]).fetchone()

        ok, refused, other = _race(one)
        assert other == []
        assert (ok, refused) == (12, 20)  # 3.0 / 0.25 queries fit, exactly
        status = shared.budget()
        assert status.epsilon_spent == pytest.approx(3.0) and status.queries == 12


def test_threads_with_their_own_connections_never_overspend(config: Config) -> None:
    connections = [dbapi.connect(config=config, analyst="tiny2", epsilon=0.25) for _ in range(8)]
    try:
        ok, refused, other = _race(lambda i, j: connections[i].cursor().execute(COUNT).fetchall())
        assert other == []
        assert (ok, refused) == (12, 20)
        assert connections[0].budget().epsilon_spent == pytest.approx(3.0)
    finally:
        for c in connections:
            c.close()


# ---------------------------------------------------------------- remote mode (privsql serve)

PASSWORD = "dbapi-test-pw"


class _Server:
    def __init__(self, engine: Engine) -> None:
        from privsql.server.settings import load_settings
        from privsql.server.transport import WireServer

        self.loop = asyncio.new_event_loop()
        self.server = WireServer(engine, load_settings(None, host="127.0.0.1", port=0))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host, self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def url(self, user: str = "alice", password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/privsql"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(grace=1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    from privsql.server.auth import make_verifier

    verifier = make_verifier(PASSWORD)
    analysts = {"alice": {"epsilon": 100.0, "delta": 1e-6, "password": verifier},
                "broke": {"epsilon": 0.5, "delta": 0.0, "password": verifier}}
    engine = Engine(sample_config(tmp_path_factory.mktemp("remote"), analysts=analysts))
    srv = _Server(engine)
    yield srv
    srv.stop()
    engine.close()


def test_remote_query_privacy_and_parameters(server: _Server) -> None:
    with dbapi.connect(server.url(), epsilon=0.5) as c:
        assert c.remote and c.analyst == "alice"
        cur = c.cursor()
        cur.execute("SELECT sex, COUNT(*) AS n FROM people WHERE age > %(age)s GROUP BY sex", {"age": 30})
        assert [d.name for d in cur.description or ()] == ["sex", "n"]
        assert cur.description[1].type_code == dbapi.NUMBER  # type: ignore[index]
        assert sorted(r[0] for r in cur.fetchall()) == ["0", "1"]
        assert cur.privacy is not None and cur.privacy.epsilon == pytest.approx(0.5)
        left = cur.privacy.epsilon_remaining
        cur.execute("SELECT COUNT(*) FROM people WHERE sex = %s", ["0' OR '1'='1"], epsilon=0.25)
        (count,) = cur.fetchone()  # type: ignore[misc]
        assert count < 30
        assert cur.privacy is not None and cur.privacy.epsilon == pytest.approx(0.25)
        assert cur.privacy.epsilon_remaining == pytest.approx(left - 0.25)
        assert cur.execute("SELECT 1").fetchall() == [(1,)]
        plan = c.explain(COUNT)
        assert plan.epsilon == pytest.approx(0.5) and dict(plan.rows)["cost"]
        with pytest.raises(dbapi.NotSupportedError):
            c.budget()


def test_remote_errors_carry_the_same_sqlstates(server: _Server) -> None:
    with dbapi.connect(server.url()) as c:
        cur = c.cursor()
        for sql, cls, sqlstate in [("SELECT pid FROM people", dbapi.PrivacyRefused, "42501"),
                                   ("SELECT COUNT(*) FROM nope", dbapi.UndefinedTable, "42P01"),
                                   ("SELECT string_agg(sex, ',') FROM people", dbapi.NotSupportedError, "0A000")]:
            with pytest.raises(cls) as info:
                cur.execute(sql)
            assert info.value.sqlstate == sqlstate
            assert cur.execute(COUNT, epsilon=0.1).fetchone() is not None  # usable after the error
    with dbapi.connect(server.url("broke")) as c, pytest.raises(dbapi.BudgetExhausted):
        c.cursor().execute(COUNT)
    with pytest.raises(dbapi.OperationalError):
        dbapi.connect(server.url(password="wrong"))


# ---------------------------------------------------------------- docs


def test_docs_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every embedded-mode ```python block of docs/python.md, in order, in a copy of the project
    (so the examples spend a temporary budget store, not var/budget.sqlite)."""
    import privsql

    if not hasattr(privsql, "connect"):
        pytest.skip("privsql/__init__.py does not re-export privsql.dbapi yet")
    (tmp_path / "config").mkdir()
    shutil.copy(DEFAULT_CONFIG, tmp_path / "config" / "privsql.yaml")
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    for var in ("PRIVSQL_CONFIG", "PRIVSQL_ANALYST"):
        monkeypatch.delenv(var, raising=False)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.DOTALL)
    namespace: dict[str, Any] = {}
    ran = 0
    for block in blocks:
        if "postgresql://" in block:
            continue  # remote mode: needs a running server
        exec(compile(block, "docs/python.md", "exec"), namespace)  # noqa: S102 - our own docs
        ran += 1
    assert ran >= 6
    namespace["conn"].close()
    namespace["engine"].dispose()
