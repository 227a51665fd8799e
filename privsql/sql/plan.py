"""The DP plan: which noisy measures a query needs, their sensitivity, ε split and noise scale.

A *measure* is one exact, clamped partial aggregate per group computed by the
backend (a row count, a count of non-NULL values, a clamped sum, a centred
clamped sum, a count of people). Every output aggregate is post-processed from
noisy measures, so the privacy cost is that of the measures alone.

Sensitivity (user-level, add/remove one person): a person touches at most
``g`` groups (``max_groups``, or fewer when the key domain is smaller) and in
each contributes a value in the measure's per-person interval ``[lo, hi]``
(enforced in SQL by the rewrite), so the L1 sensitivity over the whole result
is ``g · max(|lo|, |hi|)``. Sums are released on a fixed-point grid of
``unit``, so sensitivities and noise scales are stated in grid units.

The plan is a plain frozen object; EXPLAIN prints it without touching data or budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any, Protocol

from sqlglot import exp

from privsql.accounting.dp_math import pure_to_rho, split_epsilon, split_rho
from privsql.config import Defaults, TableMeta
from privsql.errors import InvalidParameter, PrivacyRefused, UnsupportedQuery
from privsql.mechanisms import (
    gaussian_ci_halfwidth,
    gaussian_scale,
    gaussian_threshold,
    laplace_ci_halfwidth,
    laplace_scale,
    laplace_threshold,
)
from privsql.sql.domains import column_domain, expression_domain, integer_range
from privsql.sql.prepare import clamp, number_literal
from privsql.sql.validate import CheckedQuery

GRID_BITS = 30  # per-person sum contributions are rounded to 2^-30 of their bound
PAIR_BITS = 24  # AVG pairs: one row's (x − lower) is 2^-24 of (upper − lower) per grid unit
HIST_BITS = 20  # per-person histogram counts (scaled to max_rows) are floored to 2^-20 of a row
MAX_BINS = 128  # quantile histograms: at most this many bins over [lower, upper]
MAX_DOMAIN_CELLS = 100_000
MAX_NOISY_CELLS = 2_000_000  # groups × noisy values per group: ~6 µs of OpenDP sampling each


@dataclass(frozen=True)
class Measure:
    """One noisy partial aggregate per group.

    kind: 'rows' | 'nonnull' | 'sum' | 'csum' (sum of value − center) | 'csq' (sum of
    (value − center)²) | 'units' | 'hist' (row counts per bin of the clamped value, for quantiles)
    | 'distinct' (COUNT(DISTINCT x) over at most max_rows values kept per person and group)
    | 'pair' (for AVG: A = Σ(x − lower) and B = Σ(upper − x), released together; each row adds
    upper − lower to A + B, so the pair has joint L1 sensitivity max_rows·(upper − lower) per group
    and both get the same noise; count = (A + B)/(upper − lower)).
    ``person_lo``/``person_hi`` bound one person's contribution to one group
    (enforced in SQL); ``unit`` is the fixed-point grid (1 for counts).
    """

    name: str
    kind: str
    arg: exp.Expression | None
    clamp_lo: float | None  # per-row clamp of the argument
    clamp_hi: float | None
    center: float
    person_lo: float
    person_hi: float
    unit: float
    sensitivity: float  # in grid units over all groups: L1 (Laplace) or L2 (Gaussian)
    epsilon: float  # this measure's share: ε (Laplace) or ρ (Gaussian)
    scale: float  # Laplace b or Gaussian σ in grid units (0: no noise needed, the value is data-independent)
    mechanism: str = "laplace"
    bins: int = 1  # 'hist': number of bins over [clamp_lo, clamp_hi]; the measure has one value per bin
    integer_bins: bool = False  # 'hist' over an integer expression: bin i holds the value clamp_lo + i

    @property
    def columns(self) -> list[str]:
        """The backend result columns of this measure: one, or one per histogram bin."""
        if self.kind == "hist":
            return [f"{self.name}_{b}" for b in range(self.bins)]
        if self.kind == "pair":
            return [f"{self.name}_a", f"{self.name}_c"]  # Σ(x − lower) in grid units, the row count
        return [self.name]

    @property
    def width(self) -> float:
        """Width of one histogram bin."""
        assert self.clamp_lo is not None and self.clamp_hi is not None
        if self.integer_bins:
            return 1.0
        return (self.clamp_hi - self.clamp_lo) / self.bins

    @property
    def ci95(self) -> float:
        """95% CI half-width in real units."""
        if self.scale <= 0:
            return 0.0
        half = gaussian_ci_halfwidth(self.scale) if self.mechanism == "gaussian" else laplace_ci_halfwidth(self.scale)
        return half * self.unit


@dataclass(frozen=True)
class OutputAgg:
    """How one aggregate call is computed from noisy measures."""

    func: str  # 'count', 'count_expr', 'sum', 'avg', 'var_*', 'stddev_*', 'quantile', 'count_units'
    measures: tuple[str, ...]  # names of the measures it reads
    integral: bool
    lower: float | None  # the clamping interval of the argument (avg post-processing)
    upper: float | None
    param: float | None = None  # quantile fraction
    derived: str | None = None  # quantiles: the post-processed column holding the estimate


@dataclass(frozen=True)
class KeyPlan:
    name: str  # column name in the backend result and the post-processing table
    expr: exp.Expression
    type: str  # config type of the key ('text', 'int', ...); 'float' for derived numeric keys
    domain: tuple[Any, ...] | None  # public domain, or None (released by threshold)


@dataclass(frozen=True)
class DPPlan:
    table: TableMeta
    where: exp.Expression | None
    keys: tuple[KeyPlan, ...]
    measures: tuple[Measure, ...]
    outputs: tuple[OutputAgg, ...]  # parallel to CheckedQuery.aggregates
    epsilon: float
    delta: float
    max_rows: int  # effective per-person rows per group
    max_groups: int  # effective per-person groups
    per_person: bool  # False: one row per person is guaranteed, aggregate rows directly
    bound_groups: bool  # True: the rewrite must keep at most max_groups groups per person
    threshold: float | None  # released groups need noisy people count >= threshold
    threshold_measure: str | None
    mechanism: str = "laplace"  # 'laplace' (ε-DP) or 'gaussian' (ρ-zCDP)
    rho: float = 0.0  # the zCDP charge when mechanism is 'gaussian'

    @property
    def public_domain(self) -> list[tuple[Any, ...]] | None:
        if any(k.domain is None for k in self.keys):
            return None
        return list(product(*(k.domain for k in self.keys)))  # type: ignore[arg-type]

    def measure(self, name: str) -> Measure:
        return next(m for m in self.measures if m.name == name)


def _effective_groups(table: TableMeta, keys: list[KeyPlan]) -> tuple[int, bool]:
    """(groups a person can touch, whether the rewrite must enforce that bound)."""
    if table.one_row_per_unit or not keys:
        return 1, False
    if all(k.domain is not None for k in keys):
        size = math.prod(len(k.domain) for k in keys)  # type: ignore[arg-type]
        if size <= table.max_groups:
            return size, False
    return table.max_groups, True


def _key_plans(query: CheckedQuery, derive: DomainDeriver) -> list[KeyPlan]:
    keys = []
    for k in query.keys:
        if k.column is not None:
            domain, ktype = column_domain(k.column), k.column.type
        else:
            ktype = "float" if k.info.kind == "num" else k.info.kind
            derived = derive(k.expr, query.table)
            if derived is None:
                derived = integer_range(k.info)  # e.g. EXTRACT(MONTH FROM day): 1..12, from the query alone
            domain, ktype = derived if derived is not None else (None, ktype)
        if domain is not None and query.where is not None:
            domain = _trimmed(domain, k.expr, query, derive)
        keys.append(KeyPlan(name=k.name, expr=k.expr, type=ktype, domain=domain))
    size = math.prod(len(k.domain) for k in keys if k.domain is not None) if keys else 1
    if all(k.domain is not None for k in keys) and size > MAX_DOMAIN_CELLS:
        raise PrivacyRefused(f"the declared key domains give {size:,} groups; at most {MAX_DOMAIN_CELLS:,} "
                             "can be released in one query")
    return keys


def _trimmed(domain: tuple[Any, ...], key: exp.Expression, query: CheckedQuery,
             derive: DomainDeriver) -> tuple[Any, ...]:
    """The key's public domain restricted to the values that pass the WHERE's own tests of that key
    (``age > 90``, ``dept IN (...)``). Reads no data: the values passing are computed on literal
    inputs (``domains.expression_domain``), so the released domain depends on the query and config
    only. Never adds a value; keeps the domain whole when the backend's values do not match it."""
    found = derive(key, query.table, where=query.where)
    if found is None:
        return domain
    passing = set(found[0])
    if not passing <= set(domain):
        return domain  # the values came back in another form than the domain holds: do not trim
    return tuple(v for v in domain if v in passing)


class DomainDeriver(Protocol):
    """(key expression, table) → (public domain, config type) or None; with ``where``, only the
    values passing the WHERE's tests of that key (None: nothing to trim). See
    ``domains.expression_domain``."""

    def __call__(self, expr: exp.Expression, table: TableMeta, *,
                 where: exp.Expression | None = None) -> tuple[tuple[Any, ...], str] | None: ...


def build_plan(query: CheckedQuery, *, epsilon: float, delta: float, defaults: Defaults,
               mechanism: str = "laplace", derive_domain: DomainDeriver = expression_domain) -> DPPlan:
    """Plan the noisy measures for a checked query at a total budget of (ε, δ).

    Guarantee (Laplace): releasing every measure with its scale, plus the
    threshold test, is (ε, δ)-DP at the user level given that the rewrite
    enforces each measure's per-person interval and the group bound.
    Gaussian: the measures are ρ-zCDP with ρ = ε²/2 (L2 sensitivity √g·bound),
    plus δ for the threshold test.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidParameter(f"epsilon must be a positive number, not {epsilon!r}")
    if epsilon > defaults.max_epsilon_per_query:
        raise InvalidParameter(f"epsilon {epsilon:g} exceeds the per-query maximum "
                               f"{defaults.max_epsilon_per_query:g}")
    if not (math.isfinite(delta) and 0 <= delta < 1):
        raise InvalidParameter(f"delta must be in [0, 1), not {delta!r}")
    table = query.table
    keys = _key_plans(query, derive_domain)
    groups, bound_groups = _effective_groups(table, keys)
    rows = 1 if table.one_row_per_unit else table.max_rows
    needs_threshold = any(k.domain is None for k in keys)
    if needs_threshold and delta <= 0:
        open_keys = ", ".join(k.name for k in keys if k.domain is None)
        raise PrivacyRefused(f"GROUP BY {open_keys} has no public list of values, so releasing its groups needs "
                             "δ > 0 (set delta for the query), or declare `values:` for the column in the config")

    specs: list[dict[str, Any]] = []
    by_key: dict[tuple, str] = {}

    def need(kind: str, arg: exp.Expression | None, lo: float | None = None, hi: float | None = None) -> str:
        ident = (kind, arg.sql() if arg is not None else None, lo, hi)
        if ident not in by_key:
            by_key[ident] = f"__m{len(specs)}"
            specs.append({"name": by_key[ident], "kind": kind, "arg": arg, "lo": lo, "hi": hi})
        return by_key[ident]

    averaged = {c.arg.sql(): (c.info.lower, c.info.upper) for c in query.aggregates
                if c.func == "avg" and c.arg is not None and c.info is not None and c.info.bounded
                and c.info.upper > c.info.lower}  # type: ignore[operator]
    # COUNT(*) equals COUNT(x) when x is a column declared (and enforced) NOT NULL: reuse its AVG pair
    not_null_average = next(((c.arg, *averaged[c.arg.sql()]) for c in query.aggregates
                             if c.func == "avg" and c.arg is not None and c.arg.sql() in averaged
                             and isinstance(c.arg, exp.Column) and table.columns.get(c.arg.name) is not None
                             and table.columns[c.arg.name].not_null), None)
    outputs = []
    for call in query.aggregates:
        info = call.info
        lo = info.lower if info else None
        hi = info.upper if info else None
        if call.func == "count" and not_null_average is not None:
            names: tuple[str, ...] = (need("pair", *not_null_average),)  # rows = non-NULL values here
        elif call.func == "count":
            names = (need("rows", None),)
        elif call.func == "count_units":
            names = (need("units", None),)
        elif call.func == "count_distinct":
            names = (need("distinct", call.arg),)
        elif call.func == "count_expr" and call.arg is not None and call.arg.sql() in averaged:
            names = (need("pair", call.arg, *averaged[call.arg.sql()]),)  # the AVG's noisy count, for free
        elif call.func == "count_expr":
            names = (need("nonnull", call.arg),)
        elif call.func == "sum":
            names = (need("sum", call.arg, lo, hi),)
        elif call.func == "avg" and lo is not None and hi is not None and hi > lo:
            names = (need("pair", call.arg, lo, hi),)
        elif call.func == "avg":  # a constant-width interval: the mean is known, only the count is noisy
            names = (need("csum", call.arg, lo, hi), need("nonnull", call.arg))
        elif call.func == "quantile":  # a constant argument (lo = hi) gets one bin of width 1 at lo
            names = (need("hist", call.arg, lo, hi if lo is None or hi is None or hi > lo else lo + 1),)
        elif call.func in ("covar_pop", "covar_samp", "corr"):
            names = _pair_measures(call, need)
        else:  # variance / standard deviation
            names = (need("csum", call.arg, lo, hi), need("csq", call.arg, lo, hi), need("nonnull", call.arg))
        derived = f"__q{len(outputs)}" if call.func == "quantile" else None
        outputs.append(OutputAgg(call.func, names, bool(info and info.integral), lo, hi, call.param, derived))
    threshold_measure = need("units", None) if needs_threshold else None

    gaussian = mechanism == "gaussian"
    rho = pure_to_rho(epsilon) if gaussian else 0.0
    # a pair carries two quantities (a sum and a count), so it gets a double share
    weights = [0.0 if _person_bound(s, rows)[2] == 0 else 2.0 if s["kind"] == "pair" else 1.0 for s in specs]
    split = split_rho if gaussian else split_epsilon
    shares = split(rho if gaussian else epsilon, weights) if any(weights) else [0.0] * len(specs)
    group_factor = math.sqrt(groups) if gaussian else groups  # L2 or L1 over a person's groups
    measures = []
    for spec, share in zip(specs, shares):
        _check_interval(spec)
        person_lo, person_hi, bound = _person_bound(spec, rows)
        bins, integer_bins = _bins(spec, query) if spec["kind"] == "hist" else (1, False)
        if spec["kind"] == "hist":
            unit = rows / 2**HIST_BITS if not table.one_row_per_unit else 1.0
        elif spec["kind"] == "pair":
            unit = (spec["hi"] - spec["lo"]) / 2**PAIR_BITS if spec["hi"] > spec["lo"] else 1.0
        elif spec["kind"] in ("rows", "nonnull", "units", "distinct") or bound == 0:
            unit = 1.0
        else:
            unit = bound / 2**GRID_BITS
        sens = group_factor * (bound / unit) if bound else 0.0
        center = (spec["lo"] + spec["hi"]) / 2 if spec["kind"] in ("csum", "csq") else 0.0
        if sens <= 0:
            scale = 0.0
        else:
            scale = gaussian_scale(sens, share) if gaussian else laplace_scale(sens, share)
        measures.append(Measure(spec["name"], spec["kind"], spec["arg"], spec["lo"], spec["hi"], center,
                                person_lo, person_hi, unit, sens, share, scale, mechanism, bins, integer_bins))
    if all(k.domain is not None for k in keys):
        cells = (math.prod(len(k.domain) for k in keys) if keys else 1) * sum(len(m.columns) for m in measures)  # type: ignore[arg-type]
        if cells > MAX_NOISY_CELLS:
            raise PrivacyRefused(f"this query would release {cells:,} noisy values (groups × aggregates × histogram "
                                 f"bins); at most {MAX_NOISY_CELLS:,} per query")
    threshold = None
    if threshold_measure is not None:
        m = next(x for x in measures if x.name == threshold_measure)
        threshold = (gaussian_threshold(groups, m.epsilon, delta) if gaussian
                     else laplace_threshold(groups, m.epsilon, delta))
    return DPPlan(table=table, where=query.where, keys=tuple(keys), measures=tuple(measures),
                  outputs=tuple(outputs), epsilon=epsilon, delta=delta if needs_threshold else 0.0,
                  max_rows=rows, max_groups=groups, per_person=not table.one_row_per_unit,
                  bound_groups=bound_groups, threshold=threshold, threshold_measure=threshold_measure,
                  mechanism=mechanism, rho=rho)


def _pair_measures(call: Any, need: Any) -> tuple[str, ...]:
    """COVAR/CORR from centred sums over the rows where both values are non-NULL:
    Σ(x − cx)(y − cy), Σ(x − cx), Σ(y − cy), the count, and for CORR Σ(x − cx)², Σ(y − cy)².
    The product is one bounded row expression: |(x − cx)(y − cy)| ≤ hx·hy."""
    (x, ix), (y, iy) = (call.arg, call.info), (call.arg2, call.info2)

    def only_with(value: exp.Expression, other: exp.Expression) -> exp.Expression:
        return exp.Case(ifs=[exp.If(this=exp.Is(this=other.copy(), expression=exp.Null()), true=exp.Null())],
                        default=value.copy())

    xs, ys = only_with(x, y), only_with(y, x)
    cx, cy = (ix.lower + ix.upper) / 2, (iy.lower + iy.upper) / 2
    hx, hy = (ix.upper - ix.lower) / 2, (iy.upper - iy.lower) / 2
    product = exp.Mul(this=exp.paren(exp.Sub(this=clamp(xs, ix.lower, ix.upper), expression=number_literal(cx))),
                      expression=exp.paren(exp.Sub(this=clamp(ys, iy.lower, iy.upper),
                                                   expression=number_literal(cy))))
    names = (need("sum", product, -hx * hy, hx * hy), need("csum", xs, ix.lower, ix.upper),
             need("csum", ys, iy.lower, iy.upper), need("nonnull", xs))
    if call.func == "corr":
        names += (need("csq", xs, ix.lower, ix.upper), need("csq", ys, iy.lower, iy.upper))
    return names


#: the smallest non-zero magnitude of a summed interval: sums are put on a grid of 2^-GRID_BITS of
#: it, and that unit (and what the rewrite divides by it) must stay a normal, non-zero double
MIN_INTERVAL_MAGNITUDE = 1e-290


def _check_interval(spec: dict[str, Any]) -> None:
    """Refuse, before any data is read, an interval too narrow to aggregate exactly: a histogram whose
    bins would be infinitely narrow (``MEDIAN(x * 1e-320)``), or a sum whose grid unit would vanish."""
    lo, hi = spec["lo"], spec["hi"]
    if lo is None or hi is None:
        return
    size = max(abs(lo), abs(hi))
    if spec["kind"] == "hist":
        narrow = hi > lo and not math.isfinite(MAX_BINS / (hi - lo))
    else:
        narrow = 0 < size < MIN_INTERVAL_MAGNITUDE
    if narrow:
        arg = spec["arg"].sql(dialect="postgres") if spec["arg"] is not None else "the argument"
        raise UnsupportedQuery(f"{arg} takes values too close to 0 to aggregate (within ±{size:.3g}); scale it up")


def _bins(spec: dict[str, Any], query: CheckedQuery) -> tuple[int, bool]:
    """Histogram bins for a quantile: one per integer when an integer range fits, else MAX_BINS."""
    lo, hi = spec["lo"], spec["hi"]
    integral = any(c.func == "quantile" and c.arg is not None and c.arg.sql() == spec["arg"].sql()
                   and c.info is not None and c.info.integral for c in query.aggregates)
    if integral and float(lo).is_integer() and float(hi).is_integer() and hi - lo + 1 <= MAX_BINS:
        return int(hi - lo) + 1, True
    return MAX_BINS, False


def _person_bound(spec: dict[str, Any], rows: int) -> tuple[float, float, float]:
    """One person's contribution interval to one group, and its largest magnitude.

    For a histogram ('hist') the interval bounds the L1 norm of a person's counts
    over all bins: at most max_rows rows (scaled down when they have more)."""
    kind = spec["kind"]
    if kind == "units":
        return 0.0, 1.0, 1.0
    if kind in ("rows", "nonnull", "hist", "distinct"):  # distinct: at most max_rows values kept per person
        return 0.0, float(rows), float(rows)
    lo, hi = spec["lo"], spec["hi"]
    if kind == "pair":  # (A, B) with A + B = rows' (upper − lower): joint L1 ≤ max_rows · (upper − lower)
        return 0.0, rows * (hi - lo), rows * (hi - lo)
    if kind == "csum":
        half = (hi - lo) / 2
        return -rows * half, rows * half, rows * half
    if kind == "csq":
        square = ((hi - lo) / 2) ** 2
        return 0.0, rows * square, rows * square
    plo, phi = min(0.0, rows * lo), max(0.0, rows * hi)
    return plo, phi, max(abs(plo), abs(phi))
