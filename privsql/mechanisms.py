"""Noise and accuracy: FP-safe discrete Laplace / discrete Gaussian on a fixed-point grid.

The engine turns every clamped per-person contribution into an integer number of grid
units in SQL and sums exactly, so what reaches this module is an ``int64`` array of exact
partial aggregates plus a sensitivity **in grid units**. Noise is therefore discrete and
added by OpenDP (0.16) on ``vector_domain(atom_domain(T=i64))``:

* ``add_laplace_noise``: ``make_laplace`` with ``l1_distance(T=i64)`` — discrete Laplace
  (a.k.a. two-sided geometric), P[Z = z] ∝ exp(−|z|/b). With integer L1 sensitivity Δ1 and
  b = Δ1/ε it is ε-DP (GRS12; CKS20 §5.2).
* ``add_gaussian_noise``: ``make_gaussian`` with ``l2_distance(T=i64)`` — discrete Gaussian,
  P[Z = z] ∝ exp(−z²/(2σ²)). With L2 sensitivity Δ2 and σ = Δ2/sqrt(2ρ) it is ρ-zCDP
  (CKS20 Thm. 14).

Because inputs, noise and outputs are all integers, the mechanism has no floating-point
arithmetic on data and is immune to Mironov's (2012) attack on textbook float Laplace.
Randomness comes from OpenDP's CSPRNG (OpenSSL / OS entropy); numpy.random is never used
for privacy noise, and the noise cannot be seeded.

All scales here are in **grid units**; so are the CI half-widths and thresholds returned.
Outputs saturate at the int64 limits (OpenDP's saturating add), which is post-processing.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
import opendp.prelude as dp

dp.enable_features("contrib")

__all__ = [
    "laplace_scale",
    "gaussian_scale",
    "add_laplace_noise",
    "add_gaussian_noise",
    "laplace_ci_halfwidth",
    "gaussian_ci_halfwidth",
    "laplace_threshold",
    "gaussian_threshold",
    "MAX_ABS_VALUE",
]

#: inputs must lie in [−MAX_ABS_VALUE, MAX_ABS_VALUE] so that value + noise has headroom in
#: int64 (OpenDP saturates rather than wrapping, but a saturated answer is useless).
MAX_ABS_VALUE = 2**62

_STD_NORMAL = NormalDist()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _pos_finite(name: str, x: float) -> float:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, not bool")
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}") from None
    if not math.isfinite(x) or x <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return x


def _confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return confidence


def _delta(delta: float) -> float:
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _max_groups(max_groups: int) -> int:
    if isinstance(max_groups, bool) or not isinstance(max_groups, (int, np.integer)):
        raise TypeError(f"max_groups must be an int, got {type(max_groups).__name__}")
    max_groups = int(max_groups)
    if not (1 <= max_groups <= 2**31 - 1):
        raise ValueError(f"max_groups must be in [1, 2^31 - 1], got {max_groups}")
    return max_groups


def _up(x: float, ulps: int = 4) -> float:
    """x moved ``ulps`` floats toward +inf: covers the rounding of a few float operations,
    so a computed scale is never below the exact Δ/ε (errs toward privacy)."""
    for _ in range(ulps):
        x = math.nextafter(x, math.inf)
    return x


# ---------------------------------------------------------------------------
# sensitivity -> scale
# ---------------------------------------------------------------------------


def laplace_scale(sensitivity_l1: float, epsilon: float) -> float:
    """Discrete Laplace scale b = Δ1/ε (rounded up) for ε-DP.

    ``sensitivity_l1`` is the L1 sensitivity in grid units (> 0); ``epsilon`` > 0.
    Guarantee: ``add_laplace_noise(x, laplace_scale(Δ1, ε))`` is ε-DP for any x whose
    L1 distance between neighbours is <= Δ1 (OpenDP's map: Δ1/b <= ε; tested).
    """
    sensitivity_l1 = _pos_finite("sensitivity_l1", sensitivity_l1)
    epsilon = _pos_finite("epsilon", epsilon)
    b = _up(sensitivity_l1 / epsilon)
    if not math.isfinite(b):
        raise ValueError(f"scale overflows: sensitivity {sensitivity_l1!r} / epsilon {epsilon!r}")
    return b


def gaussian_scale(sensitivity_l2: float, rho: float) -> float:
    """Discrete Gaussian σ = Δ2/sqrt(2ρ) (rounded up) for ρ-zCDP.

    ``sensitivity_l2`` is the L2 sensitivity in grid units (> 0); ``rho`` > 0.
    Guarantee: ``add_gaussian_noise(x, gaussian_scale(Δ2, ρ))`` is ρ-zCDP for any x whose
    L2 distance between neighbours is <= Δ2 (CKS20 Thm. 14: ρ = Δ2²/(2σ²); tested against
    OpenDP's map).
    """
    sensitivity_l2 = _pos_finite("sensitivity_l2", sensitivity_l2)
    rho = _pos_finite("rho", rho)
    sigma = _up(sensitivity_l2 / math.sqrt(2.0 * rho))
    if not math.isfinite(sigma):
        raise ValueError(f"scale overflows: sensitivity {sensitivity_l2!r}, rho {rho!r}")
    return sigma


# ---------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _vector_measurement(kind: str, scale: float) -> dp.Measurement:
    """OpenDP measurement over Vec<i64>, built once per (kind, scale) (~2-5 ms to build)."""
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    if kind == "laplace":
        return dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)
    if kind == "gaussian":
        return dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale)
    raise ValueError(f"unknown noise kind {kind!r}")  # pragma: no cover


def _as_int64(values: np.ndarray) -> np.ndarray:
    """Validate and convert to a C-contiguous int64 array (same shape)."""
    arr = np.asarray(values)
    if arr.dtype == object:
        flat = arr.reshape(-1)
        for v in flat:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"values must be integers (grid units), found {type(v).__name__}")
            if not (-MAX_ABS_VALUE <= int(v) <= MAX_ABS_VALUE):
                raise ValueError(f"value {int(v)} is outside ±2^62")
        return np.array([int(v) for v in flat], dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"values must be an integer array (grid units), got dtype {arr.dtype}; "
            "noise is only added on the fixed-point grid"
        )
    if arr.size:
        # compare in the original dtype (uint64 values above int64 max must not wrap)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -MAX_ABS_VALUE or hi > MAX_ABS_VALUE:
            bad = lo if lo < -MAX_ABS_VALUE else hi
            raise ValueError(f"value {bad} is outside ±2^62")
    # (ascontiguousarray would turn a 0-d array into shape (1,): restore the shape)
    return np.ascontiguousarray(arr, dtype=np.int64).reshape(arr.shape)


def _add_noise(kind: str, values: np.ndarray, scale: float) -> np.ndarray:
    scale = _pos_finite("scale", scale)
    arr = _as_int64(values)
    if arr.size == 0:
        return np.empty(arr.shape, dtype=np.int64)
    flat = arr.reshape(-1)
    # One vectorised OpenDP call per array. OpenDP reads the int64 buffer directly
    # (numpy fast path) and returns Python ints, converted back to int64 here.
    noisy = _vector_measurement(kind, scale)(flat)
    out = np.array(noisy, dtype=np.int64)
    if out.shape != flat.shape:  # pragma: no cover - defensive
        raise RuntimeError("noise mechanism returned the wrong number of cells")
    return out.reshape(arr.shape)


def add_laplace_noise(values: np.ndarray, scale: float) -> np.ndarray:
    """values + discrete Laplace(scale) noise, independently per cell; int64 in/out.

    P[Z = z] = (1 − q)/(1 + q) · q^|z| with q = exp(−1/scale); Var Z = 2q/(1 − q)² (≈ 2b²).
    Privacy: ε-DP for L1 sensitivity Δ1 (grid units) when ``scale >= Δ1/ε`` — use
    :func:`laplace_scale`. Exact integer sampling by OpenDP's CSPRNG (no FP attack surface).

    ``values``: integer array of any shape (empty ok), each |v| <= 2^62, else ValueError;
    float arrays are refused (TypeError). ``scale``: finite and > 0, else ValueError.
    Returns a new int64 array of the same shape. Cost: ~7 µs per cell plus ~0.1 ms per call
    (after the first call for a given scale, which builds the measurement).
    """
    return _add_noise("laplace", values, scale)


def add_gaussian_noise(values: np.ndarray, scale: float) -> np.ndarray:
    """values + discrete Gaussian(σ = scale) noise, independently per cell; int64 in/out.

    P[Z = z] ∝ exp(−z²/(2σ²)); Var Z <= σ² (≈ σ² for σ >= 1; CKS20 Prop. 19).
    Privacy: ρ-zCDP for L2 sensitivity Δ2 (grid units) when ``scale >= Δ2/sqrt(2ρ)`` —
    use :func:`gaussian_scale`. Exact integer sampling by OpenDP's CSPRNG.

    Same input rules and shape/dtype behaviour as :func:`add_laplace_noise`.
    Cost: ~11-17 µs per cell.
    """
    return _add_noise("gaussian", values, scale)


# ---------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------


def laplace_ci_halfwidth(scale: float, confidence: float = 0.95) -> float:
    """Smallest integer h with P[|Z| <= h] >= confidence for Z ~ discrete Laplace(scale).

    Exact for the discrete distribution (not the continuous formula b·ln(1/(1 − conf)),
    which *under-covers* at small scales: b = 1 gives h = 2.996, but P[|Z| <= 2] = 0.927)::

        P[|Z| > k] = 2·q^(k+1)/(1 + q),  q = exp(−1/b),  k = 0, 1, 2, ...
        ⇒ h = max(0, ceil(b·ln(2/(α(1 + q)))) − 1),  α = 1 − confidence.

    h is within about half a grid unit of the continuous b·ln(1/α) (h ≈ round(b·ln(1/α))
    for large b). A noisy cell y = x + Z then satisfies P[|y − x| <= h] >= confidence.
    Result in grid units (a float holding an integer; plain b·ln(…) above 2^52).
    """
    b = _pos_finite("scale", scale)
    alpha = 1.0 - _confidence(confidence)
    log1p_q = math.log1p(math.exp(-1.0 / b))
    target = b * (math.log(2.0 / alpha) - log1p_q)  # = (k + 1) threshold
    if target > 2.0**52:
        return float(target)
    k = max(0, math.ceil(target) - 1)

    def tail(k: int) -> float:  # log P[|Z| > k]
        return math.log(2.0) - (k + 1) / b - log1p_q

    log_alpha = math.log(alpha)
    while tail(k) > log_alpha:  # float guard
        k += 1
    while k > 0 and tail(k - 1) <= log_alpha:
        k -= 1
    return float(k)


@functools.lru_cache(maxsize=256)
def _discrete_gaussian_ci_exact(sigma: float, alpha: float) -> int:
    """Smallest k with P[|Z| > k] <= alpha, by summing the pmf (for small σ only)."""
    n = math.ceil(40.0 * sigma) + 40  # omitted mass < e^-800
    w = [math.exp(-0.5 * (x / sigma) * (x / sigma)) for x in range(n + 1)]  # inf*inf -> 0
    norm = w[0] + 2.0 * math.fsum(w[1:])
    # tails[k] = Σ_{x>k} w(x), built from the far end (small terms first)
    tails = [0.0] * (n + 1)
    acc = 0.0
    for x in range(n, 0, -1):
        acc += w[x]
        tails[x - 1] = acc
    for k in range(n + 1):
        if 2.0 * tails[k] / norm <= alpha:
            return k
    return n  # pragma: no cover


#: below this σ the Gaussian CI is computed exactly from the discrete pmf
_EXACT_GAUSSIAN_CI_MAX_SIGMA = 64.0


def gaussian_ci_halfwidth(scale: float, confidence: float = 0.95) -> float:
    """Integer h with P[|Z| <= h] >= confidence for Z ~ discrete Gaussian(σ = scale).

    For σ <= 64: the smallest such h, from the exact discrete pmf. Above: h = ceil(σ·z),
    z = Φ⁻¹((1 + conf)/2), which is valid for the *discrete* Gaussian because, for integer
    m >= 1, P[Z >= m] <= P[Y >= m − 1] with Y ~ N(0, σ²): Σ_{x>=m} e^{−x²/2σ²} <=
    ∫_{m−1}^∞ e^{−x²/2σ²}dx and the normaliser Σ_{x∈ℤ} e^{−x²/2σ²} >= sqrt(2πσ²) (Poisson
    summation). So P[|Z| > h] = 2·P[Z >= h + 1] <= 2·P[Y >= h] <= α when h >= σ·z.
    Either way h <= ceil(σ·z), at most one grid unit above the continuous σ·z.
    (Plain σ·z under-covers at small σ: σ = 1, z = 1.96 gives P[|Z| <= 1] = 0.883.)
    Result in grid units (a float holding an integer; plain σ·z above 2^52).
    """
    sigma = _pos_finite("scale", scale)
    alpha = 1.0 - _confidence(confidence)
    z = -_STD_NORMAL.inv_cdf(alpha / 2.0)
    h = sigma * z
    if h > 2.0**52:
        return float(h)
    if sigma <= _EXACT_GAUSSIAN_CI_MAX_SIGMA:
        return float(min(_discrete_gaussian_ci_exact(sigma, alpha), max(0, math.ceil(h))))
    return float(max(0, math.ceil(h)))


# ---------------------------------------------------------------------------
# partition-selection thresholds
# ---------------------------------------------------------------------------


def _opendp_laplace_threshold_delta(max_groups: int, scale: float, tau: int) -> float:
    dom = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    met = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    m = dp.m.make_laplace_threshold(dom, met, scale=scale, threshold=tau)
    _eps, delta = m.map((max_groups, max_groups, 1))
    return float(delta)


def _opendp_gaussian_threshold_delta(max_groups: int, scale: float, tau: int) -> float:
    dom = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    met = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    m = dp.m.make_gaussian_threshold(dom, met, scale=scale, threshold=tau)
    # the L2 entry only affects the ρ part of the map (ignored); δ depends on l0 and l∞
    _rho, delta = m.map((max_groups, math.isqrt(max_groups - 1) + 1, 1))
    return float(delta)


def _raise_until(tau: int, ok) -> int:
    """Smallest τ' >= tau with ok(τ') (ok monotone in τ): exponential then binary search."""
    if ok(tau):
        return tau
    lo, step = tau, 1
    while not ok(tau + step):
        lo = tau + step
        step *= 2
        if tau + step > MAX_ABS_VALUE:
            raise ValueError("no finite threshold satisfies delta")
    hi = tau + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# relative slack in δ when checking a candidate τ in floating point (errs toward privacy)
_LOG_SLACK = 1e-12


@functools.lru_cache(maxsize=1024)
def _laplace_threshold(max_groups: int, epsilon: float, delta: float) -> int:
    b = laplace_scale(max_groups, epsilon)
    log1p_q = math.log1p(math.exp(-1.0 / b))
    log_bound = math.log(delta) - _LOG_SLACK

    def ok(tau: int) -> bool:  # union bound: max_groups · P[Z >= τ − 1] <= δ
        k = tau - 1
        return math.log(max_groups) - k / b - log1p_q <= log_bound

    k = b * (math.log(max_groups) - math.log(delta) - log1p_q)
    if not math.isfinite(k) or k > MAX_ABS_VALUE:
        raise ValueError("threshold is too large: increase epsilon or delta")
    tau = _raise_until(1 + max(1, math.ceil(k)), ok)
    # Cross-check with OpenDP's privacy map and keep the larger τ (err toward privacy).
    # Observed with OpenDP 0.16: its map charges P[Z >= τ] per new key (i.e. it treats the
    # filter as "noisy > τ"), while its sampler keeps keys with noisy >= τ; e.g. scale 1,
    # τ = 2, count 1: map δ = 0.0989, measured release rate 0.27 = P[Z >= 1]. So OpenDP's
    # τ is usually one *below* ours. But OpenDP rounds its tail bound conservatively in
    # floating point, so at tiny δ and large scales (e.g. max_groups 21, ε 1/32, δ 1e-12)
    # its τ can exceed ours by one, and then this max() binds.
    tau = _raise_until(tau, lambda t: _opendp_laplace_threshold_delta(max_groups, b, t) <= delta)
    return tau


def laplace_threshold(max_groups: int, epsilon: float, delta: float) -> float:
    """Release threshold τ (integer, as float) for groups whose keys are not public.

    Mechanism this τ is for: each candidate group's *user count* c gets discrete Laplace
    noise of scale b = ``laplace_scale(max_groups, epsilon)`` (L1 sensitivity max_groups:
    one person is in at most max_groups groups, adding 1 to each), and the group is
    released iff ``c + Z >= τ`` (>=, not >).

    Guarantee: (ε, δ)-DP for the released set of keys and noisy counts. ε covers groups
    present in both neighbours (user counts differ by <= 1 in <= max_groups groups). δ
    covers the groups that exist only because of one person: at most max_groups groups,
    each with user count 1. Derivation, with q = e^{−1/b} and Z discrete Laplace(b), for
    integer k >= 1::

        P[Z >= k] = Σ_{z>=k} (1−q)/(1+q) q^z = q^k/(1+q) = e^{−k/b}/(1 + e^{−1/b})
        P[singleton released] = P[1 + Z >= τ] = P[Z >= τ − 1]
        union bound:  max_groups · e^{−(τ−1)/b}/(1 + e^{−1/b}) <= δ
        ⇔  τ >= 1 + b·ln(max_groups / (δ·(1 + e^{−1/b})))

    τ is the smallest integer >= 2 satisfying this (checked in log space with 1e-12
    relative slack), then raised if OpenDP's ``make_laplace_threshold`` map would need a
    larger τ for the same inputs (in 0.16 this happens only at razor-edge inputs, by one,
    through OpenDP's float rounding; its counting is otherwise one unit *less*
    conservative than ours — see the comment in the code).
    Cached. ValueError on max_groups < 1, epsilon <= 0, delta outside (0, 1).
    """
    return float(
        _laplace_threshold(
            _max_groups(max_groups), _pos_finite("epsilon", epsilon), _delta(delta)
        )
    )


@functools.lru_cache(maxsize=1024)
def _gaussian_threshold(max_groups: int, rho: float, delta: float) -> int:
    sigma = gaussian_scale(math.sqrt(max_groups), rho)
    p = delta / max_groups
    bound = delta * (1.0 - _LOG_SLACK)

    def ok(tau: int) -> bool:  # max_groups · P[Y >= τ − 2] <= δ, Y ~ N(0, σ²)
        return max_groups * 0.5 * math.erfc((tau - 2) / (sigma * math.sqrt(2.0))) <= bound

    h = sigma * -_STD_NORMAL.inv_cdf(p) if p < 0.5 else 0.0
    if not math.isfinite(h) or h > MAX_ABS_VALUE:
        raise ValueError("threshold is too large: increase rho or delta")
    tau = _raise_until(2 + max(0, math.ceil(h)), ok)
    # Cross-check with OpenDP; keep the larger τ. OpenDP 0.16 charges the continuous tail
    # P[Y >= τ − 1] per new key, which is below the true discrete P[Z >= τ − 1] (scale 1,
    # τ = 2: map δ = 0.159, measured 0.30), so our bound is normally the more conservative
    # one; OpenDP's conservative float rounding can still make its τ one larger at tiny δ
    # (e.g. max_groups 392, ρ 1/512, δ 1e-12), in which case this max() binds.
    tau = _raise_until(tau, lambda t: _opendp_gaussian_threshold_delta(max_groups, sigma, t) <= delta)
    return tau


def gaussian_threshold(max_groups: int, rho: float, delta: float) -> float:
    """Release threshold τ for non-public keys when user counts get discrete Gaussian noise.

    Mechanism: user counts get discrete Gaussian noise with σ =
    ``gaussian_scale(sqrt(max_groups), rho)`` (L2 sensitivity sqrt(max_groups)); a group is
    released iff ``c + Z >= τ``. Guarantee: ρ-zCDP on groups present in both neighbours,
    plus δ = P[any of the person's (<= max_groups) singleton groups is released], i.e.
    (ρ, δ)-approximate zCDP; convert ρ with ``rho_to_epsilon`` and add the δs.

    Derivation (conservative, continuous tail): for integer m >= 1 the discrete Gaussian
    satisfies P[Z >= m] <= P[Y >= m − 1], Y ~ N(0, σ²) — the sum Σ_{x>=m} e^{−x²/2σ²} is at
    most the integral from m − 1, and the discrete normaliser is >= sqrt(2πσ²) (Poisson
    summation). Hence, with the union bound::

        max_groups · P[Z >= τ − 1] <= max_groups · Q((τ − 2)/σ) <= δ
        ⇐  τ >= 2 + σ·Φ⁻¹(1 − δ/max_groups)

    τ is the smallest integer >= 2 satisfying the bound (checked with math.erfc), raised if
    OpenDP's ``make_gaussian_threshold`` map needs more (rare, by one, in 0.16). The bound
    costs about one grid unit of τ relative to the exact discrete tail. Cached.
    """
    return float(
        _gaussian_threshold(_max_groups(max_groups), _pos_finite("rho", rho), _delta(delta))
    )
