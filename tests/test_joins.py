"""Joins (bounding after the join) and public tables (exact, free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import privsql.engine as engine_module
from privsql.errors import PrivacyRefused, UnsupportedQuery


def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "add_laplace_noise", lambda values, scale: np.asarray(values))


def test_private_join_public(shared_engine) -> None:
    r = shared_engine.execute("SELECT d.building, COUNT(*) AS n FROM visits v JOIN depts d ON v.dept = d.dept "
                              "GROUP BY d.building ORDER BY d.building", analyst="alice", epsilon=2.0, delta=1e-6)
    assert [c.name for c in r.columns] == ["building", "n"]
    assert [row[0] for row in r.rows] == ["A", "B", "C"]
    assert r.privacy.delta == 1e-6  # building has no public domain: released by threshold


def test_private_join_private_on_unit(shared_engine, monkeypatch) -> None:
    no_noise(monkeypatch)
    r = shared_engine.execute("SELECT p.sex, COUNT(DISTINCT p.pid) AS people FROM people p JOIN visits v "
                              "ON p.pid = v.pid GROUP BY p.sex", analyst="alice")
    assert sum(row[1] for row in r.rows) <= 1000


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM people p JOIN visits v ON p.age = v.pid",
    "SELECT COUNT(*) FROM people p JOIN visits v ON p.pid > v.pid",
    "SELECT COUNT(*) FROM people p JOIN visits v ON p.pid = v.pid OR p.age = 3",
    "SELECT COUNT(*) FROM people, visits",
])
def test_private_private_join_must_equate_units(shared_engine, sql: str) -> None:
    with pytest.raises(PrivacyRefused):
        shared_engine.execute(sql, analyst="alice")


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM people p CROSS JOIN depts d",
    "SELECT COUNT(*) FROM people p FULL JOIN depts d ON p.sex = d.dept",
])
def test_unsupported_join_kinds(shared_engine, sql: str) -> None:
    with pytest.raises(UnsupportedQuery):
        shared_engine.execute(sql, analyst="alice")


def test_join_cannot_multiply_a_person_past_the_bounds(make_engine, tmp_path: Path, monkeypatch) -> None:
    """A public table with 50 copies of one key: each visit matches 50 times, yet a person's
    contribution stays within max_rows per group."""
    no_noise(monkeypatch)
    (tmp_path / "dup.csv").write_text("dept,building\n" + "oncology,Z\n" * 50)
    (tmp_path / "v.csv").write_text("pid,dept\n" + "7,oncology\n" * 3 + "8,oncology\n")
    engine = make_engine(tables={
        "visits": {"source": str(tmp_path / "v.csv"), "privacy_unit": "pid", "max_groups": 1, "max_rows": 2,
                   "columns": {"pid": {"type": "int"}, "dept": {"type": "text"}}},
        "dup": {"source": str(tmp_path / "dup.csv"), "public": True,
                "columns": {"dept": {"type": "text"}, "building": {"type": "text", "values": ["Z"]}}},
        "people": None, "depts": None,
    })
    rows = engine.execute("SELECT d.building, COUNT(*) FROM visits v JOIN dup d ON v.dept = d.dept "
                          "GROUP BY d.building", analyst="alice").rows
    assert rows == [("Z", 4)]  # person 7: 150 joined rows → 2; person 8: 50 → 2


def test_public_table_is_exact_and_free(engine) -> None:
    r = engine.execute("SELECT building, COUNT(*), MAX(floor) FROM depts GROUP BY building ORDER BY building",
                       analyst="alice")
    assert r.rows == [("A", 2, 3), ("B", 2, 2), ("C", 2, 3)]
    assert [c.name for c in r.columns] == ["building", "count", "max"]
    assert r.privacy is None
    assert len(engine.execute("SELECT * FROM depts", analyst="alice").rows) == 6
    assert engine.budget("alice").epsilon_spent == 0
