"""How an analyst's budget is spent and reported: pure ε-DP or zero-concentrated DP.

* ``pure`` (default): each query is ε-DP (Laplace noise) plus, for thresholded
  GROUP BY keys, a δ; ε and δ add up (basic composition).
* ``zcdp``: each query asking for ε is charged ρ = ε²/2 and answered with
  Gaussian noise calibrated to that ρ (an ε-DP query is ε²/2-zCDP, so the
  charge is never less than the query's worth). ρ adds up across queries, and
  the analyst's (ε, δ) budget is turned into a ρ limit once: half of δ is kept
  for the ρ → (ε, δ) conversion, half for the δ of thresholds. The ε reported as
  spent is the tight conversion of the total ρ (Canonne–Kamath–Steinke 2020),
  which grows like √k rather than k over k queries.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsql.accounting.dp_math import max_rho_for, rho_to_epsilon
from privsql.accounting.store import Limits, Spent
from privsql.config import AnalystConfig


@dataclass(frozen=True)
class Standing:
    """An analyst's budget as reported: spent and remaining, in (ε, δ)."""

    epsilon_spent: float
    delta_spent: float
    epsilon_remaining: float
    delta_remaining: float
    rho_spent: float = 0.0


def mechanism_for(analyst: AnalystConfig | None) -> str:
    return "gaussian" if analyst is not None and analyst.accounting == "zcdp" else "laplace"


def conversion_delta(analyst: AnalystConfig) -> float:
    """The δ reserved for converting a zCDP analyst's total ρ into (ε, δ)."""
    return analyst.delta / 2


def limits_for(analyst: AnalystConfig) -> Limits:
    """The store limits that keep ``analyst`` within their configured (ε, δ)."""
    if analyst.accounting == "zcdp":
        return Limits(delta=analyst.delta / 2, rho=max_rho_for(analyst.epsilon, conversion_delta(analyst)))
    return Limits(epsilon=analyst.epsilon, delta=analyst.delta)


def standing(analyst: AnalystConfig, spent: Spent) -> Standing:
    if analyst.accounting != "zcdp":
        return Standing(spent.epsilon, spent.delta, max(0.0, analyst.epsilon - spent.epsilon),
                        max(0.0, analyst.delta - spent.delta))
    if spent.rho <= 0:
        eps = 0.0
        delta = spent.delta
    else:
        eps = rho_to_epsilon(spent.rho, conversion_delta(analyst))
        delta = spent.delta + conversion_delta(analyst)
    return Standing(eps, delta, max(0.0, analyst.epsilon - eps), max(0.0, analyst.delta - delta), spent.rho)


__all__ = ["Standing", "mechanism_for", "limits_for", "standing", "conversion_delta"]
