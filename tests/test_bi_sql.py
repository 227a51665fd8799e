"""SQL that BI tools send (issue 12 part 1): quoted aliases, plan-time date functions, qualified names."""

from __future__ import annotations

import pytest

from privsql.errors import UndefinedColumn


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
