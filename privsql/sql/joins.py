"""Joins → one virtual table, so the per-person bounding happens *after* the join.

``flatten_joins`` turns ``FROM visits v JOIN depts d ON v.dept = d.dept`` into a
query over a virtual table ``__joined`` whose columns are ``v__dept``,
``d__building``, ... (each with the metadata of its source column) and whose
privacy unit is the private table's unit. The rewrite then bounds each person's
rows and groups of the *joined* rows, so a join cannot multiply one person's
contribution past the bounds.

Allowed: private ⋈ public on any allow-listed condition; private ⋈ private only
when their privacy units are equated (``p.pid = v.pid`` or ``USING (pid)``), so
the joined rows still belong to one person. Inner and LEFT joins only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from privsql.config import ColumnMeta, Config, TableMeta
from privsql.errors import DatatypeMismatch, PrivacyRefused, UndefinedColumn, UndefinedTable, UnsupportedQuery
from privsql.sql.validate import configured_table, normalize_name
from privsql.sql.prepare import SqlTarget, prepare_row_expr
from privsql.sql.rowexpr import BOOL, NULL, RowExprChecker, snippet

JOINED = "__joined"


@dataclass(frozen=True)
class JoinSource:
    """The virtual table of a join and the SELECT that produces it (over real table names)."""

    table: TableMeta
    select: exp.Select
    sources: dict[str, TableMeta]  # alias → table
    scope: JoinScope

    def relation(self, table_ref: Callable[[TableMeta], exp.Table], target: SqlTarget) -> exp.Expression:
        return join_relation(self, table_ref, target)


def _source(node: exp.Expression, config: Config) -> tuple[str, TableMeta]:
    meta, alias = configured_table(node, config)
    return alias or meta.name, meta


class JoinScope:
    def __init__(self, sources: dict[str, TableMeta], using: set[str]) -> None:
        self.sources = sources
        self.using = using  # column names merged by USING: unqualified refs take the first table's

    def locate(self, col: exp.Column) -> tuple[str, ColumnMeta]:
        name = normalize_name(col.this)
        if col.table:
            alias = normalize_name(col.args["table"])
            meta = self.sources.get(alias)
            if meta is None:
                raise UndefinedTable(f"missing FROM-clause entry for table \"{col.table}\"")
            if name not in meta.columns:
                raise UndefinedColumn(f"column {alias}.{name} does not exist")
            return alias, meta.columns[name]
        owners = [a for a, m in self.sources.items() if name in m.columns]
        if not owners:
            raise UndefinedColumn(f"column \"{name}\" does not exist in the joined tables")
        if len(owners) > 1 and name not in self.using:
            raise PrivacyRefused(f"column reference \"{name}\" is ambiguous: qualify it ({', '.join(owners)})")
        return owners[0], self.sources[owners[0]].columns[name]

    def resolve(self, col: exp.Column) -> ColumnMeta:
        return self.locate(col)[1]


def _unit_pairs(condition: exp.Expression, scope: JoinScope) -> list[tuple[str, str]]:
    """Pairs of aliases whose privacy units the condition equates (through AND only)."""
    pairs = []
    conjuncts = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
    for c in conjuncts:
        if isinstance(c, exp.Paren):
            pairs += _unit_pairs(c.this, scope)
        elif isinstance(c, exp.EQ) and isinstance(c.left, exp.Column) and isinstance(c.right, exp.Column):
            (a, ca), (b, cb) = scope.locate(c.left), scope.locate(c.right)
            ta, tb = scope.sources[a], scope.sources[b]
            if ta.is_private and tb.is_private and ca.name == ta.privacy_unit and cb.name == tb.privacy_unit:
                pairs.append((a, b))
    return pairs


def _qualify(expr: exp.Expression, scope: JoinScope) -> exp.Expression:
    expr = expr.copy()
    for col in list(expr.find_all(exp.Column)):
        alias, meta = scope.locate(col)
        col.replace(exp.column(meta.name, table=alias))
    return expr


def flatten_joins(tree: exp.Select, config: Config) -> tuple[exp.Select, JoinSource | None]:
    """A query with JOINs → the same query over the virtual table ``__joined`` (or unchanged)."""
    joins = tree.args.get("joins") or []
    if not joins:
        return tree, None
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None:
        raise PrivacyRefused("a query must read a configured table (FROM ...)")
    sources: dict[str, TableMeta] = {}
    first_alias, first = _source(from_.this, config)
    sources[first_alias] = first
    using: set[str] = set()
    conditions: list[tuple[exp.Join, str, TableMeta, exp.Expression]] = []
    for join in joins:
        kind = (join.args.get("kind") or "").upper()
        side = (join.args.get("side") or "").upper()
        if kind not in ("", "INNER", "OUTER") or side not in ("", "LEFT") or join.args.get("method"):
            raise UnsupportedQuery(f"{' '.join(x for x in (join.args.get('method'), side, kind) if x)} JOIN is not "
                                   "supported; use JOIN or LEFT JOIN with ON / USING")
        alias, meta = _source(join.this, config)
        if meta.is_private and any(m is meta for m in sources.values()):
            raise PrivacyRefused(f"private table {meta.name} can appear only once in a query: a self-join, even on "
                                 "the privacy unit, multiplies each person's rows")
        if alias in sources:
            raise PrivacyRefused(f"table name \"{alias}\" specified more than once: give each table an alias")
        previous = dict(sources)
        sources[alias] = meta
        if join.args.get("using"):
            names = [normalize_name(i) for i in join.args["using"]]
            owner = {n: next((a for a, m in previous.items() if n in m.columns), None) for n in names}
            for n in names:
                if owner[n] is None or n not in meta.columns:
                    raise UndefinedColumn(f"column \"{n}\" named in USING is not in both tables")
            using.update(names)
            cond: exp.Expression = exp.and_(*[exp.EQ(this=exp.column(n, table=owner[n]),
                                                     expression=exp.column(n, table=alias)) for n in names])
        elif join.args.get("on") is not None:
            cond = join.args["on"]
        else:
            raise PrivacyRefused(f"JOIN {alias} needs an ON or USING condition (a cross join is not allowed)")
        conditions.append((join, alias, meta, cond))

    scope = JoinScope(sources, using)
    private = [a for a, m in sources.items() if m.is_private]
    if not private:
        raise UnsupportedQuery("joins of public tables only are not supported yet")
    linked = {private[0]}
    qualified = []
    for join, alias, meta, cond in conditions:
        info = RowExprChecker(scope.resolve, context=f"JOIN {alias} ON").check(cond)
        if info.kind not in (BOOL, NULL):
            raise DatatypeMismatch(f"JOIN condition must be boolean: {snippet(cond)}")
        if cond.find(exp.AggFunc):
            raise PrivacyRefused("aggregates are not allowed in JOIN conditions")
        for a, b in _unit_pairs(cond, scope):
            if a in linked or b in linked:
                linked.update((a, b))
        qualified.append((join, alias, meta, _qualify(cond, scope)))
    unlinked = [a for a in private if a not in linked]
    if unlinked:
        raise PrivacyRefused(f"private tables can be joined only on their privacy units; {', '.join(unlinked)} is "
                             f"joined to {private[0]} without equating {sources[private[0]].privacy_unit} "
                             f"with {sources[unlinked[0]].privacy_unit}")

    columns: dict[str, ColumnMeta] = {}
    projection = []
    for alias, meta in sources.items():
        for col in meta.columns.values():
            virtual = f"{alias}__{col.name}"
            columns[virtual] = ColumnMeta(virtual, col.type, col.lower, col.upper, col.values)
            projection.append(exp.column(col.name, table=alias).as_(virtual))
    lead = sources[private[0]]
    table = TableMeta(name=JOINED, source=None, privacy_unit=f"{private[0]}__{lead.privacy_unit}",
                      max_groups=max(sources[a].max_groups for a in private),
                      max_rows=max(sources[a].max_rows for a in private), columns=columns,
                      unit_aliases=frozenset(f"{a}__{sources[a].privacy_unit}" for a in private[1:]))
    select = exp.select(*projection).from_(exp.table_(first.name).as_(first_alias))
    for join, alias, meta, cond in qualified:
        select = select.join(exp.table_(meta.name).as_(alias), on=cond,
                             join_type="LEFT" if (join.args.get("side") or "").upper() == "LEFT" else None)

    out = tree.copy()
    out.set("joins", None)
    out.set("from_" if "from_" in out.args else "from", exp.From(this=exp.table_(JOINED)))
    aliases = {item.alias for item in out.expressions if isinstance(item, exp.Alias)}
    for i, item in enumerate(list(out.expressions)):
        if isinstance(item, exp.Column) and not isinstance(item.this, exp.Star):
            out.expressions[i] = exp.alias_(item, normalize_name(item.this))
    out.set("expressions", out.expressions)
    for col in list(out.find_all(exp.Column)):
        if isinstance(col.this, exp.Star):
            continue
        if not col.table and normalize_name(col.this) in aliases and not any(normalize_name(col.this) in m.columns
                                                                     for m in sources.values()):
            continue  # a reference to a select-list alias (ORDER BY n)
        alias, meta = scope.locate(col)
        col.replace(exp.column(f"{alias}__{meta.name}"))
    return out, JoinSource(table=table, select=select, sources=sources, scope=scope)


def join_relation(join: JoinSource, table_ref: Callable[[TableMeta], exp.Table], target: SqlTarget) -> exp.Expression:
    """The join as a backend sub-query named ``__joined``: real table references, safe ON conditions."""
    select = join.select.copy()

    def lookup(col: exp.Column) -> ColumnMeta | None:
        meta = join.sources.get(col.table)
        return meta.columns.get(col.name) if meta is not None else None

    for node in list(select.find_all(exp.Table)):
        alias = node.alias_or_name
        node.replace(table_ref(join.sources[alias]).as_(alias))
    for j in select.args.get("joins") or []:
        j.set("on", prepare_row_expr(j.args["on"], None, target, lookup=lookup))
    return select.subquery(JOINED)
