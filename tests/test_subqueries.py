"""Per-person sub-queries in FROM: one row per person, bounded from the config."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_sample

import privsql.engine as engine_module
from privsql.errors import PrivacyRefused, UnsupportedQuery

exact = exact_sample


def test_average_visits_per_person(shared_engine, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "add_laplace_noise", lambda values, scale: np.asarray(values))
    got = shared_engine.execute("SELECT AVG(n) FROM (SELECT pid, COUNT(*) AS n FROM visits GROUP BY pid) t",
                                analyst="alice").rows[0][0]
    # each person's count is clamped to max_rows · max_groups = 10, never taken from the data
    (want,), = exact("SELECT AVG(LEAST(n, 10)) FROM (SELECT pid, COUNT(*) n FROM visits GROUP BY pid)")
    assert got == pytest.approx(want, rel=1e-6)


def test_histogram_of_visits_per_person_has_a_public_domain(shared_engine) -> None:
    r = shared_engine.execute("SELECT n, COUNT(*) AS people FROM (SELECT pid, COUNT(*) AS n FROM visits "
                              "GROUP BY pid) t GROUP BY n ORDER BY n", analyst="alice", epsilon=1.0)
    assert [row[0] for row in r.rows] == list(range(0, 11))
    assert r.privacy.delta == 0  # no threshold: the domain 0..10 comes from the config


def test_one_row_per_person_sensitivity(shared_engine) -> None:
    plan = shared_engine.prepare("SELECT SUM(s) FROM (SELECT pid, SUM(cost) AS s FROM visits GROUP BY pid) t").plan
    assert not plan.per_person and plan.max_groups == 1
    (m,) = plan.measures
    assert m.sensitivity * m.unit == pytest.approx(10 * 2000)  # R · upper(cost)


@pytest.mark.parametrize("sql, error", [
    ("SELECT AVG(n) FROM (SELECT dept, COUNT(*) n FROM visits GROUP BY dept) t", PrivacyRefused),
    ("SELECT COUNT(*) FROM (SELECT pid, cost FROM visits) t", PrivacyRefused),
    ("SELECT AVG(n) FROM (SELECT pid, COUNT(*) n FROM visits GROUP BY pid, dept) t", PrivacyRefused),
    ("SELECT AVG(s) FROM (SELECT pid, SUM(pid) s FROM visits GROUP BY pid) t", PrivacyRefused),
    ("SELECT COUNT(*) FROM (SELECT pid, COUNT(*) n FROM visits GROUP BY pid HAVING COUNT(*) > 3) t",
     UnsupportedQuery),
    ("SELECT pid, COUNT(*) FROM (SELECT pid, COUNT(*) n FROM visits GROUP BY pid) t GROUP BY pid", PrivacyRefused),
    ("SELECT COUNT(*) FROM (SELECT building FROM depts) t", UnsupportedQuery),
])
def test_refused(shared_engine, sql: str, error: type) -> None:
    with pytest.raises(error):
        shared_engine.execute(sql, analyst="alice")
