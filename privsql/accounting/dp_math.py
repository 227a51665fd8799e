"""Privacy arithmetic: conversions between pure DP, zCDP and (ε, δ)-DP, and budget splits.

Pure functions, no I/O. Every function rounds in the direction that errs toward
privacy: *costs* (ρ from ε, ε from ρ) are rounded **up**, *allowances* (the largest ρ
that fits in an (ε, δ) budget, the parts of a split budget) are rounded **down**.

Where OpenDP (0.16) provides the conversion it is used as the reference:

* ``rho_to_epsilon`` evaluates OpenDP's ``make_zCDP_to_approxDP`` + ``make_fix_delta``
  privacy map (the tight conversion of Canonne, Kamath & Steinke 2020, "The Discrete
  Gaussian for Differential Privacy", Cor. 13, with OpenDP's conservative float rounding).
* ``max_rho_for`` inverts the same formula in closed form per Rényi order (fast, pure
  Python) and then *verifies* the answer with OpenDP, stepping down if OpenDP disagrees.

Notation: ``L = ln(1/δ)``. For a ρ-zCDP mechanism and any Rényi order α > 1, CKS20
Cor. 13 gives (ε_α, δ)-DP with::

    ε_α(ρ, δ) = α·ρ + (L − ln α)/(α − 1) + ln(1 − 1/α)

and the tight ε is the infimum over α. Any single α yields a *valid* (if looser) ε, so
numerical optimisation error can only make our answers more conservative.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import opendp.prelude as dp

dp.enable_features("contrib")

__all__ = [
    "pure_to_rho",
    "rho_to_epsilon",
    "max_rho_for",
    "split_epsilon",
    "split_rho",
]


# ---------------------------------------------------------------------------
# validation and directed rounding helpers
# ---------------------------------------------------------------------------


def _finite_nonneg(name: str, x: float) -> float:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, not bool")
    x = float(x)
    if not math.isfinite(x) or x < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return x


def _finite_pos(name: str, x: float) -> float:
    x = _finite_nonneg(name, x)
    if x == 0.0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    return x


def _delta(delta: float) -> float:
    if isinstance(delta, bool):
        raise TypeError("delta must be a number, not bool")
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _up(x: float, ulps: int = 4) -> float:
    """x moved ``ulps`` representable floats toward +inf (covers a few ops' rounding)."""
    for _ in range(ulps):
        x = math.nextafter(x, math.inf)
    return x


def _down(x: float, ulps: int = 4) -> float:
    for _ in range(ulps):
        x = math.nextafter(x, -math.inf)
    return x


# ---------------------------------------------------------------------------
# pure DP -> zCDP
# ---------------------------------------------------------------------------


def pure_to_rho(epsilon: float) -> float:
    """ρ such that every ε-DP mechanism is ρ-zCDP: ρ = ε²/2 (Bun & Steinke 2016, Prop. 1.4).

    Rounded up (a cost). Agrees with OpenDP's ``make_pureDP_to_zCDP`` map (tested).
    ``epsilon`` must be finite and >= 0.
    """
    epsilon = _finite_nonneg("epsilon", epsilon)
    if epsilon == 0.0:
        return 0.0
    rho = epsilon * epsilon / 2.0
    if not math.isfinite(rho):
        raise ValueError(f"epsilon={epsilon!r} is too large")
    return _up(rho, 2)


# ---------------------------------------------------------------------------
# zCDP -> (ε, δ): CKS20 Cor. 13
# ---------------------------------------------------------------------------

# search grid over u = ln(α − 1): α − 1 from e^-30 (≈1e-13) to e^60; the optimum is near
# α − 1 ≈ sqrt(L/ρ), which stays well inside for every ρ, δ a budget can reasonably hold.
_U_LO, _U_HI, _U_STEP = -30.0, 60.0, 0.25
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _c_alpha(u: float, log_inv_delta: float) -> tuple[float, float]:
    """(α, c(α)) with α = 1 + e^u and c(α) = (L − ln α)/(α − 1) + ln(1 − 1/α).

    Written in u so that α close to 1 stays accurate: ln(1 − 1/α) = u − ln α.
    """
    am1 = math.exp(u)
    log_alpha = math.log1p(am1)
    return 1.0 + am1, (log_inv_delta - log_alpha) / am1 + (u - log_alpha)


def _optimise(f, maximise: bool) -> float:
    """Grid search over u, then golden-section refinement around the best grid point.

    f need not be unimodal for correctness: every u gives a valid bound, we just want a
    good one.
    """
    sign = -1.0 if maximise else 1.0
    n = int((_U_HI - _U_LO) / _U_STEP) + 1
    best_u, best = _U_LO, math.inf
    for i in range(n):
        u = _U_LO + i * _U_STEP
        v = sign * f(u)
        if v < best:
            best_u, best = u, v
    a, b = best_u - _U_STEP, best_u + _U_STEP
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = sign * f(c), sign * f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = sign * f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = sign * f(d)
    best = min(best, fc, fd)
    return sign * best


def _cks_epsilon(rho: float, delta: float) -> float:
    """Own evaluation of CKS20 Cor. 13 (inf over α of ε_α), rounded up. Fast (~0.3 ms).

    Used as the fallback where OpenDP's map overflows (ρ ≳ 1e5) and as the engine of
    ``max_rho_for``; tested to agree with OpenDP to ~1e-9 relative.
    """
    if rho == 0.0:
        return 0.0
    log_inv_delta = -math.log(delta)

    def eps_at(u: float) -> float:
        alpha, c = _c_alpha(u, log_inv_delta)
        return alpha * rho + c

    eps = _optimise(eps_at, maximise=False)
    if not math.isfinite(eps):
        raise ValueError(f"rho={rho!r} gives no finite epsilon")
    # float error in evaluating ε_α at one α is a few ulps of its largest term
    return max(0.0, _up(eps * (1.0 + 1e-12) + 1e-300))


@functools.lru_cache(maxsize=32)
def _opendp_zcdp_to_approx(delta: float) -> dp.Measurement:
    # A Gaussian with scale 1 on sensitivity d has ρ = d²/2; we feed d = sqrt(2ρ) to get the
    # conversion of an arbitrary ρ through OpenDP's own privacy map.
    gauss = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gauss), delta)


@functools.lru_cache(maxsize=4096)
def _rho_to_epsilon(rho: float, delta: float) -> float:
    if rho == 0.0:
        return 0.0
    d_in = _up(math.sqrt(2.0 * rho))  # so that OpenDP's ρ' = d_in²/2 >= ρ
    try:
        eps, d_out = _opendp_zcdp_to_approx(delta).map(d_in)
    except dp.OpenDPException:
        # OpenDP 0.16 overflows (exp of (α−1)(αρ−ε)) for ρ ≳ 1e5; fall back to the same
        # formula evaluated in log space. Budgets that large are refused anyway.
        return _cks_epsilon(rho, delta)
    if d_out > delta:  # pragma: no cover - make_fix_delta fixes δ exactly
        raise RuntimeError(f"OpenDP returned delta {d_out!r} > requested {delta!r}")
    return float(eps)


def rho_to_epsilon(rho: float, delta: float) -> float:
    """Smallest ε (as computed by OpenDP) such that every ρ-zCDP mechanism is (ε, δ)-DP.

    Tight conversion of Canonne, Kamath & Steinke 2020 (Cor. 13)::

        ε = inf_{α>1}  α·ρ + (ln(1/δ) − ln α)/(α − 1) + ln(1 − 1/α)

    evaluated by OpenDP 0.16 (``make_zCDP_to_approxDP`` + ``make_fix_delta``), which rounds
    conservatively. It is noticeably smaller than the classic ρ + 2·sqrt(ρ·ln(1/δ)).
    May be 0 when ρ is tiny relative to δ (then (0, δ)-DP already holds).
    Cached (lru, 4096 entries); an uncached call costs ~3 ms.

    ``rho`` must be finite and >= 0; ``delta`` in (0, 1).
    """
    return _rho_to_epsilon(_finite_nonneg("rho", rho), _delta(delta))


@functools.lru_cache(maxsize=4096)
def _max_rho_for(epsilon: float, delta: float) -> float:
    log_inv_delta = -math.log(delta)

    # ρ-zCDP ⇒ (ε, δ)-DP iff ∃α: α·ρ + c(α) <= ε  iff  ρ <= sup_α (ε − c(α))/α.
    # Every α gives a valid ρ, so the search error only costs a little utility.
    def rho_at(u: float) -> float:
        alpha, c = _c_alpha(u, log_inv_delta)
        return (epsilon - c) / alpha

    rho = _optimise(rho_at, maximise=True)
    if not math.isfinite(rho) or rho <= 0.0:
        return 0.0
    rho = _down(rho * (1.0 - 1e-12))
    # Verify against OpenDP (the reference used by rho_to_epsilon) and step down if its
    # optimiser/rounding lands above ε.
    step = 1e-12
    for _ in range(200):
        if rho <= 0.0:
            return 0.0
        if _rho_to_epsilon(rho, delta) <= epsilon:
            return rho
        rho = _down(rho * (1.0 - step))
        step = min(step * 4.0, 0.5)
    return 0.0  # pragma: no cover - unreachable: the loop shrinks ρ geometrically to ~0


def max_rho_for(epsilon: float, delta: float) -> float:
    """Largest ρ (rounded down) with ``rho_to_epsilon(ρ, δ) <= epsilon``.

    Guarantee: a ρ-zCDP mechanism with ρ = max_rho_for(ε, δ) is (ε, δ)-DP, as certified by
    ``rho_to_epsilon`` (OpenDP's map). The answer is within ~1e-9 (relative) of the true
    maximum. Computed by maximising (ε − c(α))/α over α in closed form per α (no
    bisection), then verified with OpenDP. Cached; an uncached call costs a few ms.

    ``epsilon`` must be finite and > 0; ``delta`` in (0, 1).
    """
    return _max_rho_for(_finite_pos("epsilon", epsilon), _delta(delta))


# ---------------------------------------------------------------------------
# budget splits
# ---------------------------------------------------------------------------


def _split(total: float, weights: Sequence[float], what: str) -> list[float]:
    total = _finite_nonneg(what, total)
    ws = [_finite_nonneg("weight", w) for w in weights]
    if not ws:
        raise ValueError("weights must not be empty")
    wsum = math.fsum(ws)
    if wsum <= 0.0:
        raise ValueError("at least one weight must be > 0")
    if not math.isfinite(wsum):
        raise ValueError("weights are too large")
    n = len(ws)
    # Shrink by a margin that covers the rounding of any left-to-right float summation of
    # n non-negative terms (relative error <= (n−1)·2^-53), whatever order the caller uses.
    shrink = 1.0 - (2 * n + 4) * 2.0**-53
    parts = [total * (w / wsum) * shrink if w > 0.0 else 0.0 for w in ws]
    # Belt and braces: check exactly (fsum) and the naive sums in given and sorted order.
    for _ in range(64):
        if (
            math.fsum(parts) <= total
            and sum(parts) <= total
            and sum(sorted(parts)) <= total
            and sum(sorted(parts, reverse=True)) <= total
        ):
            return parts
        parts = [max(0.0, _down(p, 1) * shrink) if p > 0.0 else 0.0 for p in parts]
    raise RuntimeError("could not split budget")  # pragma: no cover


def split_epsilon(total: float, weights: Sequence[float]) -> list[float]:
    """Split an ε budget in proportion to ``weights``.

    Guarantee (basic composition): the parts are >= 0, zero weights get exactly 0, and the
    parts sum to <= ``total`` — exactly (``math.fsum``) and under naive float summation in
    any order — so running one mechanism per part costs at most ``total``. Each part is
    within a relative ~n·1e-16 below its exact proportional share.
    """
    return _split(total, weights, "epsilon")


def split_rho(total: float, weights: Sequence[float]) -> list[float]:
    """Split a ρ (zCDP) budget in proportion to ``weights``; zCDP composes additively.

    Same guarantees as :func:`split_epsilon`.
    """
    return _split(total, weights, "rho")
