"""Statistical and property tests for privsql.mechanisms.

OpenDP's CSPRNG cannot be seeded, so every statistical check compares an empirical
quantity with its *exact* value (computed from the discrete pmf) within 6 standard
errors: a false failure has probability ~1e-9 per check, while the tests still have the
power to catch a 10% miscalibration (asserted explicitly where it matters).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsql import mechanisms as M

N = 100_000
SCALES = (1.0, 10.0, 1000.0)
Z6 = 6.0


# ---------------------------------------------------------------------------
# exact discrete distributions
# ---------------------------------------------------------------------------


def laplace_pmf(b: float) -> tuple[np.ndarray, np.ndarray]:
    k = math.ceil(60 * b) + 60  # omitted mass < e^-60
    z = np.arange(-k, k + 1)
    q = math.exp(-1.0 / b)
    p = (1 - q) / (1 + q) * np.exp(-np.abs(z) / b)
    return z, p / p.sum()


def gaussian_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    k = math.ceil(40 * sigma) + 40
    z = np.arange(-k, k + 1)
    p = np.exp(-(z.astype(float) ** 2) / (2 * sigma * sigma))
    return z, p / p.sum()


PMF = {"laplace": laplace_pmf, "gaussian": gaussian_pmf}
NOISE = {"laplace": M.add_laplace_noise, "gaussian": M.add_gaussian_noise}
CI = {"laplace": M.laplace_ci_halfwidth, "gaussian": M.gaussian_ci_halfwidth}


def moments(kind: str, scale: float) -> tuple[float, float]:
    z, p = PMF[kind](scale)
    zf = z.astype(float)
    return float((p * zf**2).sum()), float((p * zf**4).sum())


def coverage(kind: str, scale: float, h: float) -> float:
    z, p = PMF[kind](scale)
    return float(p[np.abs(z) <= h].sum())


def test_exact_discrete_laplace_variance_formula():
    # sanity of the reference itself: Var = 2q/(1-q)^2, q = e^{-1/b}
    for b in SCALES:
        q = math.exp(-1 / b)
        assert moments("laplace", b)[0] == pytest.approx(2 * q / (1 - q) ** 2, rel=1e-9)
    # and ≈ 2b² for large b, σ² for the Gaussian
    assert moments("laplace", 1000.0)[0] == pytest.approx(2e6, rel=1e-6)
    assert moments("gaussian", 10.0)[0] == pytest.approx(100.0, rel=1e-9)


# ---------------------------------------------------------------------------
# draws, shared by the variance / mean / coverage tests (one OpenDP call each)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def draws() -> dict[tuple[str, float], np.ndarray]:
    out = {}
    for kind in ("laplace", "gaussian"):
        for scale in SCALES:
            x = NOISE[kind](np.zeros(N, dtype=np.int64), scale)
            assert x.dtype == np.int64 and x.shape == (N,)
            out[kind, scale] = x
    return out


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
@pytest.mark.parametrize("scale", SCALES)
def test_variance_matches_exact_discrete(draws, kind, scale):
    x = draws[kind, scale].astype(float)
    var, m4 = moments(kind, scale)
    se = math.sqrt((m4 - var**2) / N)  # SE of mean(x²) since E[x] = 0
    # power: a 10% variance miscalibration is > 12 SE away
    assert 12 * se < 0.10 * var
    assert abs(np.mean(x**2) - var) <= Z6 * se, (np.mean(x**2), var, se)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
@pytest.mark.parametrize("scale", SCALES)
def test_noise_is_centred(draws, kind, scale):
    x = draws[kind, scale].astype(float)
    var, _ = moments(kind, scale)
    assert abs(x.mean()) <= Z6 * math.sqrt(var / N)
    # symmetric: P[Z > 0] == P[Z < 0]
    pos, neg = int((x > 0).sum()), int((x < 0).sum())
    assert abs(pos - neg) <= Z6 * math.sqrt(pos + neg)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_noise_added_to_nonzero_input(kind):
    n, scale = 20_000, 10.0
    values = (np.arange(n, dtype=np.int64) - n // 2) * 1_000_003
    out = NOISE[kind](values, scale)
    assert out.dtype == np.int64
    err = (out - values).astype(float)
    var, m4 = moments(kind, scale)
    assert abs(err.mean()) <= Z6 * math.sqrt(var / n)
    assert abs(np.mean(err**2) - var) <= Z6 * math.sqrt((m4 - var**2) / n)
    # noise is independent per cell: neighbouring errors uncorrelated
    r = np.corrcoef(err[:-1], err[1:])[0, 1]
    assert abs(r) <= Z6 / math.sqrt(n)


# ---------------------------------------------------------------------------
# confidence intervals
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
@pytest.mark.parametrize("scale", SCALES)
def test_ci_empirical_coverage(draws, kind, scale):
    h = CI[kind](scale)
    assert h == int(h)
    exact = coverage(kind, scale, h)
    assert exact >= 0.95  # never under-covers, even where discreteness matters
    emp = float(np.mean(np.abs(draws[kind, scale]) <= h))
    se = math.sqrt(exact * (1 - exact) / N)
    assert abs(emp - exact) <= Z6 * se
    if scale >= 10:
        assert 0.94 <= emp <= 0.965
    if scale >= 1000:
        assert 0.94 <= emp <= 0.96


@pytest.mark.parametrize("conf", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
@pytest.mark.parametrize("scale", [0.2, 0.7, 1.0, 1.5, 3.3, 10.0, 50.0, 200.0])
def test_laplace_ci_is_smallest_integer_with_coverage(scale, conf):
    h = M.laplace_ci_halfwidth(scale, conf)
    assert coverage("laplace", scale, h) >= conf
    if h > 0:
        assert coverage("laplace", scale, h - 1) < conf
    # within ~half a grid unit of the continuous formula b·ln(1/(1-conf))
    assert abs(h - scale * math.log(1 / (1 - conf))) <= 1.0


@pytest.mark.parametrize("conf", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("scale", [0.2, 0.7, 1.0, 2.5, 10.0, 63.0, 65.0, 300.0])
def test_gaussian_ci_coverage_and_tightness(scale, conf):
    h = M.gaussian_ci_halfwidth(scale, conf)
    z = NormalDist().inv_cdf((1 + conf) / 2)
    assert coverage("gaussian", scale, h) >= conf
    assert h <= math.ceil(scale * z)
    if scale <= 64 and h > 0:  # exact region: smallest such h
        assert coverage("gaussian", scale, h - 1) < conf


def test_continuous_ci_formulas_would_undercover_at_small_scale():
    # why the half-widths are computed for the discrete distributions
    assert coverage("laplace", 1.0, 1.0 * math.log(20)) < 0.93
    assert coverage("gaussian", 1.0, 1.96) < 0.89


# ---------------------------------------------------------------------------
# shapes, dtypes, validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("add", [M.add_laplace_noise, M.add_gaussian_noise])
def test_shapes_and_dtypes(add):
    assert add(np.array([], dtype=np.int64), 1.0).shape == (0,)
    assert add(np.zeros((0, 3), dtype=np.int64), 1.0).shape == (0, 3)
    assert add(np.zeros((0,), dtype=np.int64), 1.0).dtype == np.int64
    out = add(np.arange(12, dtype=np.int32).reshape(3, 4), 2.0)
    assert out.shape == (3, 4) and out.dtype == np.int64
    assert add(np.array(7), 1.0).shape == ()
    assert add([1, 2, 3], 1.0).dtype == np.int64
    assert add(np.arange(10, dtype=np.uint16), 1.0).dtype == np.int64
    # non-contiguous input
    x = np.arange(20, dtype=np.int64)[::2]
    assert add(x, 1e-9).tolist() == x.tolist()  # negligible scale ⇒ (almost surely) exact
    # input is not modified
    x = np.zeros(5, dtype=np.int64)
    add(x, 100.0)
    assert not x.any()


@pytest.mark.parametrize("add", [M.add_laplace_noise, M.add_gaussian_noise])
def test_extreme_but_valid_values(add):
    x = np.array([2**62, -(2**62), 0], dtype=np.int64)
    out = add(x, 1e-6)
    assert out.tolist() == x.tolist()
    assert add([2**62], 1.0).dtype == np.int64  # Python int list


@pytest.mark.parametrize("add", [M.add_laplace_noise, M.add_gaussian_noise])
@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_refuses_bad_scale(add, scale):
    with pytest.raises(ValueError):
        add(np.zeros(3, dtype=np.int64), scale)


@pytest.mark.parametrize("add", [M.add_laplace_noise, M.add_gaussian_noise])
def test_refuses_bad_values(add):
    with pytest.raises(ValueError):
        add(np.array([2**62 + 1], dtype=np.int64), 1.0)
    with pytest.raises(ValueError):
        add(np.array([0, -(2**62) - 1], dtype=np.int64), 1.0)
    with pytest.raises(ValueError):
        add(np.array([2**63 + 5], dtype=np.uint64), 1.0)
    with pytest.raises(ValueError):
        add([2**70], 1.0)
    with pytest.raises(TypeError):
        add(np.array([1.0, 2.0]), 1.0)  # floats never reach the mechanism
    with pytest.raises(TypeError):
        add(np.array([True, False]), 1.0)
    with pytest.raises(TypeError):
        add(np.array(["1"]), 1.0)


def test_measurements_are_cached():
    M._vector_measurement.cache_clear()
    for _ in range(5):
        M.add_laplace_noise(np.zeros(2, dtype=np.int64), 3.25)
    info = M._vector_measurement.cache_info()
    assert info.misses == 1 and info.hits == 4


# ---------------------------------------------------------------------------
# sensitivity -> scale, checked against OpenDP's privacy maps
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(sens=st.integers(1, 10**6), eps=st.floats(1e-3, 20.0))
def test_laplace_scale_meets_epsilon_per_opendp(sens, eps):
    b = M.laplace_scale(sens, eps)
    assert b >= sens / eps
    m = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=b)
    assert m.map(sens) <= eps


@settings(max_examples=60, deadline=None)
@given(sens=st.floats(1e-3, 1e6), rho=st.floats(1e-4, 20.0))
def test_gaussian_scale_meets_rho_per_opendp(sens, rho):
    s = M.gaussian_scale(sens, rho)
    assert s >= sens / math.sqrt(2 * rho)
    m = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=s)
    assert m.map(sens) <= rho


def test_scale_refusals():
    for bad in [(0, 1.0), (1, 0.0), (-1, 1.0), (1, math.nan), (math.inf, 1.0), (1e308, 1e-308)]:
        with pytest.raises(ValueError):
            M.laplace_scale(*bad)
        with pytest.raises(ValueError):
            M.gaussian_scale(*bad)
    assert M.laplace_scale(2, 0.5) == pytest.approx(4.0)
    assert M.gaussian_scale(2, 0.5) == pytest.approx(2.0)


# ---------------------------------------------------------------------------
# partition-selection thresholds
# ---------------------------------------------------------------------------


def test_threshold_raised_to_opendp_where_opendp_is_stricter():
    # razor-edge inputs where OpenDP 0.16's conservative float rounding needs τ + 1
    b = M.laplace_scale(21, 0.03125)
    tau = int(M.laplace_threshold(21, 0.03125, 1e-12))
    assert M._opendp_laplace_threshold_delta(21, b, tau) <= 1e-12
    assert M._opendp_laplace_threshold_delta(21, b, tau - 1) > 1e-12
    sigma = M.gaussian_scale(math.sqrt(392), 0.001953125)
    tau = int(M.gaussian_threshold(392, 0.001953125, 1e-12))
    assert M._opendp_gaussian_threshold_delta(392, sigma, tau) <= 1e-12


def test_laplace_threshold_known_values():
    # b = 3, δ = 1e-6: τ = 1 + ceil(3·ln(3/(1e-6·(1+e^{-1/3})))) = 45
    assert M.laplace_threshold(3, 1.0, 1e-6) == 45.0
    assert M.laplace_threshold(1, 1.0, 0.05) == 4.0


def test_laplace_threshold_monte_carlo_single_group():
    mg, eps, delta = 1, 1.0, 0.05
    tau = M.laplace_threshold(mg, eps, delta)
    b = M.laplace_scale(mg, eps)
    noisy = M.add_laplace_noise(np.ones(N, dtype=np.int64), b)  # a singleton group: count 1
    emp = float(np.mean(noisy >= tau))
    z, p = laplace_pmf(b)
    exact = float(p[z >= tau - 1].sum())
    assert exact <= delta / mg
    assert abs(emp - exact) <= Z6 * math.sqrt(exact * (1 - exact) / N)
    assert emp <= delta / mg
    # τ − 1 would violate δ (τ is the smallest valid threshold)
    assert float(p[z >= tau - 2].sum()) > delta / mg


def test_laplace_threshold_monte_carlo_any_of_max_groups():
    # the real guarantee: P[any of a person's max_groups singleton groups released] <= δ
    mg, eps, delta, rows = 3, 1.0, 0.05, 40_000
    tau = M.laplace_threshold(mg, eps, delta)
    b = M.laplace_scale(mg, eps)
    noisy = M.add_laplace_noise(np.ones((rows, mg), dtype=np.int64), b)
    emp = float(np.mean((noisy >= tau).any(axis=1)))
    z, p = laplace_pmf(b)
    p1 = float(p[z >= tau - 1].sum())
    exact = 1 - (1 - p1) ** mg
    assert exact <= delta
    se = math.sqrt(exact * (1 - exact) / rows)
    assert abs(emp - exact) <= Z6 * se
    # power: an off-by-one τ would be detected
    p1_off = float(p[z >= tau - 2].sum())
    assert (1 - (1 - p1_off) ** mg) - exact > 12 * se


def test_gaussian_threshold_monte_carlo():
    mg, rho, delta, rows = 4, 0.5, 0.05, 25_000
    tau = M.gaussian_threshold(mg, rho, delta)
    sigma = M.gaussian_scale(math.sqrt(mg), rho)
    noisy = M.add_gaussian_noise(np.ones((rows, mg), dtype=np.int64), sigma)
    emp = float(np.mean((noisy >= tau).any(axis=1)))
    z, p = gaussian_pmf(sigma)
    p1 = float(p[z >= tau - 1].sum())
    exact = 1 - (1 - p1) ** mg
    assert mg * p1 <= delta
    assert abs(emp - exact) <= Z6 * math.sqrt(max(exact * (1 - exact), 1e-4) / rows)
    assert emp <= delta


@settings(max_examples=80, deadline=None)
@given(
    mg=st.integers(1, 500),
    eps=st.floats(0.01, 10.0),
    delta=st.floats(1e-12, 0.5),
)
def test_laplace_threshold_union_bound_and_minimality(mg, eps, delta):
    tau = M.laplace_threshold(mg, eps, delta)
    assert tau == int(tau) and tau >= 2
    b = M.laplace_scale(mg, eps)
    q = math.exp(-1 / b)
    k = int(tau) - 1
    # P[Z >= k] = q^k/(1+q), computed here with pow (independently of the log-space code)
    assert mg * q**k / (1 + q) <= delta * (1 + 1e-9)
    # minimal: τ − 1 fails our union bound, or OpenDP's map (the max() in the code)
    if k > 1 and mg * q ** (k - 1) / (1 + q) <= delta * (1 - 1e-9):
        assert M._opendp_laplace_threshold_delta(mg, b, int(tau) - 1) > delta


@settings(max_examples=40, deadline=None)
@given(mg=st.integers(1, 200), eps=st.floats(0.05, 5.0), delta=st.floats(1e-10, 0.3))
def test_laplace_threshold_not_below_opendp(mg, eps, delta):
    tau = int(M.laplace_threshold(mg, eps, delta))
    b = M.laplace_scale(mg, eps)
    dom = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    met = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    m = dp.m.make_laplace_threshold(dom, met, scale=b, threshold=tau)
    e, d = m.map((mg, mg, 1))
    assert d <= delta
    assert e <= eps * (1 + 1e-12)


@settings(max_examples=80, deadline=None)
@given(mg=st.integers(1, 500), rho=st.floats(0.001, 10.0), delta=st.floats(1e-12, 0.5))
def test_gaussian_threshold_bound(mg, rho, delta):
    tau = M.gaussian_threshold(mg, rho, delta)
    assert tau == int(tau) and tau >= 2
    sigma = M.gaussian_scale(math.sqrt(mg), rho)
    # continuous tail bound (upper-bounds the discrete tail) holds at τ ...
    assert mg * 0.5 * math.erfc((tau - 2) / (sigma * math.sqrt(2))) <= delta * (1 + 1e-9)
    # ... and τ is the smallest integer >= 2 for which it holds (or OpenDP needed τ)
    if tau > 2 and mg * 0.5 * math.erfc((tau - 3) / (sigma * math.sqrt(2))) <= delta * (1 - 1e-9):
        assert M._opendp_gaussian_threshold_delta(mg, sigma, int(tau) - 1) > delta


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0, 7.5, 30.0])
def test_discrete_gaussian_tail_below_continuous_bound(sigma):
    # P[Z >= m] <= P[Y >= m − 1] for integer m >= 1: the fact gaussian_threshold relies on
    z, p = gaussian_pmf(sigma)
    for m in range(1, int(8 * sigma) + 3):
        tail = float(p[z >= m].sum())
        assert tail <= 0.5 * math.erfc((m - 1) / (sigma * math.sqrt(2))) * (1 + 1e-9)


def test_threshold_monotonicity_grid():
    deltas = [0.3, 0.1, 1e-2, 1e-4, 1e-6, 1e-9, 1e-12]
    for f, p in ((M.laplace_threshold, 1.0), (M.gaussian_threshold, 0.5)):
        taus = [f(3, p, d) for d in deltas]
        assert taus == sorted(taus)  # smaller δ ⇒ larger τ
        assert taus[-1] > taus[0]
        by_mg = [f(mg, p, 1e-6) for mg in (1, 2, 5, 20, 100)]
        assert by_mg == sorted(by_mg)  # more groups per person ⇒ larger τ
        by_budget = [f(3, x, 1e-6) for x in (0.1, 0.5, 1.0, 5.0)]
        assert by_budget == sorted(by_budget, reverse=True)  # more budget ⇒ smaller τ


@settings(max_examples=60, deadline=None)
@given(
    mg=st.integers(1, 100),
    p=st.floats(0.05, 5.0),
    d1=st.floats(1e-12, 0.5),
    d2=st.floats(1e-12, 0.5),
)
def test_threshold_monotone_in_delta(mg, p, d1, d2):
    lo, hi = sorted((d1, d2))
    assert M.laplace_threshold(mg, p, lo) >= M.laplace_threshold(mg, p, hi)
    assert M.gaussian_threshold(mg, p, lo) >= M.gaussian_threshold(mg, p, hi)


def test_threshold_refusals():
    for f in (M.laplace_threshold, M.gaussian_threshold):
        for args in [(0, 1.0, 1e-6), (1, 0.0, 1e-6), (1, 1.0, 0.0), (1, 1.0, 1.0), (1, math.nan, 1e-6)]:
            with pytest.raises(ValueError):
                f(*args)
        with pytest.raises(TypeError):
            f(1.5, 1.0, 1e-6)
        with pytest.raises(TypeError):
            f(True, 1.0, 1e-6)
