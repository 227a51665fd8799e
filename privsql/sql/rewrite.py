"""DP plan → backend SQL: the bounded per-person query (after Wilson et al., PETS 2020).

Shape (per-person path, for tables where a person may have many rows):

    WITH __rows AS (            -- the analyst's WHERE, keys and aggregate arguments, once per row
      SELECT <unit> AS __pid, <key> AS __k0, <arg> AS __a0 FROM t WHERE <where> [AND __k0 IN <domain>]),
    __per_person AS (           -- one row per (person, group): raw counts and row-clamped sums
      SELECT __pid, __k0, COUNT(*) AS __m0_n, SUM(clamp(__a0)) AS __m1_s, COUNT(__a0) AS __m1_n
      FROM __rows GROUP BY __pid, __k0),
    __contributions AS (        -- each measure bounded per person and put on its fixed-point grid
      SELECT __pid, __k0, LEAST(__m0_n, :max_rows) AS __m0, fixed(clamp(scaled(__m1_s))) AS __m1 FROM __per_person),
    __bounded AS (              -- at most max_groups groups per person (only when it can bind)
      SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY __pid ORDER BY hash(__pid, __k0, :salt)) AS __rn
                     FROM __contributions) WHERE __rn <= :max_groups)
    SELECT __k0, SUM(__m0) AS __m0, SUM(__m1) AS __m1 FROM __bounded GROUP BY __k0

Tables with one row per person (a checked unique constraint) skip the per-person
step and clamp each row directly. Sums leave the database as exact integers on
the plan's fixed-point grid, so float rounding and summation order cannot leak.
The salt comes from the proxy's CSPRNG; the group bound holds whatever the
ordering, so privacy never depends on it.
"""

from __future__ import annotations

from decimal import Decimal

from sqlglot import exp

from privsql.sql.plan import DPPlan, Measure
from privsql.sql.prepare import SqlTarget, clamp, clamp_between, parenthesize, prepare_row_expr
from privsql.sql.prepare import number_literal as _num

#: measure kinds whose argument is added up (or binned) as a number
SUMMED_KINDS = ("sum", "csum", "csq", "pair", "hist")


#: pyspark cannot return a timestamp of 0001-01-01 to Python (its conversion passes through year 0):
#: timestamp keys fetched from Spark are kept a day inside the range (grouping is by the kept value,
#: so two keys merged here are merged before the per-person bound)
SPARK_TIMESTAMP_KEY_RANGE = ("0001-01-02 00:00:00", "9999-12-30 23:59:59.999999")


def _fetchable_key(key: exp.Expression, kind: str, target: SqlTarget) -> exp.Expression:
    """A key expression whose every value the backend's driver can hand to Python."""
    if kind != "timestamp" or target.dialect != "spark":
        return key
    lo, hi = (exp.cast(exp.Literal.string(v), "TIMESTAMP") for v in SPARK_TIMESTAMP_KEY_RANGE)
    return clamp_between(key, lo, hi)


def _literal(value: object) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, Decimal) and value.is_finite():
        return exp.Literal.number(str(value))  # exact: a NUMERIC key domain derived on PostgreSQL
    return exp.Literal.string(str(value))


def _fixed(e: exp.Expression, unit: float) -> exp.Expression:
    """Value → integer count of grid units (the value is already clamped, so this cannot overflow)."""
    if unit == 1.0:
        return exp.cast(exp.func("round", e), "BIGINT")
    return exp.cast(exp.func("round", _div(exp.paren(e), _num(unit))), "BIGINT")


def _div(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    """``a / b`` as written: marked typed, so sqlglot never converts an operand to float8 on PostgreSQL
    (a NUMERIC below 1e-308 or above 1.8e308 would raise there)."""
    return exp.Div(this=a, expression=b, typed=True)


def _row_value(m: Measure, a: exp.Expression) -> exp.Expression:
    """The clamped per-row value a sum-like measure adds up."""
    assert m.clamp_lo is not None and m.clamp_hi is not None
    value = clamp(a, m.clamp_lo, m.clamp_hi)
    if m.kind in ("csum", "csq"):
        value = exp.Sub(this=value, expression=_num(m.center))
    if m.kind == "pair":
        value = exp.Sub(this=value, expression=_num(m.clamp_lo))
    if m.kind == "csq":
        value = exp.Pow(this=exp.paren(value), expression=exp.Literal.number(2))
    return value


def bin_index(m: Measure, a: exp.Expression) -> exp.Expression:
    """The histogram bin (0 .. bins − 1) of the clamped value; NULL stays NULL."""
    assert m.clamp_lo is not None and m.clamp_hi is not None
    offset = exp.Sub(this=clamp(a, m.clamp_lo, m.clamp_hi), expression=_num(m.clamp_lo))
    if m.integer_bins:
        return exp.cast(exp.func("round", offset), "BIGINT")
    scaled = exp.Mul(this=exp.paren(offset), expression=_num(m.bins / (m.clamp_hi - m.clamp_lo)))
    return exp.func("least", exp.cast(exp.func("floor", scaled), "BIGINT"), _num(m.bins - 1))


def _bin_counts(m: Measure, bin_col: exp.Expression, suffix: str) -> list[exp.Expression]:
    return [exp.Count(this=exp.Case(ifs=[exp.If(this=exp.EQ(this=bin_col.copy(), expression=_num(b)),
                                                true=exp.Literal.number(1))])).as_(f"{m.name}_{suffix}{b}")
            for b in range(m.bins)]


def _per_person_parts(m: Measure, arg: str | None) -> list[exp.Expression]:
    """Raw per-(person, group) aggregates a measure needs, named after the measure."""
    if m.kind == "rows":
        return [exp.Count(this=exp.Star()).as_(f"{m.name}_n")]
    if m.kind in ("units", "distinct"):
        return []
    if m.kind == "hist":
        bin_col = exp.column(f"{m.name}_bin")
        return [*_bin_counts(m, bin_col, "h"), exp.Count(this=bin_col.copy()).as_(f"{m.name}_n")]
    a = exp.column(arg) if arg else None
    if m.kind == "nonnull":
        return [exp.Count(this=a).as_(f"{m.name}_n")]
    assert a is not None
    return [exp.Sum(this=_row_value(m, a)).as_(f"{m.name}_s"), exp.Count(this=a.copy()).as_(f"{m.name}_n")]


def _person_contribution(m: Measure, max_rows: int) -> list[exp.Expression]:
    """One person's bounded contribution to one group, on the measure's grid (aliased columns).

    Counts are capped at max_rows. Sums of a person with n > max_rows values are
    scaled by max_rows / n (their mean times max_rows), then clamped to the
    measure's per-person interval; histogram counts are scaled the same way and
    floored, so their total stays within max_rows. The bound holds whatever the
    data holds."""
    rows = _num(max_rows)
    if m.kind == "distinct":
        return []  # counted from the distinct values a person keeps (see _distinct_counts)
    if m.kind == "units":
        return [exp.Literal.number(1).as_(m.name)]
    n = exp.column(f"{m.name}_n")
    if m.kind in ("rows", "nonnull"):
        return [exp.func("least", n, rows).as_(m.name)]
    if m.kind == "hist":  # floor(h · 2^HIST_BITS / max(n, max_rows)) in exact integer arithmetic
        scale = _num(round(max_rows / m.unit))
        return [exp.IntDiv(this=exp.Mul(this=exp.column(f"{m.name}_h{b}"), expression=scale),
                           expression=exp.func("greatest", n.copy(), rows.copy())).as_(f"{m.name}_{b}")
                for b in range(m.bins)]
    total = exp.column(f"{m.name}_s")
    scaled = exp.Case(ifs=[exp.If(this=exp.GT(this=n, expression=rows),
                                  true=_div(exp.Mul(this=total.copy(), expression=rows), n.copy()))],
                      default=total)
    value = exp.func("coalesce", scaled, exp.Literal.number(0))  # finite and non-NULL from here on
    if m.kind == "pair":  # A ∈ [0, min(n, max_rows)·(upper − lower)], so B = count·(upper − lower) − A ≥ 0
        count = exp.func("least", n.copy(), rows.copy())
        top = exp.Mul(this=count.copy(), expression=_num(m.clamp_hi - m.clamp_lo))  # type: ignore[operator]
        bounded = exp.func("least", exp.func("greatest", value, _num(0)), top)
        return [_fixed(bounded, m.unit).as_(f"{m.name}_a"), count.as_(f"{m.name}_c")]
    bounded = exp.func("least", exp.func("greatest", value, _num(m.person_lo)), _num(m.person_hi))
    return [_fixed(bounded, m.unit).as_(m.name)]


def _per_row_measure(m: Measure, arg: exp.Expression | None) -> list[exp.Expression]:
    """Aggregates of one measure when each person has one row (aliased columns)."""
    if m.kind in ("rows", "units"):
        return [exp.Count(this=exp.Star()).as_(m.name)]
    if m.kind == "hist":
        return _bin_counts(m, exp.column(f"{m.name}_bin"), "")
    assert arg is not None
    if m.kind == "nonnull":
        return [exp.Count(this=arg).as_(m.name)]
    if m.kind == "distinct":  # one row per person: a person adds at most one value to a group
        return [exp.Count(this=exp.Distinct(expressions=[arg])).as_(m.name)]
    if m.kind == "pair":
        return [exp.Sum(this=_fixed(_row_value(m, arg), m.unit)).as_(f"{m.name}_a"),
                exp.Count(this=arg.copy()).as_(f"{m.name}_c")]
    return [exp.Sum(this=_fixed(_row_value(m, arg), m.unit)).as_(m.name)]


def _distinct_counts(m: Measure, arg: str, knames: list[str], kept: str | None, max_rows: int,
                     target: SqlTarget, salt: int, int_unit: bool) -> exp.Select:
    """COUNT(DISTINCT x) per group over at most max_rows distinct values per person and group
    (chosen by a salted hash of the person and value), in the groups the person keeps (``kept``:
    the bounded groups, or None when every group is kept). Removing a person removes at most
    max_rows values from each of their groups."""
    keys = [exp.column(k) for k in knames]
    values = exp.select("__pid", *knames, exp.column(arg).as_("__v")).distinct(copy=False)
    values = values.from_("__rows", copy=False).where(
        exp.Not(this=exp.Is(this=exp.column(arg), expression=exp.Null())), copy=False)
    order = [exp.Ordered(this=target.order_hash([exp.column("__pid"), exp.column("__v")], salt, int_unit=int_unit)),
             exp.Ordered(this=exp.column("__v"))]
    ranked = exp.select("*", exp.Window(this=exp.RowNumber(), partition_by=[exp.column("__pid"), *keys],
                                        order=exp.Order(expressions=order)).as_("__rn")).from_(
        values.subquery("__values", copy=False), copy=False)
    limited = exp.select("*").from_(ranked.subquery("__ranked", copy=False), copy=False).where(
        exp.LTE(this=exp.column("__rn"), expression=_num(max_rows)), copy=False)
    counted = exp.select(*[k.copy() for k in keys], exp.Count(this=exp.Distinct(
        expressions=[exp.column("__v", table="__d")])).as_(m.name))
    counted = counted.from_(limited.subquery("__d", copy=False), copy=False)
    if kept is not None:
        on = [exp.EQ(this=exp.column("__pid", table="__d"), expression=exp.column("__pid", table="__g"))]
        on += [exp.NullSafeEQ(this=exp.column(k, table="__d"), expression=exp.column(k, table="__g")) for k in knames]
        kept_groups = exp.select("__pid", *knames).from_(kept, copy=False).subquery("__g", copy=False)
        counted = counted.join(kept_groups, on=exp.and_(*on), copy=False)
    counted.set("expressions", [exp.column(k, table="__d").as_(k) for k in knames] + counted.expressions[len(knames):])
    return counted.group_by(*[exp.column(k, table="__d") for k in knames], copy=False) if knames else counted


def _domain_filter(plan: DPPlan, key_exprs: list[exp.Expression]) -> exp.Expression | None:
    """Rows whose keys lie in their public domains (FALSE for a domain the WHERE trimmed to nothing:
    ``IN ()`` is a syntax error on PostgreSQL and Spark)."""
    conds = [exp.In(this=exp.paren(e.copy()), expressions=[_literal(v) for v in k.domain]) if k.domain
             else exp.false() for k, e in zip(plan.keys, key_exprs) if k.domain is not None]
    if not conds:
        return None
    out = conds[0]
    for c in conds[1:]:
        out = exp.And(this=out, expression=c)
    return out


def _and(a: exp.Expression | None, b: exp.Expression | None) -> exp.Expression | None:
    if a is None:
        return b
    if b is None:
        return a
    return exp.And(this=exp.paren(a), expression=exp.paren(b))


def rewrite(plan: DPPlan, target: SqlTarget, *, table_ref: exp.Expression, salt: int) -> exp.Select:
    """The backend query computing every measure of ``plan`` per group, exactly and bounded."""
    table = plan.table
    key_exprs = [_fetchable_key(prepare_row_expr(k.expr, table, target), k.type, target) for k in plan.keys]
    where = prepare_row_expr(plan.where, table, target) if plan.where is not None else None
    # Keys outside a public domain are never released (release() drops them). Filtering them in SQL
    # is only needed when it changes what is computed: before the group bound (so out-of-domain groups
    # do not use a person's max_groups slots), when other keys are thresholded, and when the WHERE
    # trimmed a domain to nothing (then no row is read at all).
    if plan.bound_groups or not plan.public_domain:
        where = _and(where, _domain_filter(plan, key_exprs))
    knames = [f"__k{i}" for i in range(len(plan.keys))]
    unit_meta = table.columns.get(table.privacy_unit) if table.privacy_unit else None
    int_unit = unit_meta is not None and unit_meta.type == "int"

    arg_names: dict[str, str] = {}
    row_columns: list[exp.Expression] = []
    # values that are summed, squared or binned are computed in the safe type (PostgreSQL raises on
    # float8 products and quotients that underflow or overflow; DOUBLE elsewhere saturates)
    summed = {m.arg.sql() for m in plan.measures if m.arg is not None and m.kind in SUMMED_KINDS}
    for m in plan.measures:
        if m.arg is not None and m.arg.sql() not in arg_names:
            arg_names[m.arg.sql()] = f"__a{len(arg_names)}"
            value = prepare_row_expr(m.arg, table, target)
            if m.arg.sql() in summed and target.safe_numeric.upper() != "DOUBLE":
                value = exp.cast(value, target.safe_numeric)
            row_columns.append(value.as_(arg_names[m.arg.sql()]))
        if m.kind == "hist":
            assert m.arg is not None
            row_columns.append(bin_index(m, exp.column(arg_names[m.arg.sql()])).as_(f"{m.name}_bin"))
    unit = [exp.column(table.privacy_unit).as_("__pid")] if plan.per_person else []
    if plan.per_person:  # rows that belong to no person (NULL unit, e.g. from a LEFT JOIN) are not counted
        where = _and(exp.Not(this=exp.Is(this=exp.column(table.privacy_unit), expression=exp.Null())), where)
    # one row per input row: the unit, keys, aggregate arguments, histogram bins (arguments are
    # computed first so a bin can refer to its argument)
    projection = [*unit, *[e.as_(n) for e, n in zip(key_exprs, knames)],
                  *[c for c in row_columns if not c.alias.endswith("_bin")]]
    inner = exp.select(*(projection or [exp.Literal.number(1).as_("__row")])).from_(table_ref.copy(), copy=False)
    if where is not None:
        inner = inner.where(where, copy=False)
    bins = [c for c in row_columns if c.alias.endswith("_bin")]
    rows = exp.select("*", *bins).from_(inner.subquery("__input", copy=False), copy=False) if bins else inner

    if not plan.per_person:
        sel = exp.select(*knames, *[c for m in plan.measures for c in _per_row_measure(
            m, exp.column(arg_names[m.arg.sql()]) if m.arg is not None else None)])
        sel = sel.from_(rows.subquery("__rows", copy=False), copy=False)
        return parenthesize(sel.group_by(*knames, copy=False) if knames else sel)

    per_person = exp.select(
        "__pid", *knames,
        *[part for m in plan.measures
          for part in _per_person_parts(m, arg_names.get(m.arg.sql()) if m.arg is not None else None)],
    ).from_("__rows", copy=False).group_by("__pid", *knames, copy=False)
    contributions = exp.select(
        "__pid", *knames, *[c for m in plan.measures for c in _person_contribution(m, plan.max_rows)],
    ).from_("__per_person", copy=False)

    ctes: list[tuple[str, exp.Expression]] = [("__rows", rows), ("__per_person", per_person),
                                               ("__contributions", contributions)]
    source = "__contributions"
    if plan.bound_groups:
        order = target.order_hash([exp.column("__pid"), *[exp.column(k) for k in knames]], salt, int_unit=int_unit)
        # keys break hash ties, so the choice depends on nothing but this person's own groups
        ordering = [exp.Ordered(this=order), *[exp.Ordered(this=exp.column(k)) for k in knames]]
        numbered = exp.select("*", exp.Window(this=exp.RowNumber(), partition_by=[exp.column("__pid")],
                                              order=exp.Order(expressions=ordering)).as_("__rn"))
        numbered = numbered.from_("__contributions", copy=False)
        bounded = exp.select("*").from_(numbered.subquery("__numbered", copy=False), copy=False).where(
            exp.LTE(this=exp.column("__rn"), expression=_num(plan.max_groups)), copy=False)
        ctes.append(("__bounded", bounded))
        source = "__bounded"
    summed = [m for m in plan.measures if m.kind != "distinct"]
    sums = [exp.Sum(this=exp.column(c)).as_(c) for m in summed for c in m.columns]
    query = exp.select(*knames, *(sums or ([] if knames else [exp.Count(this=exp.Star()).as_("__one")])))
    query = query.from_(source, copy=False)
    if knames:
        query = query.group_by(*knames, copy=False)
    if any(m.kind == "distinct" for m in plan.measures):
        # COUNT(DISTINCT) is not a sum of per-person parts: counted apart, joined on the group keys
        # (NULL-safe); the main aggregate holds every group that has a kept row
        main = query
        query = exp.select(*[exp.column(k, table="__main").as_(k) for k in knames])
        query = query.from_(main.subquery("__main", copy=False), copy=False)
        columns = []
        for i, m in enumerate(plan.measures):
            if m.kind != "distinct":
                columns += [exp.column(c, table="__main").as_(c) for c in m.columns]
                continue
            name = f"__dc{i}"
            counts = _distinct_counts(m, arg_names[m.arg.sql()], knames,  # type: ignore[union-attr]
                                      source if plan.bound_groups else None, plan.max_rows, target, salt,
                                      int_unit)
            on = [exp.NullSafeEQ(this=exp.column(k, table="__main"), expression=exp.column(k, table=name))
                  for k in knames]
            query = query.join(counts.subquery(name, copy=False), on=exp.and_(*on) if on else exp.true(),
                               join_type="LEFT", copy=False)
            columns.append(exp.func("coalesce", exp.column(m.name, table=name), exp.Literal.number(0)).as_(m.name))
        query.set("expressions", query.expressions + columns)
    for name, cte in ctes:
        query = query.with_(name, as_=cte, copy=False)
    return parenthesize(query)
