"""Tests for privsql.accounting.dp_math: conversions checked against OpenDP 0.16 and
against an independent lower bound (the exact privacy profile of the Gaussian mechanism)."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from privsql.accounting import dp_math as D

dp.enable_features("contrib")

rhos = st.floats(1e-8, 1e3)
deltas = st.floats(1e-15, 0.5)
epsilons = st.floats(1e-4, 50.0)


def opendp_rho_to_epsilon(rho: float, delta: float) -> float:
    """OpenDP's conversion, built differently from the module (scale 2, sensitivity 2·sqrt(2ρ))."""
    g = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=2.0)
    m = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(g), delta)
    return m.map(2.0 * math.sqrt(2.0 * rho))[0]


def gaussian_delta(eps: float, rho: float) -> float:
    """Exact δ(ε) of the Gaussian mechanism with sensitivity 1 and σ = 1/sqrt(2ρ), which is
    exactly ρ-zCDP (Balle & Wang 2018): Φ(1/2σ − εσ) − e^ε Φ(−1/2σ − εσ)."""
    sigma = 1.0 / math.sqrt(2.0 * rho)

    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    return cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * cdf(-0.5 / sigma - eps * sigma)


# ---------------------------------------------------------------------------
# pure_to_rho
# ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(eps=st.floats(1e-6, 1e3))
def test_pure_to_rho_matches_opendp(eps):
    lap = dp.m.make_laplace(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0)
    ref = dp.c.make_pureDP_to_zCDP(lap).map(eps)
    rho = D.pure_to_rho(eps)
    assert rho >= eps * eps / 2
    assert rho == pytest.approx(ref, rel=1e-14)


def test_pure_to_rho_edges():
    assert D.pure_to_rho(0.0) == 0.0
    for bad in (-1.0, math.nan, math.inf, 1e200):
        with pytest.raises(ValueError):
            D.pure_to_rho(bad)


# ---------------------------------------------------------------------------
# rho_to_epsilon
# ---------------------------------------------------------------------------


def test_rho_to_epsilon_known_value():
    # OpenDP 0.16 / CKS20 Cor. 13; the classic bound ρ + 2·sqrt(ρ ln(1/δ)) gives 5.7565
    assert D.rho_to_epsilon(0.5, 1e-6) == pytest.approx(5.2215344445, rel=1e-9)
    assert D.rho_to_epsilon(0.0, 1e-6) == 0.0


@settings(max_examples=60, deadline=None)
@given(rho=rhos, delta=deltas)
def test_rho_to_epsilon_matches_opendp_and_own_formula(rho, delta):
    eps = D.rho_to_epsilon(rho, delta)
    ref = opendp_rho_to_epsilon(rho, delta)
    own = D._cks_epsilon(rho, delta)
    assert eps == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert own == pytest.approx(eps, rel=1e-9, abs=1e-12)
    # tight conversion is never worse than the classic one (Bun & Steinke 2016)
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1e-12


@settings(max_examples=60, deadline=None)
@given(rho=st.floats(1e-4, 50.0), delta=st.floats(1e-12, 0.2))
def test_rho_to_epsilon_is_valid_for_the_gaussian_mechanism(rho, delta):
    # Independent soundness check: the Gaussian mechanism is ρ-zCDP, so the (ε, δ) we
    # claim for every ρ-zCDP mechanism must hold for it, using its exact privacy profile.
    eps = D.rho_to_epsilon(rho, delta)
    assert gaussian_delta(eps, rho) <= delta * (1 + 1e-9) + 1e-15


@settings(max_examples=60, deadline=None)
@given(r1=rhos, r2=rhos, delta=deltas)
def test_rho_to_epsilon_monotone(r1, r2, delta):
    lo, hi = sorted((r1, r2))
    assert D.rho_to_epsilon(lo, delta) <= D.rho_to_epsilon(hi, delta)


def test_rho_to_epsilon_monotone_in_delta():
    eps = [D.rho_to_epsilon(0.3, d) for d in (1e-3, 1e-6, 1e-9, 1e-12)]
    assert eps == sorted(eps) and eps[0] < eps[-1]


def test_rho_to_epsilon_large_rho_falls_back():
    # OpenDP 0.16 overflows here; the own CKS evaluation takes over
    eps = D.rho_to_epsilon(1e6, 1e-6)
    assert math.isfinite(eps) and eps >= 1e6


def test_rho_to_epsilon_validation():
    for rho, delta in [(-1.0, 1e-6), (math.nan, 1e-6), (math.inf, 1e-6), (0.5, 0.0), (0.5, 1.0), (0.5, -1e-9)]:
        with pytest.raises(ValueError):
            D.rho_to_epsilon(rho, delta)


# ---------------------------------------------------------------------------
# max_rho_for
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(eps=epsilons, delta=deltas)
def test_max_rho_for_fits_and_is_tight(eps, delta):
    rho = D.max_rho_for(eps, delta)
    assert rho > 0
    assert D.rho_to_epsilon(rho, delta) <= eps  # rounded down: fits in the budget
    assert D.rho_to_epsilon(rho * (1 + 1e-7), delta) > eps  # and is (nearly) the largest


@settings(max_examples=40, deadline=None)
@given(rho=st.floats(1e-6, 1e3), delta=deltas)
def test_round_trip_rho_epsilon_rho(rho, delta):
    eps = D.rho_to_epsilon(rho, delta)
    assume(eps > 1e-9)
    back = D.max_rho_for(eps, delta)
    assert back <= rho * (1 + 1e-9)
    assert back >= rho * (1 - 1e-6)


@settings(max_examples=40, deadline=None)
@given(eps=st.floats(0.01, 20.0), delta=deltas)
def test_round_trip_epsilon_rho_epsilon(eps, delta):
    back = D.rho_to_epsilon(D.max_rho_for(eps, delta), delta)
    assert eps * (1 - 1e-6) <= back <= eps


def test_max_rho_for_pure_bound():
    # (ε, δ) with δ > 0 allows more than the pure-DP conversion ε²/2
    assert D.max_rho_for(1.0, 1e-6) > D.pure_to_rho(1.0) * 0.0  # positive
    assert D.max_rho_for(1.0, 1e-6) == pytest.approx(0.0243559703, rel=1e-7)


def test_max_rho_for_validation():
    for eps, delta in [(0.0, 1e-6), (-1.0, 1e-6), (math.inf, 1e-6), (1.0, 0.0), (1.0, 1.0)]:
        with pytest.raises(ValueError):
            D.max_rho_for(eps, delta)


# ---------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------

# weights are 0 or >= 1e-100 (subnormal weights make the *test's* reference share inexact)
weights_st = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-100, 1e6)), min_size=1, max_size=40
).filter(lambda w: sum(w) > 0)


def check_split(total: float, weights: list[float], parts: list[float]) -> None:
    assert len(parts) == len(weights)
    assert all(p >= 0.0 for p in parts)
    assert math.fsum(parts) <= total
    assert sum(parts) <= total
    assert sum(sorted(parts)) <= total
    assert sum(reversed(parts)) <= total
    wsum = math.fsum(weights)
    for w, p in zip(weights, parts):
        if w == 0:
            assert p == 0.0
        else:
            share = total * (w / wsum)
            assert p <= share * (1 + 1e-15) + 1e-300  # (abs term: subnormal totals)
            assert p == pytest.approx(share, rel=1e-12, abs=1e-300)


@settings(max_examples=300, deadline=None)
@given(total=st.floats(0.0, 1e6), weights=weights_st)
def test_split_epsilon_property(total, weights):
    check_split(total, weights, D.split_epsilon(total, weights))


@settings(max_examples=200, deadline=None)
@given(total=st.floats(0.0, 1e6), weights=weights_st)
def test_split_rho_property(total, weights):
    check_split(total, weights, D.split_rho(total, weights))


@pytest.mark.parametrize(
    "total,weights",
    [
        (0.1, [1] * 10),
        (0.3, [1, 1, 1]),
        (1.0, [1, 2, 3, 4, 5, 6, 7]),
        (0.7, [0.1, 0.2, 0.3, 0.4]),
        (1.0, [1e-300, 1.0]),
        (5e-324, [1, 1]),
        (2.225073858507e-311, [0.0, 1.0, 1.0, 1.25]),  # found by hypothesis: zero part went negative
    ],
)
def test_split_adversarial_rounding(total, weights):
    check_split(total, weights, D.split_epsilon(total, weights))


def test_split_validation():
    for total, weights in [(1.0, []), (1.0, [0, 0]), (-1.0, [1]), (math.nan, [1]), (1.0, [1, -1]), (1.0, [math.inf])]:
        with pytest.raises(ValueError):
            D.split_epsilon(total, weights)
        with pytest.raises(ValueError):
            D.split_rho(total, weights)
