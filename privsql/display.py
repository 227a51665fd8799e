"""Numbers for people: values rounded to what their 95% CI supports, no scientific notation for
ordinary magnitudes, thousands separators (``±2,996,000`` rather than ``±2.996e+06``).

Formatting only: it changes how released values are printed, never which values are released.
"""

from __future__ import annotations

import math
from typing import Any

#: significant digits kept of a CI half-width (the value is rounded to the same decimal place)
CI_DIGITS = 2
#: significant digits of a value printed without a CI
PLAIN_DIGITS = 6
#: magnitudes from here up (and non-zero ones below SMALL) are printed in scientific notation
LARGE = 1e15
SMALL = 1e-4


def _decimals(magnitude: float, digits: int) -> int:
    """Decimal places that show ``digits`` significant digits of ``magnitude`` (> 0); may be negative."""
    return digits - 1 - math.floor(math.log10(magnitude))


def _fixed(value: float, decimals: int, grouping: bool = True) -> str:
    """``value`` rounded to ``decimals`` places (negative: to tens, hundreds, ...), with separators."""
    if decimals < 0:
        value = round(value, decimals)
        decimals = 0
    text = f"{value:{',' if grouping else ''}.{decimals}f}"
    return "0" if text.lstrip("-").strip("0.,") == "" else text


def readable(value: float, digits: int = PLAIN_DIGITS, *, grouping: bool = True) -> str:
    """A number with ``digits`` significant digits, in fixed notation for ordinary magnitudes
    (``grouping``: with thousands separators)."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= LARGE or magnitude < SMALL:
        return f"{value:.{digits - 1}e}"
    text = _fixed(value, max(0, _decimals(magnitude, digits)), grouping)
    return text.rstrip("0").rstrip(".") if "." in text else text


def ci_decimals(ci: float) -> int:
    """Decimal places a value with this 95% half-width is worth printing (may be negative)."""
    return _decimals(ci, CI_DIGITS)


def rounded_ci(ci: float) -> str:
    """A CI half-width to ``CI_DIGITS`` significant digits: 2,996,000 → ``3,000,000``; 4.11 → ``4.1``."""
    if not math.isfinite(ci) or ci >= LARGE or 0 < ci < SMALL:
        return readable(ci, CI_DIGITS)
    if ci == 0:
        return "0"
    return _fixed(ci, ci_decimals(ci))


def with_ci(value: Any, ci: float | None) -> str:
    """A released value rounded to the precision its CI supports, and the CI: ``43,000 ±4,500``."""
    if value is None:
        return "NULL"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if ci is None or not math.isfinite(ci) or ci <= 0:  # a key (a year, a code) or an exact value: no separators
        return readable(float(value), grouping=False) if isinstance(value, float) else str(value)
    if abs(value) >= LARGE or ci >= LARGE or ci < SMALL:
        return f"{readable(float(value))} ±{rounded_ci(ci)}"
    places = ci_decimals(ci)
    if isinstance(value, int):
        places = min(places, 0)  # a whole number never gains decimals
    return f"{_fixed(float(value), places)} ±{rounded_ci(ci)}"
