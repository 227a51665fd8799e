"""SQL comments anywhere in a statement carry no meaning (tools such as dbt prepend JSON comments)."""

from __future__ import annotations

import pytest

from privsql.engine import Engine


@pytest.mark.parametrize("sql", [
    "SELECT sex, COUNT(*) FROM people GROUP BY sex -- trailing note",
    "SELECT sex, COUNT(*) FROM people GROUP BY sex /* block */",
    '/* {"app": "dbt", "node_id": "model.x"} */ SELECT sex, COUNT(*) FROM people GROUP BY sex',
    "SELECT sex /* key */, COUNT(*) -- n\nFROM people GROUP BY sex",
])
def test_comments_do_not_change_the_query(shared_engine: Engine, sql: str) -> None:
    plain = shared_engine.prepare("SELECT sex, COUNT(*) FROM people GROUP BY sex")
    assert shared_engine.prepare(sql).sql == plain.sql
