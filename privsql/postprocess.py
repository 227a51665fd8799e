"""Noisy measures → the analyst's result: SELECT list, HAVING, ORDER BY, LIMIT.

Everything here is post-processing of values that are already differentially
private, so it costs no privacy. It runs the analyst's own output expressions
(aggregates replaced by formulas over noisy measures) in an isolated, in-memory
DuckDB that holds nothing but the noisy table; external access is disabled
there too. The expressions were allow-listed by ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlglot import exp

from privsql.isolated_duckdb import duckdb_type_name, isolated_connection
from privsql.results import ColumnAccuracy, OutputColumn
from privsql.sql.plan import DPPlan, Measure, OutputAgg
from privsql.sql.prepare import parenthesize
from privsql.sql.validate import AGG_META, CheckedQuery, output_name, strip_qualifiers

_KEY_SQL_TYPES = {"int": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "date": "DATE",
                  "timestamp": "TIMESTAMP", "num": "DOUBLE"}

@dataclass
class NoisyTable:
    """Released groups: key values (as text or None) and noisy measures in real units."""

    keys: list[list[Any]]  # one list per key column
    measures: dict[str, np.ndarray]  # measure name → float64 values

    @property
    def size(self) -> int:
        return len(next(iter(self.measures.values()))) if self.measures else 0


def noisy_columns(plan: DPPlan) -> list[str]:
    """The columns of the noisy table: one per measure (two for an AVG pair), plus quantiles."""
    names: list[str] = []
    for m in plan.measures:
        if m.kind == "pair":
            names += [f"{m.name}_a", f"{m.name}_n"]
        elif m.kind != "hist":
            names.append(m.name)
    return names + [o.derived for o in plan.outputs if o.derived]


def empty_noisy_table(plan: DPPlan) -> NoisyTable:
    """A noisy table with no groups and every column the output query reads."""
    names = noisy_columns(plan)
    return NoisyTable(keys=[[] for _ in plan.keys], measures={n: np.zeros(0) for n in names})


def noisy_quantile(histograms: np.ndarray, m: Measure, p: float) -> np.ndarray:
    """The p-quantile of each group's noisy histogram (rows: groups, columns: bins, in rows).

    Post-processing only: negative noisy counts are set to 0, the cumulative
    count is walked to p · total and interpolated within the bin (integer bins
    give the bin's value). p = 0 and p = 1 (MIN, MAX) return the first and last
    bin whose cumulative count clears the noise's 95% level, so noise alone
    rarely sets them. NaN (→ NULL) where the histogram holds nothing.
    """
    assert m.clamp_lo is not None
    counts = np.clip(histograms, 0, None)
    total = counts.sum(axis=1)
    noise_level = m.ci95
    out = np.full(len(counts), np.nan)
    for g, (row, t) in enumerate(zip(counts, total)):
        if t <= noise_level:
            continue
        if p <= 0:
            i = int(np.argmax(np.cumsum(row) > noise_level))
            out[g] = m.clamp_lo + i * m.width
            continue
        if p >= 1:
            i = len(row) - 1 - int(np.argmax(np.cumsum(row[::-1]) > noise_level))
            out[g] = m.clamp_lo + (i if m.integer_bins else i + 1) * m.width
            continue
        cum = np.cumsum(row)
        target = p * t
        i = int(np.searchsorted(cum, target))
        i = min(i, len(row) - 1)
        if m.integer_bins:
            out[g] = m.clamp_lo + i
        else:
            before = cum[i - 1] if i > 0 else 0.0
            inside = (target - before) / row[i] if row[i] > 0 else 0.5
            out[g] = m.clamp_lo + (i + min(max(inside, 0.0), 1.0)) * m.width
    return out


def _double(value: float) -> exp.Expression:
    """A DOUBLE literal (a bare 1.5 would be DECIMAL in DuckDB)."""
    return exp.cast(exp.Literal.number(repr(float(value))), "DOUBLE")


def _agg_formula(out: OutputAgg, plan: DPPlan) -> exp.Expression:
    """The SQL formula of one aggregate over noisy measure columns."""
    if out.func == "quantile":
        value: exp.Expression = exp.column(out.derived)
        return exp.func("round", value) if out.integral else value
    first = plan.measure(out.measures[0])
    if first.kind == "pair":
        return _pair_formula(out, first)
    cols = [exp.column(n) for n in out.measures]
    if out.func in ("count", "count_expr", "count_units", "count_distinct"):
        return exp.cast(exp.func("greatest", exp.func("round", cols[0]), exp.Literal.number(0)), "BIGINT")
    if out.func == "sum":
        value = cols[0]
        if out.lower is not None and out.lower >= 0:
            value = exp.func("greatest", value, exp.Literal.number(0))
        elif out.upper is not None and out.upper <= 0:
            value = exp.func("least", value, exp.Literal.number(0))
        return exp.cast(exp.func("round", value), "BIGINT") if out.integral else value
    count = exp.func("greatest", cols[-1], _double(1))
    mean_c = exp.Div(this=cols[0], expression=count)
    if out.func in ("covar_pop", "covar_samp", "corr"):
        return _covariance_formula(out, cols)
    floor = count_floor(out, plan)
    assert floor is not None
    if out.func == "avg":  # center + noisy centred sum / noisy count, post-processed into [lower, upper]
        center = plan.measure(out.measures[0]).center
        mean = exp.Add(this=_double(center), expression=mean_c)
        clamped = exp.func("least", exp.func("greatest", mean, _double(out.lower)), _double(out.upper))
        return _when_counted(clamped, cols[-1], floor)
    return _when_counted(_variance_formula(out, cols, count, mean_c), cols[-1], floor)


def _covariance_formula(out: OutputAgg, cols: list[exp.Expression]) -> exp.Expression:
    """COVAR = Σxy/n − (Σx/n)(Σy/n) on centred values; CORR divides by both standard
    deviations and is post-processed into [−1, 1] (NULL when a variance is not positive)."""
    prod, sx, sy, n = cols[:4]
    count = exp.func("greatest", n, _double(1))
    mean_x, mean_y = exp.Div(this=sx, expression=count.copy()), exp.Div(this=sy, expression=count.copy())
    cov = exp.Sub(this=exp.Div(this=prod, expression=count.copy()), expression=exp.Mul(this=mean_x, expression=mean_y))
    if out.func == "covar_samp":
        return exp.Div(this=exp.Mul(this=cov, expression=count.copy()),
                       expression=exp.func("greatest", exp.Sub(this=count.copy(), expression=_double(1)), _double(1)))
    if out.func == "covar_pop":
        return cov
    var_x = exp.Sub(this=exp.Div(this=cols[4], expression=count.copy()), expression=exp.Mul(
        this=mean_x.copy(), expression=mean_x.copy()))
    var_y = exp.Sub(this=exp.Div(this=cols[5], expression=count.copy()), expression=exp.Mul(
        this=mean_y.copy(), expression=mean_y.copy()))
    denominator = exp.func("sqrt", exp.Mul(this=exp.func("greatest", var_x, _double(0)),
                                           expression=exp.func("greatest", var_y, _double(0))))
    corr = exp.Div(this=cov.copy(), expression=exp.func("nullif", denominator, _double(0)))
    return exp.func("least", exp.func("greatest", corr, _double(-1)), _double(1))


def _pair_formula(out: OutputAgg, m: Measure) -> exp.Expression:
    """COUNT(x) = N̂ = (Â + B̂)/(upper − lower); AVG(x) = lower + Σ̂(x − lower) / N̂, post-processed
    into [lower, upper]; NULL when N̂ is below its 95% noise level (see ``_when_counted``)."""
    count = exp.column(f"{m.name}_n")
    if out.func in ("count", "count_expr"):
        return exp.cast(exp.func("greatest", exp.func("round", count), exp.Literal.number(0)), "BIGINT")
    assert m.clamp_lo is not None and m.clamp_hi is not None
    mean = exp.Add(this=_double(m.clamp_lo), expression=exp.Div(this=exp.column(f"{m.name}_a"),
                                                                 expression=count.copy()))
    clamped = exp.func("least", exp.func("greatest", mean, _double(m.clamp_lo)), _double(m.clamp_hi))
    return _when_counted(clamped, count, pair_count_ci(m))


def _when_counted(value: exp.Expression, count: exp.Expression, count_ci: float) -> exp.Expression:
    """``value`` where the group's noisy count N̂ is positive and at least its 95% noise level, else
    NULL: a group that is empty or nearly so has no meaningful mean or variance (the estimate would
    be noise divided by noise). Post-processing of noisy values only."""
    floor = max(count_ci, 1e-9)
    return exp.Case(ifs=[exp.If(this=exp.GTE(this=count.copy(), expression=_double(floor)), true=value)])


def count_floor(out: OutputAgg, plan: DPPlan) -> float | None:
    """The noisy count below which an AVG/VAR/STDDEV cell is NULL (its 95% noise level), or None
    for other aggregates."""
    first = plan.measure(out.measures[0])
    if out.func == "avg" and first.kind == "pair":
        return pair_count_ci(first)
    if out.func == "avg" or out.func.startswith(("var", "stddev")):
        return plan.measure(out.measures[-1]).ci95
    return None


def _variance_formula(out: OutputAgg, cols: list[exp.Expression], count: exp.Expression,
                      mean_c: exp.Expression) -> exp.Expression:
    """VAR/STDDEV from noisy centred sums: E[y²] − E[y]², post-processed into [0, ((upper − lower)/2)²]."""
    assert out.lower is not None and out.upper is not None
    limit = ((out.upper - out.lower) / 2) ** 2
    second = exp.Div(this=cols[1], expression=count.copy())
    var_pop = exp.Sub(this=second, expression=exp.Mul(this=mean_c, expression=mean_c.copy()))
    if out.func in ("var_samp", "stddev_samp"):
        var_pop = exp.Div(this=exp.Mul(this=var_pop, expression=count.copy()),
                          expression=exp.func("greatest", exp.Sub(this=count.copy(), expression=_double(1)),
                                              _double(1)))
    variance = exp.func("least", exp.func("greatest", var_pop, _double(0)), _double(limit))
    return exp.func("sqrt", variance) if out.func.startswith("stddev") else variance


def _ci_formula(out: OutputAgg, plan: DPPlan, formula: exp.Expression) -> exp.Expression | None:
    """Per-cell 95% CI half-width: exact for counts and sums; for AVG, VAR and STDDEV a
    delta-method approximation from that group's own noisy count, at most the width of the
    value's valid range and NULL where the value is; None for quantiles and covariances."""
    measures = [plan.measure(n) for n in out.measures]
    if out.func in ("count", "count_expr", "count_units", "count_distinct", "sum"):
        return _pair_ci(out, measures[0], formula) if measures[0].kind == "pair" else _double(measures[0].ci95)
    limit = _value_range(out)
    if limit is None:
        return None
    if measures[0].kind == "pair":
        spread = _pair_ci(out, measures[0], formula)
    elif out.func.startswith(("var", "stddev")):
        spread = _variance_ci(out, measures, formula)
    else:
        spread = _constant_avg_ci(measures, formula)
    return exp.Case(ifs=[exp.If(this=exp.Not(this=exp.Is(this=formula.copy(), expression=exp.Null())),
                                true=exp.func("least", spread, _double(limit)))])


def _value_range(out: OutputAgg) -> float | None:
    """The width of the range an AVG/VAR/STDDEV cell is post-processed into (a CI wider than that
    says nothing more), or None for aggregates without a per-cell CI formula."""
    if out.lower is None or out.upper is None:
        return None
    half = (out.upper - out.lower) / 2
    if out.func == "avg":
        return out.upper - out.lower
    if out.func.startswith("var"):
        return half ** 2
    if out.func.startswith("stddev"):
        return half
    return None


def _constant_avg_ci(measures: list[Measure], formula: exp.Expression) -> exp.Expression:
    """AVG over a constant-width interval (CSUM and a count)."""
    s, n = measures
    # delta method: Var(S/N) ≈ (Var S + mean_c² Var N) / N², with CIs in place of σ (approximate)
    centred = exp.Sub(this=formula.copy(), expression=_double(s.center))
    spread = exp.Add(this=_double(s.ci95 ** 2),
                     expression=exp.Mul(this=exp.Mul(this=centred, expression=centred.copy()),
                                        expression=_double(n.ci95 ** 2)))
    return exp.Div(this=exp.func("sqrt", spread), expression=exp.func("greatest", exp.column(n.name), _double(1)))


def _variance_ci(out: OutputAgg, measures: list[Measure], formula: exp.Expression) -> exp.Expression:
    """Delta-method 95% half-width of VAR = Q/N − (S/N)² (approximate): the CIs of the noisy centred
    sum S, sum of squares Q and count N combined in quadrature; STDDEV via ``_sqrt_ci``."""
    s, q, n = measures
    count = exp.func("greatest", exp.column(n.name), _double(1))
    mean = exp.Div(this=exp.column(s.name), expression=count.copy())
    second = exp.Div(this=exp.column(q.name), expression=count.copy())
    d_q = exp.Div(this=_double(q.ci95), expression=count.copy())
    d_s = exp.Div(this=exp.Mul(this=_double(2 * s.ci95), expression=exp.func("abs", mean)), expression=count.copy())
    mean_squared = exp.Mul(this=_double(2), expression=exp.Mul(this=mean.copy(), expression=mean.copy()))
    d_n = exp.Div(this=exp.Mul(this=_double(n.ci95), expression=exp.func("abs", exp.Sub(
        this=second, expression=mean_squared))), expression=count.copy())
    spread = exp.func("sqrt", exp.Add(this=exp.Add(this=exp.Mul(this=d_q, expression=d_q.copy()),
                                                  expression=exp.Mul(this=d_s, expression=d_s.copy())),
                                      expression=exp.Mul(this=d_n, expression=d_n.copy())))
    if out.func.startswith("stddev"):
        return _sqrt_ci(formula, spread)
    return spread


def _sqrt_ci(sd: exp.Expression, var_ci: exp.Expression) -> exp.Expression:
    """STDDEV's half-width: the VAR interval [sd² − h, sd² + h] mapped through √ (monotone, so it covers
    whenever VAR's does), the wider side. The delta method h/(2·sd) covered 79–92% in small groups."""
    square = exp.Mul(this=sd.copy(), expression=sd.copy())
    up = exp.Sub(this=exp.func("sqrt", exp.Add(this=square, expression=var_ci.copy())), expression=sd.copy())
    down = exp.Sub(this=sd.copy(), expression=exp.func("sqrt", exp.func(
        "greatest", exp.Sub(this=square.copy(), expression=var_ci.copy()), _double(0))))
    return exp.func("greatest", up, down)


#: 95% two-sided quantile of the sum of two independent Laplace(b) variables, in units of b:
#: P(|Z1 + Z2| > t) = e^(−t/b)(1 + t/(2b)) = 0.05 at t ≈ 4.11 b
_TWO_LAPLACE_95 = 4.11


def pair_count_ci(m: Measure) -> float:
    """95% half-width of the count (Â + B̂)/(upper − lower) of an AVG pair."""
    assert m.clamp_lo is not None and m.clamp_hi is not None
    factor = _TWO_LAPLACE_95 if m.mechanism == "laplace" else 1.96 * 2 ** 0.5
    return factor * m.scale * m.unit / (m.clamp_hi - m.clamp_lo)


def _pair_ci(out: OutputAgg, m: Measure, formula: exp.Expression) -> exp.Expression:
    """CIs from an AVG pair (approximate): the count's noise is (Z_A + Z_B)/2^PAIR_BITS; the mean's
    error is exactly ((upper − mean)·Z_A − (mean − lower)·Z_B) / ((upper − lower)·N̂), bounded by the
    95% half-width of one coordinate times √((upper − mean)² + (mean − lower)²). N̂ is taken at its
    lower 95% bound (N̂ minus the count's half-width, at least 1): in a small group a noisy count that
    came out high (which is also when the cell is released rather than NULL) makes the plain
    delta-method CI too narrow (measured: 86% coverage in groups of 13 rows)."""
    assert m.clamp_lo is not None and m.clamp_hi is not None
    width = m.clamp_hi - m.clamp_lo
    if out.func in ("count", "count_expr"):
        return _double(pair_count_ci(m))
    half = m.ci95  # one coordinate's 95% half-width, in value units
    above = exp.Sub(this=_double(m.clamp_hi), expression=formula.copy())
    below = exp.Sub(this=formula.copy(), expression=_double(m.clamp_lo))
    spread = exp.func("sqrt", exp.Add(this=exp.Mul(this=above, expression=above.copy()),
                                      expression=exp.Mul(this=below, expression=below.copy())))
    count = exp.func("greatest", exp.Sub(this=exp.column(f"{m.name}_n"), expression=_double(pair_count_ci(m))),
                     _double(1))
    return exp.Div(this=exp.Mul(this=_double(half / width), expression=spread), expression=count)


def build_output_query(query: CheckedQuery, plan: DPPlan) -> tuple[str, list[int]]:
    """The post-processing SELECT over ``__noisy`` (DuckDB SQL) and, per visible column, the
    index of its hidden CI column (-1 when it has none)."""
    tree = query.select.copy()
    formulas = {i: _agg_formula(o, plan) for i, o in enumerate(plan.outputs)}
    key_sql = {k.expr.sql(): f"__k{i}" for i, k in enumerate(plan.keys)}

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.AggFunc):
            return formulas[node.meta[AGG_META]].copy()
        if isinstance(node, exp.Column) or (node.find(exp.Column) and not node.find(exp.AggFunc)):
            name = key_sql.get(strip_qualifiers(node).sql())
            if name is not None:
                return exp.column(name)
        return node

    items = []
    ci_items = []
    for item in tree.expressions:
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        name = item.alias if isinstance(item, exp.Alias) else output_name(item)
        new = inner.transform(replace)
        items.append(new.as_(name, quoted=True))
        if isinstance(inner, exp.AggFunc):
            ci_items.append(_ci_formula(plan.outputs[inner.meta[AGG_META]], plan, new))
        else:
            ci_items.append(None)
    hidden = []
    ci_index = []
    for ci in ci_items:
        if ci is None:
            ci_index.append(-1)
        else:
            ci_index.append(len(items) + len(hidden))
            hidden.append(ci.as_(f"__ci{len(hidden)}"))
    out = exp.select(*items, *hidden).from_("__noisy")
    having = tree.args.get("having")
    if having is not None:
        out = out.where(having.this.transform(replace))
    order = tree.args.get("order")
    if order is not None:
        out.set("order", order.transform(replace))
    elif plan.keys:
        out = out.order_by(*[exp.column(f"__k{i}") for i in range(len(plan.keys))])
    for key in ("limit", "offset"):
        if tree.args.get(key) is not None:
            out.set(key, tree.args[key].copy())
    return parenthesize(out).sql(dialect="duckdb"), ci_index


INLINE_ROWS = 256  # small noisy tables go inline as VALUES (registering arrays costs ~1 ms more)


def _text_literal(value: Any) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


def _inline_relation(table: NoisyTable) -> str | None:
    """The noisy table as a VALUES list, or None when it is too large or holds unusual text."""
    if table.size > INLINE_ROWS or any(v is not None and "\x00" in v for col in table.keys for v in col):
        return None
    names = [f"__kraw{i}" for i in range(len(table.keys))] + list(table.measures) or ["__empty"]
    rows = []
    for r in range(max(table.size, 1)):
        cells = [_text_literal(col[r]) if table.size else "NULL" for col in table.keys]
        cells += [(repr(float(values[r])) if np.isfinite(values[r]) else "NULL") if table.size else "0.0"
                  for values in table.measures.values()]
        rows.append("(" + ", ".join(cells or ["0.0"]) + ")")
    where = "" if table.size else " WHERE false"
    columns = ", ".join(f'"{n}"' for n in names)
    return f"(SELECT * FROM (VALUES {', '.join(rows)}) AS __v({columns}){where}) AS __noisy_raw"


def run_output_query(output_sql: str, ci_index: list[int], plan: DPPlan,
                     table: NoisyTable) -> tuple[list[OutputColumn], list[tuple], list[tuple]]:
    """Evaluate the post-processing query (DuckDB SQL over ``__noisy``); returns columns,
    rows and per-cell CI half-widths."""
    casts = ", ".join(f"CAST(__kraw{i} AS {_KEY_SQL_TYPES.get(k.type, 'VARCHAR')}) AS __k{i}"
                      for i, k in enumerate(plan.keys))
    measure_cols = ", ".join(f'CAST(CASE WHEN isnan("{m}") THEN NULL ELSE "{m}" END AS DOUBLE) AS "{m}"'
                             for m in table.measures) or "__empty"  # NaN (e.g. an empty quantile) → NULL
    inline = _inline_relation(table)
    source = inline if inline is not None else "__noisy_raw"
    inner = f"SELECT {casts + ', ' if casts else ''}{measure_cols} FROM {source}"
    sql = f"WITH __noisy AS ({inner}) {output_sql}"
    cur = isolated_connection().cursor()
    try:
        if inline is None:
            data: dict[str, np.ndarray] = {f"__kraw{i}": np.array(v, dtype=object) for i, v in enumerate(table.keys)}
            data.update({name: np.asarray(v, dtype=np.float64) for name, v in table.measures.items()})
            if not data:
                data["__empty"] = np.zeros(table.size, dtype=np.float64)
            cur.register("__noisy_raw", data)
        result = cur.execute(sql)
        desc = result.description
        rows = result.fetchall()
    finally:
        cur.close()
    visible = len(ci_index)
    columns = [OutputColumn(d[0], duckdb_type_name(d[1])) for d in desc[:visible]]
    cis = [tuple(r[j] if j >= 0 else None for j in ci_index) for r in rows]
    return columns, [tuple(r[:visible]) for r in rows], cis


def column_accuracy(columns: list[OutputColumn], ci_index: list[int], cis: list[tuple],
                    query: CheckedQuery, plan: DPPlan) -> tuple[ColumnAccuracy, ...]:
    """Per output column: mechanism, noise scale and a typical 95% CI half-width."""
    out = []
    items = query.select.expressions
    for pos, (col, item) in enumerate(zip(columns, items)):
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        if isinstance(inner, exp.AggFunc):
            agg = plan.outputs[inner.meta[AGG_META]]
            m = plan.measure(agg.measures[0])
            values = [c[pos] for c in cis if c[pos] is not None]
            ci = float(np.median(values)) if values else m.ci95
            if agg.func in ("count", "count_expr", "count_units", "count_distinct", "sum", "avg") \
                    or agg.func.startswith(("var", "stddev")):
                out.append(ColumnAccuracy(col.name, m.mechanism, m.scale * m.unit, ci,
                                          approximate=agg.func not in ("count", "count_expr", "count_units", "sum")))
            else:
                out.append(ColumnAccuracy(col.name, "post-processing"))
        elif inner.find(exp.AggFunc):
            out.append(ColumnAccuracy(col.name, "post-processing"))
        else:
            out.append(ColumnAccuracy(col.name, "none", 0.0, 0.0))
    return tuple(out)


def empty_group_notes(columns: list[OutputColumn], rows: list[tuple], query: CheckedQuery,
                      plan: DPPlan) -> tuple[str, ...]:
    """Why AVG/VAR/STDDEV cells are NULL: one line per such column that has any (they are NULL where
    the group's noisy count is below its 95% noise level; see ``_when_counted``)."""
    notes = []
    for pos, (col, item) in enumerate(zip(columns, query.select.expressions)):
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        if not isinstance(inner, exp.AggFunc):
            continue
        floor = count_floor(plan.outputs[inner.meta[AGG_META]], plan)
        empty = sum(1 for r in rows if r[pos] is None)
        if floor is not None and empty:
            notes.append(f"{col.name}: NULL in {empty} of {len(rows)} group{'s' if len(rows) != 1 else ''}: "
                         f"the group's noisy count is below its 95% noise level ({floor:.3g} rows), too few "
                         "rows to estimate it")
    return tuple(notes)
