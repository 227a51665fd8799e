"""Public key domains trimmed by the query's own WHERE (issue 11 part 4).

A top-level conjunct of WHERE that tests a key with a public domain against literals (``age > 90``,
``dept IN (...)``, ``NOT IN``, ``BETWEEN``, ``<>``) restricts the released domain before any data is
read. The trimmed domain is a function of the query and the config only, so it costs nothing; it
must never add a value, and the release must still be exactly that domain on neighbouring databases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import sample_config
from sqlglot import parse_one
from test_redteam2 import check_neighbours, exact_measures, neighbour_engines

from privsql.engine import Engine
from privsql.sql.domains import is_key_test

AGES = tuple(range(101))
DEPTS = ("cardiology", "dermatology", "emergency", "oncology", "pediatrics", "radiology")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    yield from sample_engine(tmp_path_factory)


def sample_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The sample data, a budget that never runs out, no free repeats."""
    e = Engine(sample_config(tmp_path_factory.mktemp("sample"), analysts={"alice": {"epsilon": 1e6, "delta": 0.5}},
                             cache={"enabled": False}))
    yield e
    e.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    yield from neighbour_engines(tmp_path_factory.mktemp("trim_pair"))


def domains(engine: Engine, sql: str) -> list[tuple | None]:
    plan = engine.prepare(sql, epsilon=1.0, delta=1e-6).plan
    return [k.domain for k in plan.keys]


@pytest.mark.parametrize("cond, expected", [
    ("age > 90", tuple(range(91, 101))),
    ("90 < age", tuple(range(91, 101))),
    ("age >= 98 AND age <> 99", (98, 100)),
    ("(age BETWEEN 10 AND 12) AND income > 0", (10, 11, 12)),
    ("age NOT BETWEEN 1 AND 100", (0,)),
    ("age IN (3, 5, 500)", (3, 5)),  # 500 is not in the domain: trimming never adds a value
    ("age NOT IN (0, 1, 2)", tuple(range(3, 101))),
    ("NOT (age < 99)", (99, 100)),
    ("age > 90.5", tuple(range(91, 101))),  # compared as the backend compares, not rounded
    ("age = 17 AND age = 18", ()),
    ("age > 1000", ()),
    ("age IN (1, NULL)", (1,)),
    ("age NOT IN (1, NULL)", ()),  # NULL: no row passes, as in the backend
], ids=lambda v: v if isinstance(v, str) else None)
def test_integer_key_trimmed(engine: Engine, cond: str, expected: tuple) -> None:
    assert domains(engine, f"SELECT age, COUNT(*) FROM people WHERE {cond} GROUP BY age") == [expected]


@pytest.mark.parametrize("cond", [
    "age > 90 OR age < 2",  # OR: not trimmed
    "(age > 90 OR sex = '1')",
    "age + 0 > 90",  # not the key expression itself
    "age > income",  # not a literal
    "income > 90",  # another column
    "CASE WHEN age > 90 THEN true ELSE false END",
    "age IS NOT NULL",
])
def test_not_trimmed(engine: Engine, cond: str) -> None:
    assert domains(engine, f"SELECT age, COUNT(*) FROM people WHERE {cond} GROUP BY age") == [AGES]


def test_text_and_expression_keys(engine: Engine) -> None:
    assert domains(engine, "SELECT dept, COUNT(*) FROM visits WHERE dept IN ('oncology', 'radiology') "
                           "GROUP BY dept") == [("oncology", "radiology")]
    assert domains(engine, "SELECT dept, COUNT(*) FROM visits WHERE dept <> 'oncology' GROUP BY dept") == \
        [tuple(d for d in DEPTS if d != "oncology")]
    assert domains(engine, "SELECT dept, COUNT(*) FROM visits WHERE dept = 'Oncology' GROUP BY dept") == [()]
    assert domains(engine, "SELECT sex, COUNT(*) FROM people WHERE sex = 1 GROUP BY sex") == [("1",)]
    assert domains(engine, "SELECT FLOOR(age / 10) * 10 AS d, COUNT(*) FROM people "
                           "WHERE FLOOR(age / 10) * 10 >= 80 GROUP BY 1") == [(80.0, 90.0, 100.0)]
    # a condition on the column of an expression key is not a test of the key itself
    assert len(domains(engine, "SELECT FLOOR(age / 10) * 10 AS d, COUNT(*) FROM people WHERE age > 85 "
                               "GROUP BY 1")[0]) == 11
    # two keys: each trimmed by its own conditions only
    assert domains(engine, "SELECT sex, race, COUNT(*) FROM people WHERE race IN (2, 3) AND sex = '0' "
                           "GROUP BY sex, race") == [("0",), (2, 3)]


def test_shapes() -> None:
    key = parse_one("age")
    yes = ["age > 1", "1 < age", "age = -1", "age <> 'x'", "age IN (1, 2)", "age NOT IN (1)",
           "age BETWEEN 1 AND 2", "NOT age = 1", "(age) >= 1"]
    no = ["age > b", "age IN (SELECT 1)", "age + 1 > 2", "age > 1 OR age < 0", "age IS NULL", "age LIKE 'a%'",
          "age BETWEEN 1 AND b", "age > -b"]
    assert [s for s in yes if not is_key_test(parse_one(s), key)] == []
    assert [s for s in no if is_key_test(parse_one(s), key)] == []


def test_answers_are_the_trimmed_domain(engine: Engine) -> None:
    rows = engine.execute("SELECT age, COUNT(*) FROM people WHERE age > 90 GROUP BY age", analyst="alice",
                          epsilon=1.0).rows
    assert [r[0] for r in rows] == list(range(91, 101))
    rows = engine.execute("SELECT dept, COUNT(*) AS n FROM visits WHERE dept IN ('oncology', 'radiology') "
                          "GROUP BY dept", analyst="alice", epsilon=1.0).rows
    assert [r[0] for r in rows] == ["oncology", "radiology"]
    # trimmed to nothing, with a thresholded key beside it (the domain filter must not be `IN ()`)
    assert engine.execute("SELECT dept, day, COUNT(*) FROM visits WHERE dept = 'none' GROUP BY dept, day",
                          analyst="alice", epsilon=1.0, delta=1e-6).rows == []


def test_trimming_lowers_sensitivity_only_through_the_query(engine: Engine) -> None:
    """visits: max_groups 2. A WHERE leaving 2 departments means a person can touch at most 2 released
    groups whatever the data, so the group bound no longer needs to be enforced in SQL."""
    plan = engine.prepare("SELECT dept, COUNT(*) FROM visits WHERE dept IN ('oncology', 'radiology') "
                          "GROUP BY dept", epsilon=1.0).plan
    assert (plan.max_groups, plan.bound_groups) == (2, False)
    plan = engine.prepare("SELECT dept, COUNT(*) FROM visits WHERE dept = 'oncology' GROUP BY dept",
                          epsilon=1.0).plan
    assert (plan.max_groups, plan.bound_groups) == (1, False)


# ------------------------------------------------------------------------------------------------
# neighbours: D and D + a hostile person X (keys outside the domain, NaN/inf values, 1,000 rows)

TRIMMED_QUERIES = [
    ("in_list", "SELECT k, COUNT(*), SUM(v) FROM t WHERE k IN ('a', 'b') GROUP BY k", [("a",), ("b",)]),
    ("not_in", "SELECT k, AVG(v) FROM t WHERE k NOT IN ('a') GROUP BY k", [("b",), ("c",), ("d",)]),
    ("int_range", "SELECT w, COUNT(*) FROM t WHERE w >= 18 GROUP BY w", [(18,), (19,), (20,)]),
    ("two_keys", "SELECT k, w, COUNT(*) FROM t WHERE w BETWEEN 3 AND 4 AND k <> 'c' GROUP BY k, w",
     [(k, w) for k in "abd" for w in (3, 4)]),
    ("one_group", "SELECT k, MEDIAN(w) FROM t WHERE k = 'd' GROUP BY k", [("d",)]),
    ("open_key_beside", "SELECT k, g, COUNT(*) FROM t WHERE k = 'a' GROUP BY k, g", None),
    ("empty", "SELECT k, COUNT(*) FROM t WHERE k = 'zz' GROUP BY k", []),
    ("empty_open_key_beside", "SELECT k, g, COUNT(*) FROM t WHERE k = 'zz' GROUP BY k, g", None),
]


@pytest.mark.parametrize("sql, released", [pytest.param(q, r, id=i) for i, q, r in TRIMMED_QUERIES])
def test_trimmed_release_is_data_independent(pair: tuple[Engine, Engine], sql: str, released: list | None) -> None:
    without, with_x = pair
    plan_a, a = exact_measures(without, sql)
    plan_b, b = exact_measures(with_x, sql)
    assert [k.domain for k in plan_a.keys] == [k.domain for k in plan_b.keys]
    assert [(m.sensitivity, m.scale) for m in plan_a.measures] == [(m.sensitivity, m.scale) for m in plan_b.measures]
    check_neighbours(plan_b, a, b)
    if released is None:
        return
    assert plan_b.public_domain == released
    for engine in (without, with_x):  # exactly the trimmed domain: X's excluded keys are never released
        rows = engine.execute(sql, analyst="alice", epsilon=1.0, delta=1e-6).rows
        assert [tuple(r[:len(plan_b.keys)]) for r in rows] == released


def test_excluded_group_with_data_is_not_released(pair: tuple[Engine, Engine]) -> None:
    """Group 'c' has many rows (X alone has ~140 in it), but the WHERE excludes it: never released, and the
    other groups do not absorb its rows."""
    _, with_x = pair
    sql = "SELECT k, COUNT(*) FROM t WHERE k <> 'c' GROUP BY k"
    plan, exact = exact_measures(with_x, sql)
    assert plan.public_domain == [("a",), ("b",), ("d",)]
    assert ("c",) not in exact  # filtered by the WHERE in SQL
    rows = with_x.execute(sql, analyst="alice", epsilon=1.0).rows
    assert [r[0] for r in rows] == ["a", "b", "d"]


# ------------------------------------------------------------------------------------------------
# PostgreSQL: the tests are evaluated there (its collation and NUMERIC semantics), with the same result


@pytest.fixture(scope="module")
def pg_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from test_backends import load_sample_schema, postgres_config

    schemas = load_sample_schema()
    schema = next(schemas)
    e = Engine(postgres_config(tmp_path_factory.mktemp("pg_trim"), schema,
                               analysts={"alice": {"epsilon": 1e6, "delta": 0.5}}, cache={"enabled": False}))
    yield e
    e.close()
    next(schemas, None)


def test_postgres_trims_alike(pg_engine: Engine, engine: Engine) -> None:
    for sql in ["SELECT age, COUNT(*) FROM people WHERE age > 90.5 AND age <> 95 GROUP BY age",
                "SELECT dept, COUNT(*) FROM visits WHERE dept IN ('oncology', 'radiology') GROUP BY dept",
                "SELECT FLOOR(age / 10) * 10 AS d, COUNT(*) FROM people WHERE FLOOR(age / 10) * 10 >= 80 GROUP BY 1"]:
        assert domains(pg_engine, sql) == domains(engine, sql), sql
    rows = pg_engine.execute("SELECT dept, day, COUNT(*) FROM visits WHERE dept = 'none' GROUP BY dept, day",
                             analyst="alice", epsilon=1.0, delta=1e-6).rows
    assert rows == []
