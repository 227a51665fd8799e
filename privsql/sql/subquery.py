"""Per-person sub-queries in FROM → one row per person, then ordinary DP aggregation.

``SELECT AVG(n) FROM (SELECT pid, COUNT(*) AS n FROM visits GROUP BY pid) t``
reads a sub-query that groups a private table by its privacy unit: each person
becomes exactly one row, so the outer query sees a virtual table with
``one_row_per_unit`` and the usual rewrite bounds it (clamping each person's
value to the column's interval).

The interval of each per-person column comes from the config, never the data:
COUNT → [0, R] and SUM(x) → [R·min(0, lower), R·max(0, upper)] with
R = max_rows · max_groups of the table (a person's rows counted, as elsewhere,
at most R); AVG/MIN/MAX(x) → x's interval. Write ``LEAST(n, 20)`` in the outer
query to choose another clamp.

Allowed inside: one private table, a WHERE, GROUP BY exactly the privacy unit,
and COUNT / SUM / AVG / MIN / MAX over allow-listed row expressions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from privsql.config import ColumnMeta, Config, TableMeta
from privsql.errors import PrivacyRefused, UnsupportedQuery
from privsql.sql.prepare import SqlTarget, clamp, prepare_row_expr
from privsql.sql.rowexpr import BOOL, NULL, NUM, RowExprChecker, snippet
from privsql.sql.validate import configured_table, normalize_name, output_name

_PER_PERSON_AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)


@dataclass(frozen=True)
class SubquerySource:
    """The virtual one-row-per-person table and the sub-query that produces it."""

    table: TableMeta
    select: exp.Select  # over the real table name; aliases are the virtual column names
    source: TableMeta
    arg_bounds: dict[str, tuple[float, float]]  # SUM/AVG column → the clamping interval of its argument

    def relation(self, table_ref: Callable[[TableMeta], exp.Table], target: SqlTarget) -> exp.Expression:
        """The sub-query for the backend: SUM/AVG arguments clamped to their declared interval and
        computed in the backend's safe numeric type, so no row can make an aggregate fail."""
        select = self.select.copy()
        for node in list(select.find_all(exp.Table)):
            node.replace(table_ref(self.source).as_(node.alias_or_name))
        for item in select.expressions:
            agg = prepare_row_expr(item.this, self.source, target)
            bounds = self.arg_bounds.get(item.alias)
            if bounds is not None and isinstance(agg, (exp.Sum, exp.Avg)):
                agg.set("this", exp.cast(clamp(agg.this, *bounds), target.safe_numeric))
            item.set("this", agg)
        where = select.args.get("where")
        if where is not None:
            where.set("this", prepare_row_expr(where.this, self.source, target))
        return select.subquery(self.table.name)


def _interval(node: exp.Expression, arg_bounds: tuple[float | None, float | None], reach: int
              ) -> tuple[str, float | None, float | None]:
    lo, hi = arg_bounds
    if isinstance(node, exp.Count):
        return "int", 0.0, float(reach)
    if lo is None or hi is None:
        return "float", None, None
    if isinstance(node, exp.Sum):
        return "float", reach * min(0.0, lo), reach * max(0.0, hi)
    return "float", lo, hi


def flatten_subquery(tree: exp.Select, config: Config) -> tuple[exp.Select, SubquerySource | None]:
    """A query over a per-person sub-query → the same query over a virtual table (or unchanged)."""
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None or not isinstance(from_.this, exp.Subquery) or tree.args.get("joins"):
        return tree, None
    sub = from_.this
    inner = sub.this
    if not isinstance(inner, exp.Select):
        raise UnsupportedQuery("only a SELECT ... GROUP BY <privacy unit> sub-query is supported in FROM")
    alias = normalize_name(sub.args["alias"].this) if sub.args.get("alias") is not None else "__sub"
    if sub.args.get("alias") is not None and sub.args["alias"].columns:
        raise UnsupportedQuery("a column list on a sub-query alias is not supported: alias the columns inside it")
    for key in ("joins", "with", "with_", "having", "order", "limit", "offset", "distinct", "qualify"):
        if inner.args.get(key):
            raise UnsupportedQuery(f"{key.upper().rstrip('_')} inside a sub-query in FROM is not supported")
    inner_from = inner.args.get("from") or inner.args.get("from_")
    if inner_from is None:
        raise PrivacyRefused("the sub-query must read a configured table")
    source, table_alias = configured_table(inner_from.this, config)
    if not source.is_private:
        raise UnsupportedQuery("sub-queries in FROM are supported over private tables only")
    names = {source.name} | ({table_alias} if table_alias else set())

    def resolve(col: exp.Column) -> ColumnMeta:
        if col.table and normalize_name(col.args["table"]) not in names:
            raise PrivacyRefused(f"unknown table {col.table} in the sub-query")
        meta = source.columns.get(normalize_name(col.this))
        if meta is None:
            raise PrivacyRefused(f"column \"{col.name}\" does not exist in table {source.name}")
        return meta

    group = inner.args.get("group")
    keys = group.expressions if group is not None else []
    if len(keys) != 1 or not isinstance(keys[0], exp.Column) or resolve(keys[0]).name != source.privacy_unit:
        raise PrivacyRefused(f"a sub-query in FROM must GROUP BY the privacy unit ({source.privacy_unit}) alone, "
                             "so that it has one row per person")
    where = inner.args.get("where")
    if where is not None:
        info = RowExprChecker(resolve, context="the sub-query's WHERE").check(where.this)
        if info.kind not in (BOOL, NULL) or where.find(exp.AggFunc):
            raise PrivacyRefused(f"the sub-query's WHERE needs a row condition, not {snippet(where.this)}")
    reach = source.max_rows * (1 if source.one_row_per_unit else source.max_groups)
    columns: dict[str, ColumnMeta] = {}
    arg_bounds: dict[str, tuple[float, float]] = {}
    projection: list[exp.Expression] = []
    unit_name = None
    for item in inner.expressions:
        expr = item.unalias() if isinstance(item, exp.Alias) else item
        name = normalize_name(item.args["alias"].this) if isinstance(item, exp.Alias) else output_name(item)
        if name in columns:
            raise PrivacyRefused(f"column name {name} appears twice in the sub-query: give each an alias")
        if isinstance(expr, exp.Column) and resolve(expr).name == source.privacy_unit:
            if unit_name is not None:
                raise PrivacyRefused("the sub-query selects the privacy unit twice")
            unit_name = name
            columns[name] = ColumnMeta(name, source.columns[source.privacy_unit].type)
        elif isinstance(expr, _PER_PERSON_AGGREGATES):
            arg = expr.this
            if isinstance(arg, exp.Column) and resolve(arg).name == source.privacy_unit:
                raise PrivacyRefused(f"{snippet(expr)} would be the privacy unit under another name")
            if isinstance(arg, exp.Distinct):
                raise UnsupportedQuery(f"DISTINCT inside {snippet(expr)} is not supported in a sub-query")
            if arg is None or isinstance(arg, exp.Star):
                bounds: tuple[float | None, float | None] = (None, None)
            else:
                info = RowExprChecker(resolve, context=snippet(expr)).check(arg)
                if info.kind not in (NUM, NULL) and not isinstance(expr, exp.Count):
                    raise PrivacyRefused(f"{snippet(expr)} needs a numeric argument")
                bounds = (info.lower, info.upper)
                if isinstance(expr, (exp.Sum, exp.Avg)):
                    if not info.bounded:
                        raise PrivacyRefused(f"{snippet(expr)} in the sub-query cannot be bounded: declare lower "
                                             "and upper for its column(s) in the config")
                    arg_bounds[name] = (info.lower, info.upper)  # type: ignore[assignment]
            if expr.expressions:
                raise PrivacyRefused(f"{snippet(expr)}: per-person aggregates take one argument")
            kind, lo, hi = _interval(expr, bounds, reach)
            columns[name] = ColumnMeta(name, kind, lo, hi) if lo is not None else ColumnMeta(name, kind)
        else:
            raise PrivacyRefused(f"the sub-query may select the privacy unit and per-person aggregates "
                                 f"(COUNT, SUM, AVG, MIN, MAX) only, not {snippet(expr)}")
        projection.append(expr.copy().as_(name))
    if unit_name is None:
        raise PrivacyRefused(f"the sub-query must select the privacy unit ({source.privacy_unit})")
    table = TableMeta(name=alias, source=None, privacy_unit=unit_name, max_groups=1, max_rows=1,
                      columns=columns, one_row_per_unit=True)
    select = exp.select(*projection).from_(inner_from.this.copy())
    if where is not None:
        select = select.where(where.this.copy())
    select = select.group_by(keys[0].copy())
    out = tree.copy()
    out.set("from_" if "from_" in out.args else "from", exp.From(this=exp.table_(alias)))
    return out, SubquerySource(table=table, select=select, source=source, arg_bounds=arg_bounds)
