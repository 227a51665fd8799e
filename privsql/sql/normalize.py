"""Canonical forms for aggregates that SQL spells several ways.

``agg(x) FILTER (WHERE c)`` becomes ``agg(CASE WHEN c THEN x END)``.

``MEDIAN(x)``, ``PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x)``,
``PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x)``, ``quantile_cont(x, p)``,
``quantile_disc(x, p)`` and ``quantile(x, p)`` all become ``QUANTILE(x, p)``
(DESC ordering flips p). Unaliased select items keep the output name
PostgreSQL would give them (``median``, ``percentile_cont``, ...).
"""

from __future__ import annotations

from sqlglot import exp

from privsql.errors import PrivacyRefused, UnsupportedQuery
from privsql.sql.rowexpr import literal_number

_QUANTILE_FUNCTIONS = {"quantile_cont", "quantile_disc", "quantile", "percentile_cont", "percentile_disc",
                       "approx_quantile"}


def _fraction(node: exp.Expression | None, where: str) -> float:
    p = literal_number(node) if node is not None else None
    if p is None or not 0 <= p <= 1:
        raise PrivacyRefused(f"{where} needs a constant fraction between 0 and 1")
    return p


def _quantile(arg: exp.Expression, p: float) -> exp.Quantile:
    return exp.Quantile(this=arg, quantile=exp.Literal.number(repr(float(p))))


def _unfilter(node: exp.Filter) -> exp.Expression:
    """agg(x) FILTER (WHERE c) → agg(CASE WHEN c THEN x END); COUNT(*) counts the rows where c holds."""
    agg, condition = node.this, node.expression.this
    if not isinstance(agg, exp.AggFunc):
        raise UnsupportedQuery("FILTER applies to aggregates only")
    agg = agg.copy()
    arg = agg.this
    if isinstance(arg, exp.Distinct):
        raise UnsupportedQuery("FILTER with DISTINCT aggregates is not supported")
    value = exp.Literal.number(1) if arg is None or isinstance(arg, exp.Star) else arg.copy()
    agg.set("this", exp.Case(ifs=[exp.If(this=condition.copy(), true=value)]))
    return agg


def _canonical(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Filter):
        return _canonical(_unfilter(node))
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, (exp.PercentileCont, exp.PercentileDisc)):
        order = node.expression
        ordered = order.expressions if isinstance(order, exp.Order) else []
        if len(ordered) != 1:
            raise UnsupportedQuery("PERCENTILE ... WITHIN GROUP needs exactly one ORDER BY expression")
        p = _fraction(node.this.this, "PERCENTILE_CONT / PERCENTILE_DISC")
        return _quantile(ordered[0].this.copy(), 1 - p if ordered[0].args.get("desc") else p)
    if isinstance(node, exp.Median):
        return _quantile(node.this.copy(), 0.5)
    if isinstance(node, (exp.Quantile, exp.ApproxQuantile)) and not isinstance(node.args.get("quantile"), type(None)):
        return _quantile(node.this.copy(), _fraction(node.args["quantile"], "QUANTILE"))
    if isinstance(node, exp.Anonymous) and node.name.lower() in _QUANTILE_FUNCTIONS:
        if len(node.expressions) != 2:
            raise UnsupportedQuery(f"{node.name}(x, p) takes a value and a fraction")
        return _quantile(node.expressions[0].copy(), _fraction(node.expressions[1], node.name))
    return node


def canonical_aggregates(tree: exp.Expression) -> exp.Expression:
    """Rewrite quantile spellings to QUANTILE(x, p); returns a new tree."""
    if not isinstance(tree, exp.Select):
        return tree
    from privsql.sql.validate import output_name

    tree = tree.copy()
    items = []
    for item in tree.expressions:
        new = item.transform(_canonical)
        if new is not item and not isinstance(item, exp.Alias) and new.sql() != item.sql():
            new = new.as_(output_name(item))
        items.append(new)
    tree.set("expressions", items)
    for key in ("having", "order"):
        if tree.args.get(key) is not None:
            tree.set(key, tree.args[key].transform(_canonical))
    return tree
