"""SQL that BI tools send (issue 12 part 1): quoted aliases, plan-time date functions, qualified names."""

from __future__ import annotations

import datetime as dt

import pytest

from privsql.errors import InvalidDatetimeFormat, PrivacyRefused, UndefinedColumn, UndefinedTable, UnsupportedQuery
from privsql.sql.fold import fold_datetime
from privsql.sql.parse import parse_statement


def run(engine, sql: str):
    """``sql`` answered for alice with ε 0.1."""
    return engine.execute(sql, analyst="alice", epsilon=0.1, delta=1e-6)


# ------------------------------------------------------------------ quoted aliases keep their case


def test_superset_order_by_quoted_metric_alias(shared_engine) -> None:
    result = run(shared_engine, 'SELECT sex, AVG(income) AS "AVG(income)" FROM people GROUP BY sex '
                                'ORDER BY "AVG(income)" DESC')
    assert [c.name for c in result.columns] == ["sex", "AVG(income)"]
    values = [row[1] for row in result.rows]
    assert values == sorted(values, reverse=True)


def test_having_and_group_by_quoted_alias_with_capitals(shared_engine) -> None:
    result = run(shared_engine, 'SELECT sex AS "Sex", COUNT(*) AS "N" FROM people GROUP BY "Sex" '
                                'HAVING "N" > -1000000 ORDER BY "Sex"')
    assert [c.name for c in result.columns] == ["Sex", "N"]
    assert [row[0] for row in result.rows] == ["0", "1"]


def test_unquoted_alias_still_folds_to_lower_case(shared_engine) -> None:
    result = run(shared_engine, "SELECT sex, AVG(income) AS Avg FROM people GROUP BY sex ORDER BY AVG")
    assert [c.name for c in result.columns] == ["sex", "avg"]


def test_quoted_alias_is_case_sensitive_as_in_postgresql(shared_engine) -> None:
    with pytest.raises(UndefinedColumn):
        run(shared_engine, 'SELECT sex, AVG(income) AS "Avg" FROM people GROUP BY sex HAVING avg > 0')


# ------------------------------------------------------------------ date/time functions folded at plan time

NOON = dt.datetime(2025, 12, 3, 12, 30, 15, 250000)


def folded(where: str) -> str:
    """The WHERE condition after folding, with the clock stopped at NOON."""
    tree = fold_datetime(parse_statement(f"SELECT COUNT(*) FROM visits WHERE {where}"), clock=lambda: NOON)
    return tree.args["where"].this.sql(dialect="postgres")


@pytest.mark.parametrize("call, literal", [
    ("TO_DATE('2025-12-03', 'YYYY-MM-DD')", "CAST('2025-12-03' AS DATE)"),
    ("TO_DATE('03/12/2025', 'DD/MM/YYYY')", "CAST('2025-12-03' AS DATE)"),
    ("TO_TIMESTAMP('2025-12-03 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
     "CAST('2025-12-03 00:00:00' AS TIMESTAMP)"),
    ("TO_TIMESTAMP('2025-12-03 01:02:03.123', 'YYYY-MM-DD HH24:MI:SS.MS')",
     "CAST('2025-12-03 01:02:03.123000' AS TIMESTAMP)"),
    ("CURRENT_DATE", "CAST('2025-12-03' AS DATE)"),
    ("NOW()", "CAST('2025-12-03 12:30:15.250000' AS TIMESTAMP)"),
    ("CURRENT_TIMESTAMP", "CAST('2025-12-03 12:30:15.250000' AS TIMESTAMP)"),
])
def test_datetime_functions_fold_to_literals(call: str, literal: str) -> None:
    assert folded(f"day >= {call}") == f"day >= {literal}"


def test_folding_leaves_other_statements_alone() -> None:
    tree = parse_statement("SELECT COUNT(*) FROM visits WHERE day >= DATE '2025-01-01'")
    assert fold_datetime(tree, clock=lambda: NOON) is tree


@pytest.mark.parametrize("where, error", [
    ("day >= TO_DATE(dept, 'YYYY-MM-DD')", PrivacyRefused),
    ("day >= TO_DATE('2025-12-03', dept)", PrivacyRefused),
    ("day >= TO_DATE('03 Dec 2025', 'DD Mon YYYY')", UnsupportedQuery),
    ("day >= TO_TIMESTAMP('3 pm', 'HH12 AM')", UnsupportedQuery),
    ("day >= TO_DATE('2025-13-03', 'YYYY-MM-DD')", InvalidDatetimeFormat),
    ("day >= CURRENT_TIMESTAMP(3)", UnsupportedQuery),
])
def test_unsupported_datetime_calls_are_refused_before_any_charge(engine, where: str, error: type) -> None:
    with pytest.raises(error):
        run(engine, f"SELECT COUNT(*) FROM visits WHERE {where}")
    assert engine.budget("alice").epsilon_spent == 0


def test_superset_time_range_filter_is_answered(shared_engine) -> None:
    sql = ("SELECT dept, COUNT(*) AS n FROM visits WHERE day >= TO_DATE('2025-12-03', 'YYYY-MM-DD') "
           "AND day < TO_TIMESTAMP('2100-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY dept")
    assert "CAST('2025-12-03' AS DATE)" in shared_engine.prepare(sql, epsilon=0.1).sql
    result = run(shared_engine, sql)
    assert [c.name for c in result.columns] == ["dept", "n"]
    future = run(shared_engine, "SELECT COUNT(*) AS n FROM visits WHERE day >= TO_DATE('2100-01-01', 'YYYY-MM-DD')")
    assert abs(future.rows[0][0]) <= 6 * future.privacy.columns[0].scale


def test_current_date_filter_is_answered_and_never_cached(shared_engine) -> None:
    sql = "SELECT COUNT(*) AS n FROM visits WHERE day <= CURRENT_DATE AND day <= NOW()"
    first = shared_engine.prepare(sql, epsilon=0.1)
    assert shared_engine.prepare(sql, epsilon=0.1) is not first
    assert "CURRENT_DATE" not in first.sql.upper() and "NOW" not in first.sql.upper()
    result = run(shared_engine, sql)
    assert result.rows[0][0] > 10 * result.privacy.columns[0].scale  # the sample visits are all in the past


# ------------------------------------------------------------------ schema- and database-qualified names


@pytest.mark.parametrize("name", ['"privsql"."public"."people"', "privsql.public.people", "public.people",
                                  '"public"."people"', "PRIVSQL.PUBLIC.PEOPLE"])
def test_qualified_names_resolve_to_the_configured_table(shared_engine, name: str) -> None:
    result = run(shared_engine, f"SELECT sex, COUNT(*) AS n FROM {name} GROUP BY sex")
    assert [row[0] for row in sorted(result.rows)] == ["0", "1"]


def test_dbt_three_part_names_in_a_join_and_on_a_public_table(shared_engine) -> None:
    run(shared_engine, 'SELECT p.sex, COUNT(*) FROM "privsql"."public"."people" p '
                       'JOIN "privsql"."public"."visits" v ON p.pid = v.pid GROUP BY p.sex')
    assert run(shared_engine, 'SELECT COUNT(*) FROM "privsql"."public"."depts"').privacy is None


def test_the_servers_database_name_is_a_catalog_too(make_engine) -> None:
    engine = make_engine(server={"database": "analytics"})
    run(engine, 'SELECT COUNT(*) FROM "analytics"."public"."people"')
    run(engine, 'SELECT COUNT(*) FROM privsql.public.people')


@pytest.mark.parametrize("name, error", [
    ('"other"."public"."people"', UnsupportedQuery),
    ('"Privsql"."public"."people"', UnsupportedQuery),
    ("privsql.secret.people", UndefinedTable),
    ('privsql."Public".people', UndefinedTable),
])
def test_other_databases_and_schemas_are_refused_before_any_charge(engine, name: str, error: type) -> None:
    with pytest.raises(error):
        run(engine, f"SELECT COUNT(*) FROM {name}")
    assert engine.budget("alice").epsilon_spent == 0
