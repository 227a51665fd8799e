"""Issue 12 over the wire: what Superset and dbt send, through psycopg against a live server."""

from __future__ import annotations

import pytest
from wire_helpers import EPSILON, RunningServer

BI_QUERIES = [
    ('SELECT sex, AVG(income) AS "AVG(income)" FROM people GROUP BY sex ORDER BY "AVG(income)" DESC',
     ["sex", "AVG(income)"]),
    ("SELECT dept, COUNT(*) AS count FROM visits WHERE day >= TO_DATE('2020-01-01', 'YYYY-MM-DD') "
     "AND day < TO_TIMESTAMP('2100-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY dept",
     ["dept", "count"]),
    ('SELECT COUNT(*) AS n FROM "privsql"."public"."people" WHERE age > 0', ["n"]),
]


def test_superset_and_dbt_statements_are_answered(engine_server: RunningServer) -> None:
    import psycopg

    if type(engine_server.engine).__name__ == "FakeEngine":
        pytest.skip("needs the real engine")
    with psycopg.connect(engine_server.dsn(), autocommit=True, options=f"-c privsql.epsilon={EPSILON}") as conn:
        for sql, names in BI_QUERIES:
            cur = conn.execute(sql)
            assert [d.name for d in cur.description] == names
            assert cur.fetchall()
