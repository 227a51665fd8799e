"""Quantiles, MEDIAN, MIN and MAX from a noisy histogram over the declared bounds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_sample

import privsql.engine as engine_module

exact = exact_sample


def test_integer_quantiles_exact_without_noise(shared_engine, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "add_laplace_noise", lambda values, scale: np.asarray(values))
    got = shared_engine.execute("SELECT sex, MEDIAN(age), MIN(age), MAX(age), "
                                "PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY age) FROM people GROUP BY sex",
                                analyst="alice", epsilon=1.0).rows
    want = exact("SELECT CAST(sex AS VARCHAR), quantile_disc(age, 0.5), MIN(age), MAX(age), "
                 "quantile_disc(age, 0.25) FROM people GROUP BY sex ORDER BY 1")
    # without noise the histogram is exact: integer bins give the true order statistics
    # (MIN/MAX skip bins below the noise level ±6, so they may move inwards by a few sparse values)
    for g, w in zip(got, want):
        assert g[0] == w[0]
        assert abs(g[1] - w[1]) <= 1 and abs(g[4] - w[4]) <= 1
        assert w[2] <= g[2] <= w[2] + 10 and w[3] - 10 <= g[3] <= w[3]


def test_float_quantile_within_bin_resolution_at_high_epsilon(shared_engine) -> None:
    (true_median, true_p90), = exact("SELECT quantile_cont(income, 0.5), quantile_cont(income, 0.9) FROM people")
    bin_width = 500000 / 128
    for _ in range(5):
        (median, p90), = shared_engine.execute(
            "SELECT MEDIAN(income), quantile_cont(income, 0.9) FROM people", analyst="alice", epsilon=10.0).rows
        assert abs(median - true_median) <= 2 * bin_width
        assert abs(p90 - true_p90) <= 3 * bin_width


def test_quantile_plan_and_explain(shared_engine) -> None:
    plan = shared_engine.prepare("SELECT MEDIAN(income), MAX(income), AVG(income) FROM people").plan
    hist = [m for m in plan.measures if m.kind == "hist"]
    assert len(hist) == 1 and hist[0].bins == 128  # both quantiles share one histogram
    assert hist[0].sensitivity == pytest.approx(1.0)  # one row per person: L1 of a person's counts is 1
    text = "\n".join(d for _, d in shared_engine.explain("SELECT MEDIAN(age) FROM visits v JOIN people p "
                                                         "ON v.pid = p.pid").rows)
    assert "histogram of" in text and "bins" in text


def test_quantile_of_many_rows_per_person_is_bounded(shared_engine) -> None:
    plan = shared_engine.prepare("SELECT dept, MEDIAN(cost) FROM visits GROUP BY dept").plan
    (hist,) = plan.measures
    # a person contributes at most max_rows (5) rows' worth, in at most max_groups (2) groups
    assert hist.sensitivity * hist.unit == pytest.approx(2 * 5)
    rows = shared_engine.execute("SELECT dept, MEDIAN(cost) AS m FROM visits GROUP BY dept", analyst="alice",
                                 epsilon=5.0).rows
    assert len(rows) == 6 and all(0 <= r[1] <= 2000 for r in rows)
