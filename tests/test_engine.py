"""End to end on the sample data: accuracy against the exact answer, budget, bounds, refusal costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import exact_sample

import privsql.engine as engine_module
from privsql.errors import BackendError, BudgetExhausted, InvalidParameter, PrivacyRefused, UnknownAnalyst

exact = exact_sample


def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "add_laplace_noise", lambda values, scale: np.asarray(values))


def test_grouped_count_and_avg_within_six_sigma(shared_engine) -> None:
    truth = {str(s): (n, a) for s, n, a in exact("SELECT sex, COUNT(*), AVG(income) FROM people GROUP BY sex")}
    result = shared_engine.execute("SELECT sex, COUNT(*) AS n, AVG(income) AS avg_income FROM people GROUP BY sex",
                                   analyst="alice", epsilon=1.0)
    assert [c.name for c in result.columns] == ["sex", "n", "avg_income"]
    assert [c.type for c in result.columns] == ["text", "bigint", "double"]
    assert len(result.rows) == 2
    acc = {c.column: c for c in result.privacy.columns}
    for sex, n, avg in result.rows:
        true_n, true_avg = truth[sex]
        assert abs(n - true_n) <= 6 * math.sqrt(2) * acc["n"].scale
        # AVG error: bounded by the noisy sum's and count's errors divided by the count
        assert abs(avg - true_avg) <= 6 * acc["avg_income"].ci95
        assert 0 <= avg <= 500000


def test_sum_within_six_sigma(shared_engine) -> None:
    (true_sum,), = exact("SELECT SUM(income) FROM people WHERE age > 40")
    result = shared_engine.execute("SELECT SUM(income) AS s FROM people WHERE age > 40", analyst="alice", epsilon=2.0)
    scale = result.privacy.columns[0].scale
    assert scale == pytest.approx(500000 / 2.0, rel=1e-9)
    assert abs(result.rows[0][0] - true_sum) <= 6 * math.sqrt(2) * scale


def test_noise_is_fresh_and_centred(shared_engine) -> None:
    answers = [shared_engine.execute("SELECT COUNT(*) FROM people", analyst="alice", epsilon=1.0).rows[0][0]
               for _ in range(200)]
    assert len(set(answers)) > 5  # noise is really added
    # mean of 200 discrete Laplace(1) draws: sd ≈ sqrt(2/200) = 0.1; 6 sd = 0.6
    assert abs(np.mean(answers) - 1000) < 0.6


def test_per_person_bounds_cap_a_heavy_user(shared_engine, monkeypatch) -> None:
    no_noise(monkeypatch)
    (rows_of_heavy_user,), = exact("SELECT COUNT(*) FROM visits WHERE pid = 1")
    assert rows_of_heavy_user > 500
    got = shared_engine.execute("SELECT COUNT(*) FROM visits WHERE pid = 1", analyst="alice").rows[0][0]
    assert got == 5  # max_rows
    (bounded,), = exact("SELECT SUM(LEAST(n, 5)) FROM (SELECT pid, COUNT(*) n FROM visits GROUP BY pid)")
    assert shared_engine.execute("SELECT COUNT(*) FROM visits", analyst="alice").rows[0][0] == bounded


def test_group_bound_keeps_at_most_max_groups_per_person(shared_engine, monkeypatch) -> None:
    no_noise(monkeypatch)
    rows = shared_engine.execute("SELECT dept, COUNT(DISTINCT pid) AS people FROM visits WHERE pid = 1 GROUP BY dept",
                                 analyst="alice").rows
    assert len(rows) == 6  # public domain: every department answered
    assert sum(r[1] for r in rows) == 2  # but person 1 counts in at most max_groups = 2


def test_open_keys_are_thresholded_and_cost_delta(shared_engine) -> None:
    before = shared_engine.budget("alice")
    result = shared_engine.execute("SELECT day, COUNT(*) AS n FROM visits GROUP BY day", analyst="alice",
                                   epsilon=1.0, delta=1e-6)
    assert 300 <= len(result.rows) <= 365  # every day has ~550 visits: all released
    assert result.privacy.delta == 1e-6
    assert shared_engine.budget("alice").delta_spent == pytest.approx(before.delta_spent + 1e-6)
    rare = shared_engine.execute("SELECT day, COUNT(*) FROM visits WHERE pid = 3 GROUP BY day", analyst="alice",
                                 epsilon=0.1, delta=1e-9)
    assert rare.rows == []  # one person's days are never released


def test_public_domain_returns_missing_keys(shared_engine) -> None:
    rows = shared_engine.execute("SELECT race, COUNT(*) FROM people WHERE age < 0 GROUP BY race",
                                 analyst="alice").rows
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]  # no person passes the WHERE: every value, noise on 0
    rows = shared_engine.execute("SELECT race, COUNT(*) FROM people WHERE race = 6 GROUP BY race",
                                 analyst="alice").rows
    assert [r[0] for r in rows] == [6]  # the WHERE itself trims the domain (tests/test_domain_trim.py)


def test_order_limit_having_and_arithmetic_on_aggregates(shared_engine) -> None:
    result = shared_engine.execute(
        "SELECT educ, COUNT(*) * 2 AS twice, SUM(income) / COUNT(*) AS mean FROM people GROUP BY educ "
        "HAVING COUNT(*) > 50 ORDER BY twice DESC LIMIT 3", analyst="alice", epsilon=5.0)
    assert len(result.rows) <= 3
    twice = [r[1] for r in result.rows]
    assert twice == sorted(twice, reverse=True)
    assert all(t > 100 for t in twice)
    mechanisms = {c.column: c.mechanism for c in result.privacy.columns}
    assert mechanisms == {"educ": "none", "twice": "post-processing", "mean": "post-processing"}


def test_parameters_are_bound_as_literals(shared_engine, monkeypatch) -> None:
    no_noise(monkeypatch)
    (n0,), = exact("SELECT COUNT(*) FROM people WHERE sex = 0")
    assert shared_engine.execute("SELECT COUNT(*) FROM people WHERE sex = $1", analyst="alice",
                                 params=["0"]).rows[0][0] == n0
    assert shared_engine.execute("SELECT COUNT(*) FROM people WHERE sex = %s", analyst="alice",
                                 params=["0' OR '1'='1"]).rows[0][0] == 0
    with pytest.raises(InvalidParameter):
        shared_engine.execute("SELECT COUNT(*) FROM people WHERE sex = $1", analyst="alice", params=[])


def test_budget_exhaustion_refuses_and_nothing_runs(make_engine, monkeypatch) -> None:
    engine = make_engine(analysts={"carol": {"epsilon": 2.5}}, cache={"enabled": False})
    calls = []
    original = engine.backend.run
    monkeypatch.setattr(engine.backend, "run", lambda sql, **kw: calls.append(sql) or original(sql, **kw))
    for _ in range(2):
        engine.execute("SELECT COUNT(*) FROM people", analyst="carol", epsilon=1.0)
    with pytest.raises(BudgetExhausted) as info:
        engine.execute("SELECT COUNT(*) FROM people", analyst="carol", epsilon=1.0)
    assert info.value.sqlstate.startswith("53")
    assert "carol" in info.value.message and "0.5" in info.value.message and "1" in info.value.message
    assert len(calls) == 2
    assert engine.budget("carol").epsilon_spent == pytest.approx(2.0)
    engine.execute("SELECT COUNT(*) FROM people", analyst="carol", epsilon=0.5)  # what is left still works
    assert engine.budget("carol").epsilon_remaining == pytest.approx(0.0)


def test_budget_persists_across_engines(make_engine) -> None:
    first = make_engine()
    first.execute("SELECT COUNT(*) FROM people", analyst="bob", epsilon=1.5)
    first.close()
    second = make_engine()
    assert second.budget("bob").epsilon_spent == pytest.approx(1.5)
    assert second.ledger("bob")[0].outcome == "answered"


def test_refusals_and_explain_cost_nothing(engine) -> None:
    with pytest.raises(PrivacyRefused):
        engine.execute("SELECT * FROM people", analyst="alice")
    engine.explain("SELECT COUNT(*) FROM people")
    engine.describe("SELECT sex, AVG(income) FROM people GROUP BY sex")
    assert engine.budget("alice").epsilon_spent == 0
    assert engine.ledger("alice") == []


def test_describe_types_without_data(engine) -> None:
    cols = engine.describe("SELECT sex, COUNT(*) AS n, SUM(age) AS s, AVG(income) FROM people GROUP BY sex")
    assert [(c.name, c.type) for c in cols] == [("sex", "text"), ("n", "bigint"), ("s", "bigint"),
                                               ("avg", "double")]


def test_unknown_analyst(engine) -> None:
    with pytest.raises(UnknownAnalyst):
        engine.execute("SELECT COUNT(*) FROM people", analyst="mallory")


def test_backend_failure_keeps_the_charge(engine, monkeypatch) -> None:
    def broken(sql, **kw):
        raise BackendError("the backend failed: simulated")

    monkeypatch.setattr(engine.backend, "run", broken)
    with pytest.raises(BackendError):
        engine.execute("SELECT COUNT(*) FROM people", analyst="alice", epsilon=0.7)
    assert engine.budget("alice").epsilon_spent == pytest.approx(0.7)
    assert engine.ledger("alice")[0].outcome == "failed"


def test_epsilon_validation(engine) -> None:
    for bad in (0, -1, float("nan"), float("inf"), 1000):
        with pytest.raises(InvalidParameter):
            engine.execute("SELECT COUNT(*) FROM people", analyst="alice", epsilon=bad)
    assert engine.budget("alice").epsilon_spent == 0


def test_repeat_is_free_and_identical(make_engine) -> None:
    engine = make_engine()
    sql = "SELECT sex, COUNT(*) AS n, AVG(income) FROM people GROUP BY sex"
    first = engine.execute(sql, analyst="bob", epsilon=0.5)
    again = engine.execute("select SEX, count(*) as N, avg(INCOME) from PEOPLE group by SEX", analyst="bob",
                           epsilon=0.5)
    assert again.rows == first.rows
    assert again.privacy.cached and again.privacy.epsilon == 0
    assert engine.budget("bob").epsilon_spent == pytest.approx(0.5)
    assert [e.outcome for e in engine.ledger("bob")] == ["cached", "answered"]
    # a restart keeps the cache; a changed ε or another analyst pays for fresh noise
    engine.close()
    engine = make_engine()
    assert engine.execute(sql, analyst="bob", epsilon=0.5).rows == first.rows
    engine.execute(sql, analyst="bob", epsilon=0.6)
    assert engine.budget("bob").epsilon_spent == pytest.approx(1.1)
    other = engine.execute(sql, analyst="alice", epsilon=0.5)
    assert other.privacy.epsilon == 0.5 and not other.privacy.cached


AGGREGATES = ["COUNT(*)", "COUNT(income)", "SUM(age)", "AVG(income)", "VAR_SAMP(income)", "VAR_POP(age)",
              "STDDEV_SAMP(income)", "STDDEV_POP(age)", "COVAR_POP(age, income)", "COVAR_SAMP(age, income)",
              "CORR(age, income)", "CORR(age, educ)", "SUM(income) / COUNT(*) - AVG(age) * 2"]


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_every_aggregate_is_exact_without_noise(shared_engine, monkeypatch, aggregate: str) -> None:
    """With the noise switched off (and bounds that do not bind), every aggregate equals the
    database's own answer: the rewrite and the post-processing formulas are right."""
    no_noise(monkeypatch)
    got = shared_engine.execute(f"SELECT sex, {aggregate} FROM people GROUP BY sex ORDER BY sex",
                                analyst="alice").rows
    want = exact(f"SELECT CAST(sex AS VARCHAR), {aggregate} FROM people GROUP BY sex ORDER BY 1")
    for g, w in zip(got, want):
        assert g[0] == w[0]
        assert g[1] == pytest.approx(w[1], rel=1e-7, abs=1e-6)


def test_release_never_publishes_keys_outside_a_public_domain(shared_engine) -> None:
    from privsql.engine import release

    plan = shared_engine.prepare("SELECT sex, COUNT(*) FROM people GROUP BY sex").plan
    exact_rows = [("0", 10), ("1", 20), (None, 5), ("secret", 7)]
    noisy = release(plan, exact_rows)
    assert noisy.keys == [["0", "1"]]


def test_explain_covers_every_aggregate(shared_engine) -> None:
    sql = ("SELECT dept, COUNT(*), COUNT(cost), COUNT(DISTINCT day), COUNT(DISTINCT pid), SUM(cost), AVG(cost), "
           "VAR_SAMP(cost), STDDEV_POP(duration_min), COVAR_POP(cost, duration_min), CORR(cost, duration_min), "
           "MEDIAN(cost), MIN(duration_min), MAX(duration_min), SUM(cost) / COUNT(*) FROM visits GROUP BY dept")
    rows = dict(shared_engine.explain(sql).rows)
    assert rows["cost"].startswith("ε = 1")
    assert sum(1 for item in rows if item.startswith("column ")) >= 10
    assert shared_engine.describe(sql)[0].name == "dept"


@pytest.mark.parametrize("aggregate, truth", [
    ("COUNT(CASE WHEN age > 30 THEN 1 END)", "COUNT(CASE WHEN age > 30 THEN 1 END)"),
    ("COUNT(*) FILTER (WHERE age > 30)", "COUNT(*) FILTER (WHERE age > 30)"),
    ("AVG(income) FILTER (WHERE married = 1)", "AVG(income) FILTER (WHERE married = 1)"),
    ("SUM(CASE WHEN sex = '1' THEN income ELSE 0 END)", "SUM(CASE WHEN sex = 1 THEN income ELSE 0 END)"),
])
def test_conditional_aggregates_without_noise(shared_engine, monkeypatch, aggregate: str, truth: str) -> None:
    no_noise(monkeypatch)
    (got,), = shared_engine.execute(f"SELECT {aggregate} FROM people", analyst="alice").rows
    (want,), = exact(f"SELECT {truth} FROM people")
    assert got == pytest.approx(want, rel=1e-7)


def test_keys_with_an_integer_range_need_no_threshold(shared_engine) -> None:
    r = shared_engine.execute("SELECT EXTRACT(MONTH FROM day) AS m, COUNT(*) FROM visits GROUP BY m ORDER BY m",
                              analyst="alice")
    assert [row[0] for row in r.rows] == list(range(1, 13)) and r.privacy.delta == 0
