"""zCDP accounting: Gaussian noise, ρ adds up, (ε, δ) reported from the total ρ."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest

from privsql.accounting.dp_math import max_rho_for

ZED = {"zed": {"epsilon": 10.0, "delta": 1e-6, "accounting": "zcdp"}, "pat": {"epsilon": 10.0, "delta": 1e-6}}


def opendp_epsilon(rho: float, delta: float) -> float:
    """OpenDP's own ρ-zCDP → (ε, δ) conversion, via a Gaussian of matching ρ."""
    dp.enable_features("contrib")
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    meas = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*space, scale=1.0)), delta)
    return meas.map(math.sqrt(2 * rho))[0]


def test_k_gaussian_queries_report_epsilon_from_total_rho(make_engine) -> None:
    engine = make_engine(analysts=ZED, cache={"enabled": False})
    k = 100
    for i in range(k):
        r = engine.execute(f"SELECT COUNT(*) FROM people WHERE age > {i}", analyst="zed", epsilon=0.1)
        assert r.privacy.columns[0].mechanism == "gaussian"
    b = engine.budget("zed")
    assert b.rho_spent == pytest.approx(k * 0.1 ** 2 / 2, rel=1e-9)
    assert b.epsilon_spent == pytest.approx(opendp_epsilon(b.rho_spent, 0.5e-6), rel=1e-6)
    assert b.epsilon_spent < 0.6 * k * 0.1  # measurably less than naive summation (10.0)


def test_zcdp_budget_is_never_exceeded_in_epsilon(make_engine) -> None:
    engine = make_engine(analysts=ZED, cache={"enabled": False})
    granted = 0
    with pytest.raises(Exception, match="privacy budget exhausted"):
        for i in range(10_000):
            engine.execute(f"SELECT COUNT(*) FROM people WHERE age > {i % 90}", analyst="zed", epsilon=0.25)
            granted += 1
    b = engine.budget("zed")
    assert b.epsilon_spent <= 10.0
    assert granted == math.floor(max_rho_for(10.0, 0.5e-6) / (0.25 ** 2 / 2) + 1e-9)
    assert granted > 10.0 / 0.25  # more queries than pure ε accounting allows


def test_gaussian_scale_uses_l2_sensitivity(make_engine) -> None:
    engine = make_engine(analysts=ZED)
    plan = engine.prepare("SELECT dept, COUNT(*) FROM visits GROUP BY dept", epsilon=1.0,
                          analyst=engine.analyst("zed")).plan
    (m,) = plan.measures
    # ρ = ε²/2 = 0.5; L2 sensitivity √max_groups · max_rows = √2 · 5; σ = Δ2 / √(2ρ)
    assert m.mechanism == "gaussian"
    assert m.scale == pytest.approx(math.sqrt(2) * 5 / 1.0, rel=1e-9)
    laplace = engine.prepare("SELECT dept, COUNT(*) FROM visits GROUP BY dept", epsilon=1.0).plan.measures[0]
    assert laplace.mechanism == "laplace" and laplace.scale == pytest.approx(10.0, rel=1e-9)
