"""The SQLAlchemy 2 dialect (privsql.sqlalchemy_dialect): URLs, reflection from the config,
Core queries, pandas round trips, and ``privsql+remote://`` against an in-process server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql
from test_dbapi import COUNT, GROUPED, config_file, server  # noqa: F401 - server: a fixture

from privsql import dbapi
from privsql.sqlalchemy_dialect import PrivsqlDialect, PrivsqlRemoteDialect

ANALYSTS = {"alice": {"epsilon": 1.0e6, "delta": 0.5}, "bob": {"epsilon": 5.0, "delta": 0.0}}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return config_file(tmp_path_factory.mktemp("sqla"), analysts=ANALYSTS)


@pytest.fixture(scope="module")
def engine(config_path: Path) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"privsql:///{config_path}?analyst=alice")
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def people(engine: sa.Engine) -> sa.Table:
    return sa.Table("people", sa.MetaData(), autoload_with=engine)


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize("url, expected", [
    ("privsql:///config/privsql.yaml?analyst=alice", {"config": "config/privsql.yaml", "analyst": "alice"}),
    ("privsql:////srv/privsql/p.yaml?analyst=bob&epsilon=0.5&delta=1e-9",
     {"config": "/srv/privsql/p.yaml", "analyst": "bob", "epsilon": 0.5, "delta": 1e-9}),
    ("privsql://", {}),
])
def test_url_rule(url: str, expected: dict) -> None:
    assert PrivsqlDialect().create_connect_args(sa.make_url(url)) == ([], expected)


@pytest.mark.parametrize("url", [
    "privsql://alice:pw@localhost:5433/privsql",  # a server: use a postgresql:// or privsql+remote:// URL
    "privsql:///p.yaml?analyst=alice&color=red",
    "privsql:///p.yaml?epsilon=lots",
    "privsql:///p.yaml?analyst=a&analyst=b",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(exc.ArgumentError):
        PrivsqlDialect().create_connect_args(sa.make_url(url))


def test_entry_points_are_registered() -> None:
    assert sa.make_url("privsql://").get_dialect() is PrivsqlDialect
    assert sa.make_url("privsql+remote://a@h/db").get_dialect() is PrivsqlRemoteDialect


# ---------------------------------------------------------------- reflection


def test_reflection_from_config(engine: sa.Engine) -> None:
    insp = sa.inspect(engine)
    assert insp.get_table_names() == ["depts", "people", "visits"]
    assert insp.get_schema_names() == ["public"] and insp.default_schema_name == "public"
    assert insp.has_table("people") and not insp.has_table("nope")
    assert not insp.has_table("people", schema="other")
    columns = {c["name"]: c for c in insp.get_columns("people")}
    assert set(columns) == {"pid", "age", "sex", "educ", "race", "income", "married"}
    assert isinstance(columns["age"]["type"], sa.BigInteger)
    assert isinstance(columns["income"]["type"], postgresql.DOUBLE_PRECISION)
    assert isinstance(columns["sex"]["type"], sa.Text)
    assert "privacy unit" in columns["pid"]["comment"] and "[0, 100]" in columns["age"]["comment"]
    assert isinstance({c["name"]: c for c in insp.get_columns("visits")}["day"]["type"], sa.Date)
    assert insp.get_pk_constraint("people")["constrained_columns"] == []
    assert insp.get_foreign_keys("people") == [] and insp.get_indexes("people") == []
    assert insp.get_unique_constraints("people") == [] and insp.get_check_constraints("people") == []
    assert insp.get_view_names() == []
    assert "privacy unit pid" in (insp.get_table_comment("people")["text"] or "")
    with pytest.raises(exc.NoSuchTableError):
        insp.get_columns("nope")


def test_metadata_reflect(engine: sa.Engine) -> None:
    meta = sa.MetaData()
    meta.reflect(engine)
    assert set(meta.tables) == {"depts", "people", "visits"}
    assert meta.tables["people"].primary_key.columns.keys() == []


# ---------------------------------------------------------------- Core and pandas


def test_core_query_compiles_and_runs(engine: sa.Engine, people: sa.Table) -> None:
    stmt = sa.select(sa.func.count()).select_from(people).group_by(people.c.sex)
    sql = str(stmt.compile(engine))
    assert "count(*)" in sql and "GROUP BY people.sex" in sql
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    assert len(rows) == 2 and 800 < sum(r[0] for r in rows) < 1200


def test_core_query_with_bound_parameters(engine: sa.Engine, people: sa.Table) -> None:
    stmt = (sa.select(people.c.sex, sa.func.count().label("n"), sa.func.avg(people.c.income).label("avg_income"))
            .where(people.c.age > 30, people.c.sex.in_(["0", "1"]))
            .group_by(people.c.sex).order_by(people.c.sex))
    with engine.connect() as conn:
        result = conn.execute(stmt)
        assert list(result.keys()) == ["sex", "n", "avg_income"]
        rows = result.all()
    assert [r.sex for r in rows] == ["0", "1"] and all(r.n > 0 for r in rows)


def test_pandas_read_sql_group_by(engine: sa.Engine) -> None:
    df = pd.read_sql(GROUPED, engine)
    assert list(df.columns) == ["sex", "n", "avg_income"]
    assert len(df) == 2
    assert pd.api.types.is_string_dtype(df["sex"])
    assert df["n"].dtype == "int64" and df["avg_income"].dtype == "float64"


def test_pandas_read_sql_with_params_and_core(engine: sa.Engine, people: sa.Table) -> None:
    df = pd.read_sql("SELECT educ, COUNT(*) AS n FROM people WHERE age > %(age)s GROUP BY educ", engine,
                     params={"age": 30})
    assert sorted(df["educ"]) == list(range(1, 17)) and df["n"].dtype == "int64"
    df = pd.read_sql(sa.text("SELECT COUNT(*) FROM people WHERE age > :age AND income % 2 >= 0"), engine,
                     params={"age": 30})
    assert list(df.columns) == ["count"]
    df = pd.read_sql(sa.select(sa.func.count().label("n")).select_from(people), engine)
    assert list(df.columns) == ["n"] and len(df) == 1


def test_errors_are_wrapped_with_sqlstate(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(exc.ProgrammingError) as info:
            conn.exec_driver_sql("SELECT pid FROM people")
        assert isinstance(info.value.orig, dbapi.PrivacyRefused) and info.value.orig.sqlstate == "42501"
        conn.rollback()
        assert conn.exec_driver_sql(COUNT).scalar() is not None  # still usable
    bob = sa.create_engine(engine.url.set(query={"analyst": "bob", "epsilon": "4"}))
    try:
        with bob.connect() as conn:
            conn.exec_driver_sql(COUNT).all()
            with pytest.raises(exc.OperationalError) as info2:
                conn.exec_driver_sql(COUNT + " WHERE age > 1").all()  # 4 + 4 > 5 (a repeat would be free)
            assert isinstance(info2.value.orig, dbapi.BudgetExhausted)
    finally:
        bob.dispose()


def test_pool_pre_ping_and_transactions(config_path: Path) -> None:
    eng = sa.create_engine(f"privsql:///{config_path}?analyst=alice", pool_pre_ping=True)
    try:
        with eng.begin() as conn:  # BEGIN / COMMIT are no-ops; SELECT 1 pings are answered locally
            assert conn.exec_driver_sql(COUNT).scalar() is not None
        with eng.connect() as conn:
            assert conn.execute(sa.select(sa.literal(1))).scalar() == 1
            assert conn.get_isolation_level() == "AUTOCOMMIT"
    finally:
        eng.dispose()


# ---------------------------------------------------------------- remote


def test_remote_dialect_with_pandas(server) -> None:  # noqa: F811 - the fixture from test_dbapi
    url = server.url().replace("postgresql://", "privsql+remote://")
    eng = sa.create_engine(url)
    try:
        assert sa.inspect(eng).get_table_names() == ["depts", "people", "visits"]
        people = sa.Table("people", sa.MetaData(), autoload_with=eng)
        df = pd.read_sql(sa.select(people.c.sex, sa.func.count().label("n")).group_by(people.c.sex), eng)
        assert list(df.columns) == ["sex", "n"] and len(df) == 2
    finally:
        eng.dispose()
