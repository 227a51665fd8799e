"""Statement-level allow-list: is this a query privsql can answer, and what does it ask?

``check_query`` turns a parsed statement into a ``CheckedQuery``: the private
table, the WHERE condition, the GROUP BY keys and the distinct aggregate calls,
each row-level part checked by ``RowExprChecker``. Everything that does not
fit the supported shape is refused here, before any budget is reserved or any
data is read, and the refusal never depends on the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from privsql.config import ColumnMeta, Config, TableMeta
from privsql.errors import PrivacyRefused, UndefinedColumn, UndefinedTable, UnsupportedQuery
from privsql.sql.rowexpr import BOOL, NULL, NUM, RowExprChecker, RowInfo, literal_number, snippet

AGG_META = "privsql_agg"
SUPPORTED_AGGREGATES = ("COUNT(*), COUNT(col), COUNT(DISTINCT col), SUM, AVG, VAR_SAMP/VARIANCE, VAR_POP, "
                        "STDDEV/STDDEV_SAMP, STDDEV_POP, COVAR_POP, COVAR_SAMP, CORR, MEDIAN, "
                        "PERCENTILE_CONT/PERCENTILE_DISC, QUANTILE, MIN, MAX")
_PAIR_AGGREGATES = {exp.CovarPop: "covar_pop", exp.CovarSamp: "covar_samp", exp.Corr: "corr"}
#: bounded numeric aggregates: sqlglot node → privsql function name
_BOUNDED_AGGREGATES = {exp.Sum: "sum", exp.Avg: "avg", exp.Variance: "var_samp", exp.VariancePop: "var_pop",
                       exp.Stddev: "stddev_samp", exp.StddevSamp: "stddev_samp", exp.StddevPop: "stddev_pop"}

# nodes allowed in the post-processing part of a query (SELECT list, HAVING, ORDER BY),
# which is evaluated on noisy aggregates only, in an isolated in-memory engine
_OUTPUT_NODES = (
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Paren, exp.Literal, exp.Null,
    exp.Boolean, exp.Case, exp.If, exp.Coalesce, exp.Abs, exp.Round, exp.Floor, exp.Ceil,
    exp.Least, exp.Greatest, exp.Cast, exp.TryCast, exp.DataType, exp.EQ, exp.NEQ, exp.GT,
    exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is, exp.Column, exp.Identifier,
    exp.Sqrt, exp.Ln, exp.Exp, exp.Pow, exp.Between, exp.In, exp.Alias, exp.Var, exp.Nullif,
)
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
                exp.TruncateTable, exp.Copy, exp.Command, exp.Pragma, exp.Set, exp.Use,
                exp.Describe, exp.Transaction, exp.Commit, exp.Rollback, exp.LoadData, exp.Grant)


@dataclass(frozen=True)
class AggCall:
    """One distinct aggregate call of the query.

    func: 'count' (rows, arg None), 'count_expr', 'sum', 'avg', 'var_samp', 'var_pop',
    'stddev_samp', 'stddev_pop', 'quantile' (also MEDIAN, PERCENTILE_*, MIN = quantile 0, MAX = 1),
    'count_units' (COUNT(DISTINCT <privacy unit>)). ``arg`` is the row expression (qualifiers
    stripped), ``info`` its kind and derived clamping interval.
    """

    func: str
    arg: exp.Expression | None
    info: RowInfo | None
    sql: str  # canonical text, the identity used to de-duplicate calls
    param: float | None = None  # the fraction of a quantile (MIN = 0, MAX = 1)
    arg2: exp.Expression | None = None  # COVAR/CORR: the second argument
    info2: RowInfo | None = None


@dataclass(frozen=True)
class GroupKey:
    expr: exp.Expression
    name: str
    column: ColumnMeta | None
    info: RowInfo


@dataclass
class CheckedQuery:
    """A query that passed the allow-list, split into its DP-relevant parts."""

    table: TableMeta
    select: exp.Select  # the original statement (bound parameters), for post-processing
    where: exp.Expression | None
    keys: list[GroupKey]
    aggregates: list[AggCall]  # aggregate nodes in ``select`` carry meta[AGG_META] = index here


def refuse_statement(tree: exp.Expression) -> None:
    """Refuse every statement that is not a plain SELECT, with a clear reason."""
    if isinstance(tree, exp.Select):
        return
    words = tree.sql(dialect="postgres").split()
    keyword = words[0].upper() if words else type(tree).__name__.upper()
    if isinstance(tree, _WRITE_NODES):
        raise PrivacyRefused(f"privsql is read-only and answers SELECT queries only; {keyword} is not allowed")
    if isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
        raise UnsupportedQuery("UNION / INTERSECT / EXCEPT are not supported; send each SELECT separately")
    raise PrivacyRefused(f"privsql answers SELECT queries only; {keyword} statements are not allowed")


class _Scope:
    """The one table a query reads, and how its columns are named."""

    def __init__(self, table: TableMeta, alias: str | None) -> None:
        self.table = table
        self.names = {table.name} | ({alias} if alias else set())

    def resolve(self, col: exp.Column) -> ColumnMeta:
        qualifier = col.table
        if qualifier and normalize_name(col.args["table"]) not in self.names:
            raise UndefinedTable(f"missing FROM-clause entry for table \"{qualifier}\"")
        if col.args.get("db") or col.args.get("catalog"):
            raise UnsupportedQuery(f"column reference {col.sql()} has too many qualifiers")
        name = normalize_name(col.this)
        meta = self.table.columns.get(name)
        if meta is None:
            known = ", ".join(sorted(self.table.columns))
            raise UndefinedColumn(f"column \"{col.name}\" does not exist in table {self.table.name} "
                                  f"(columns: {known})")
        return meta


def normalize_name(ident: exp.Expression | str | None) -> str:
    """Identifier → config name: unquoted identifiers fold to lower case (PostgreSQL rules)."""
    if ident is None:
        return ""
    if isinstance(ident, exp.Identifier):
        return ident.name if ident.quoted else ident.name.lower()
    if isinstance(ident, exp.Expression):
        return ident.name.lower()
    return str(ident).lower()


def alias_names(tree: exp.Select) -> set[str]:
    """The select list's output aliases, quoted ones keeping their case (PostgreSQL rules)."""
    return {normalize_name(item.args["alias"]) for item in tree.expressions if isinstance(item, exp.Alias)}


def database_names(config: Config) -> set[str]:
    """Catalog names that mean this database in ``catalog.schema.table``: privsql and server.database."""
    server = config.raw.get("server") if isinstance(config.raw, dict) else None
    named = server.get("database") if isinstance(server, dict) else None
    return {"privsql"} | ({str(named)} if named else set())


def configured_table(source: exp.Expression, config: Config,
                     virtual: TableMeta | None = None) -> tuple[TableMeta, str | None]:
    """A FROM/JOIN item → (configured table or ``virtual``, its alias or None).

    Only plain configured table names are allowed: table functions, files, sub-queries
    and other schemas are refused."""
    if isinstance(source, exp.Subquery):
        raise UnsupportedQuery("sub-queries in FROM are not supported yet")
    if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
        raise PrivacyRefused(f"only configured tables may be read, not {snippet(source)}")
    catalog, schema = source.args.get("catalog"), source.args.get("db")
    if catalog and normalize_name(catalog) not in database_names(config):
        dotted = ".".join(part.name for part in source.parts)
        raise UnsupportedQuery(f"cross-database references are not implemented: \"{dotted}\"")
    if schema and normalize_name(schema) not in ("public", "main"):
        raise UndefinedTable(f"relation \"{source.sql()}\" does not exist")
    for key in ("sample", "joins", "laterals", "pivots", "version", "when", "changes"):
        if source.args.get(key):
            raise UnsupportedQuery(f"{key.upper()} on a table is not supported")
    name = normalize_name(source.this)
    meta = virtual if virtual is not None and name == virtual.name else config.tables.get(name)
    if meta is None:
        raise UndefinedTable(f"relation \"{source.name}\" does not exist (configured tables: "
                             f"{', '.join(sorted(config.tables))})")
    alias = source.args.get("alias")
    return meta, (normalize_name(alias.this) if alias is not None and alias.this is not None else None)


def resolve_table(tree: exp.Select, config: Config, virtual: TableMeta | None = None) -> tuple[TableMeta, str | None]:
    """The single table a SELECT reads: a configured one, or ``virtual`` (a flattened join)."""
    for key, what in (("with", "WITH (common table expressions)"), ("joins", "JOIN"),
                      ("laterals", "LATERAL"), ("pivots", "PIVOT")):
        if tree.args.get(key):
            raise UnsupportedQuery(f"{what} is not supported yet")
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None:
        raise PrivacyRefused("a query must read a configured table (FROM ...)")
    return configured_table(from_.this, config, virtual)


def _refuse_clauses(tree: exp.Select) -> None:
    if tree.args.get("with") or tree.args.get("with_"):
        raise UnsupportedQuery("WITH (common table expressions) is not supported yet; use the tables directly")
    if tree.args.get("distinct"):
        raise PrivacyRefused("SELECT DISTINCT would list individual values; use GROUP BY with an aggregate")
    for key, what in (("qualify", "QUALIFY"), ("windows", "WINDOW"), ("into", "SELECT INTO"),
                      ("locks", "FOR UPDATE/SHARE"), ("connect", "CONNECT BY"), ("prewhere", "PREWHERE"),
                      ("sample", "TABLESAMPLE"), ("settings", "SETTINGS"), ("format", "FORMAT"),
                      ("kind", "SELECT AS STRUCT"), ("options", "OPTION")):
        if tree.args.get(key):
            raise PrivacyRefused(f"{what} is not allowed")
    for node in tree.find_all(exp.Window):
        raise PrivacyRefused(f"window functions are not allowed: {snippet(node)}")


def _is_aggregate(node: exp.Expression) -> bool:
    return isinstance(node, exp.AggFunc)


def strip_qualifiers(node: exp.Expression) -> exp.Expression:
    """A copy of a row expression with table qualifiers removed and names folded."""
    node = node.copy()
    for col in node.find_all(exp.Column):
        col.set("table", None)
        col.set("this", exp.to_identifier(normalize_name(col.this)))
    return node


class _AggregateCollector:
    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.calls: list[AggCall] = []
        self.by_sql: dict[str, int] = {}

    def add(self, node: exp.AggFunc) -> None:
        call = self._check(node)
        if call.sql not in self.by_sql:
            self.by_sql[call.sql] = len(self.calls)
            self.calls.append(call)
        node.meta[AGG_META] = self.by_sql[call.sql]  # survives tree copies

    def _check(self, node: exp.AggFunc) -> AggCall:
        label = snippet(node)
        for inner in node.find_all(exp.AggFunc):
            if inner is not node:
                raise PrivacyRefused(f"nested aggregates are not allowed: {label}")
        if isinstance(node, exp.Count):
            return self._count(node, label)
        if type(node) in _PAIR_AGGREGATES:
            return self._pair(node, _PAIR_AGGREGATES[type(node)], label)
        func = _BOUNDED_AGGREGATES.get(type(node))
        if isinstance(node, (exp.Quantile, exp.Min, exp.Max)):
            if node.expressions:
                raise UnsupportedQuery(f"{label} takes one argument")
            func = "quantile"
        if func is not None:
            arg = node.this
            if isinstance(arg, exp.Distinct):
                raise UnsupportedQuery(f"{func.upper()}(DISTINCT ...) is not supported")
            info = self._bounded_arg(arg, label)
            stripped = strip_qualifiers(arg)
            if func == "quantile":
                p = 0.0 if isinstance(node, exp.Min) else 1.0 if isinstance(node, exp.Max) else \
                    literal_number(node.args["quantile"])
                return AggCall(func, stripped, info, f"quantile({stripped.sql()}, {p!r})", param=p)
            return AggCall(func, stripped, info, f"{func}({stripped.sql()})")
        name = node.sql_name() if not isinstance(node, exp.Anonymous) else node.name.upper()
        raise UnsupportedQuery(f"aggregate {name} is not supported yet; supported: {SUPPORTED_AGGREGATES}")

    def _bounded_arg(self, arg: exp.Expression, label: str) -> RowInfo:
        """A numeric argument whose clamping interval is known from the config; refuse others."""
        info = RowExprChecker(self.scope.resolve, context=label).check(arg)
        if info.kind not in (NUM, NULL):
            raise PrivacyRefused(f"{label} needs a numeric argument, not {info.kind}")
        if not info.bounded:
            cols = sorted({c.name for c in arg.find_all(exp.Column)})
            raise PrivacyRefused(f"{label} cannot be bounded: declare lower and upper for column(s) "
                                 f"{', '.join(cols) or '?'} in the config (bounds are never taken from the data)")
        return info

    def _pair(self, node: exp.AggFunc, func: str, label: str) -> AggCall:
        x, y = node.this, node.expression
        if isinstance(x, exp.Distinct) or y is None:
            raise UnsupportedQuery(f"{label} takes two plain arguments")
        info_x, info_y = self._bounded_arg(x, label), self._bounded_arg(y, label)
        sx, sy = strip_qualifiers(x), strip_qualifiers(y)
        return AggCall(func, sx, info_x, f"{func}({sx.sql()}, {sy.sql()})", arg2=sy, info2=info_y)

    def _count(self, node: exp.Count, label: str) -> AggCall:
        arg = node.this
        if arg is None or isinstance(arg, exp.Star):
            return AggCall("count", None, None, "count(*)")
        if isinstance(arg, exp.Distinct):
            targets = arg.expressions
            unit = self.scope.table.privacy_unit
            if (len(targets) == 1 and isinstance(targets[0], exp.Column)
                    and self.scope.resolve(targets[0]).name == unit):
                return AggCall("count_units", None, None, "count(distinct unit)")
            if len(targets) != 1:
                raise UnsupportedQuery(f"{label}: COUNT(DISTINCT ...) takes one expression")
            info = RowExprChecker(self.scope.resolve, context=label).check(targets[0])
            stripped = strip_qualifiers(targets[0])
            return AggCall("count_distinct", stripped, info, f"count(distinct {stripped.sql()})")
        info = RowExprChecker(self.scope.resolve, context=label).check(arg)
        if not info.has_column and info.kind != NULL:
            return AggCall("count", None, None, "count(*)")  # COUNT(1): every row
        stripped = strip_qualifiers(arg)
        return AggCall("count_expr", stripped, info, f"count({stripped.sql()})")


def _check_output(node: exp.Expression, where: str, keys: list[GroupKey], collector: _AggregateCollector,
                  aliases: set[str]) -> None:
    """Post-processing expressions: aggregates, group keys and safe scalar operations only."""
    if _is_aggregate(node):
        collector.add(node)  # type: ignore[arg-type]
        return
    key_sqls = {k.expr.sql() for k in keys}
    if not isinstance(node, exp.Column) and node.find(exp.Column) is not None \
            and strip_qualifiers(node).sql() in key_sqls:
        return  # a GROUP BY expression repeated in the output
    if isinstance(node, exp.Star):
        raise PrivacyRefused("privsql answers aggregate queries only; SELECT * would return individual rows")
    if isinstance(node, exp.Window):
        raise PrivacyRefused(f"window functions are not allowed: {snippet(node)}")
    if isinstance(node, exp.Column):
        if isinstance(node.this, exp.Star):
            raise PrivacyRefused("privsql answers aggregate queries only; SELECT * would return individual rows")
        if not node.table and normalize_name(node.this) in aliases and where != "SELECT":
            return
        name = collector.scope.resolve(node).name
        if strip_qualifiers(node).sql() not in key_sqls:
            raise PrivacyRefused(f"column \"{name}\" must appear in GROUP BY or be used inside an aggregate "
                                 f"in {where}: privsql answers aggregate queries only")
        return
    if not isinstance(node, _OUTPUT_NODES):
        if isinstance(node, (exp.Select, exp.Subquery, exp.Exists)):
            raise UnsupportedQuery(f"sub-queries are not supported in {where}")
        label = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
        raise PrivacyRefused(f"{label} is not allowed in {where}: {snippet(node)}")
    for child in node.iter_expressions():
        _check_output(child, where, keys, collector, aliases)


def _group_keys(tree: exp.Select, scope: _Scope) -> list[GroupKey]:
    group = tree.args.get("group")
    if group is None:
        return []
    if group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets"):
        raise UnsupportedQuery("ROLLUP, CUBE and GROUPING SETS are not supported")
    items = tree.expressions
    aliases = {normalize_name(item.args["alias"]): item.this for item in items if isinstance(item, exp.Alias)}
    keys: list[GroupKey] = []
    for expr in group.expressions:
        ordinal = literal_number(expr)
        if ordinal is not None:
            if not ordinal.is_integer() or not 1 <= ordinal <= len(items):
                raise UnsupportedQuery(f"GROUP BY position {expr.sql()} is not in the select list")
            expr = items[int(ordinal) - 1].unalias()
        elif isinstance(expr, exp.Column) and not expr.table and normalize_name(expr.this) in aliases \
                and normalize_name(expr.this) not in scope.table.columns:
            expr = aliases[normalize_name(expr.this)]
        if expr.find(exp.AggFunc):
            raise PrivacyRefused(f"aggregates are not allowed in GROUP BY: {snippet(expr)}")
        info = RowExprChecker(scope.resolve, context="GROUP BY").check(expr)
        unit = scope.table.privacy_unit
        units = {unit} | scope.table.unit_aliases if unit else set()
        if units and any(scope.resolve(c).name in units for c in expr.find_all(exp.Column)):
            raise PrivacyRefused(f"GROUP BY on the privacy unit ({unit}) would release one group per person")
        column = scope.resolve(expr) if isinstance(expr, exp.Column) else None
        stripped = strip_qualifiers(expr)
        name = column.name if column else _output_name(expr)
        if any(k.expr.sql() == stripped.sql() for k in keys):
            continue
        keys.append(GroupKey(stripped, name, column, info))
    return keys


def _output_name(expr: exp.Expression) -> str:
    """PostgreSQL's name for an unaliased output column."""
    if isinstance(expr, exp.Alias):
        return expr.alias
    if isinstance(expr, exp.Column):
        return expr.name.lower() if not expr.this.quoted else expr.name
    if isinstance(expr, (exp.Paren, exp.WithinGroup)):
        return _output_name(expr.this)
    if isinstance(expr, (exp.Cast, exp.TryCast)):
        inner = expr.this
        if isinstance(inner, (exp.Column, exp.Func)):
            return _output_name(inner)
        return expr.to.sql(dialect="postgres").lower()
    if isinstance(expr, exp.Anonymous):
        return expr.name.lower()
    if isinstance(expr, exp.Func):
        return expr.sql_name().lower()
    return "?column?"


output_name = _output_name


def check_public_query(tree: exp.Select, scope: _Scope) -> None:
    """A query over one public table: any allow-listed expression, plain aggregates computed
    exactly, raw rows allowed (the table holds no personal data)."""
    checker = RowExprChecker(scope.resolve, context="a query on a public table", exact_aggregates=True)
    for item in tree.expressions:
        inner = item.unalias() if isinstance(item, exp.Alias) else item
        if isinstance(inner, exp.Star) or (isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)):
            continue
        checker.check(inner)
    for key in ("where", "having"):
        clause = tree.args.get(key)
        if clause is not None:
            checker.check(clause.this)
    aliases = {item.alias for item in tree.expressions if isinstance(item, exp.Alias)}
    for key in ("group", "order"):
        clause = tree.args.get(key)
        for expr in clause.expressions if clause is not None else []:
            target = expr.this if isinstance(expr, exp.Ordered) else expr
            if literal_number(target) is None and not (isinstance(target, exp.Column) and target.name in aliases):
                checker.check(target)
    for key in ("limit", "offset"):
        clause = tree.args.get(key)
        value = clause.args.get("expression") if clause is not None else None
        if clause is not None and literal_number(value if value is not None else clause.this) is None:
            raise PrivacyRefused(f"{key.upper()} must be an integer literal")


def check_query(tree: exp.Expression, config: Config, virtual: TableMeta | None = None) -> CheckedQuery:
    """Validate a parsed statement against the allow-list; refuse with a clear message.

    ``virtual`` is the table of a flattened join (see ``joins.flatten_joins``)."""
    refuse_statement(tree)
    assert isinstance(tree, exp.Select)
    _refuse_clauses(tree)
    table, alias = resolve_table(tree, config, virtual)
    scope = _Scope(table, alias)
    if not table.is_private:
        check_public_query(tree, scope)
        return CheckedQuery(table=table, select=tree, where=None, keys=[], aggregates=[])
    where = tree.args.get("where")
    where_expr = None
    if where is not None:
        if where.find(exp.AggFunc):
            raise PrivacyRefused("aggregates are not allowed in WHERE; use HAVING")
        info = RowExprChecker(scope.resolve, context="WHERE").check(where.this)
        if info.kind not in (BOOL, NULL):
            raise PrivacyRefused(f"WHERE needs a condition, not {snippet(where.this)}")
        where_expr = strip_qualifiers(where.this)
    keys = _group_keys(tree, scope)
    collector = _AggregateCollector(scope)
    aliases = alias_names(tree)
    for item in tree.expressions:
        _check_output(item.unalias() if isinstance(item, exp.Alias) else item, "SELECT", keys, collector, aliases)
    having = tree.args.get("having")
    if having is not None:
        _check_output(having.this, "HAVING", keys, collector, aliases)
    order = tree.args.get("order")
    if order is not None:
        for ordered in order.expressions:
            target = ordered.this
            if literal_number(target) is not None:
                pos = literal_number(target)
                if not pos.is_integer() or not 1 <= pos <= len(tree.expressions):  # type: ignore[union-attr]
                    raise UnsupportedQuery(f"ORDER BY position {target.sql()} is not in the select list")
                continue
            _check_output(target, "ORDER BY", keys, collector, aliases)
    for key in ("limit", "offset"):
        clause = tree.args.get(key)
        if clause is not None:
            value = clause.args.get("expression") if isinstance(clause, exp.Limit) else clause.args.get("expression")
            if value is None:
                value = clause.this
            n = literal_number(value) if value is not None else None
            if n is None or n < 0 or not n.is_integer():
                raise PrivacyRefused(f"{key.upper()} must be a non-negative integer literal")
    if table.is_private and not collector.calls:
        raise PrivacyRefused("privsql answers aggregate queries only: add COUNT, SUM or AVG "
                             "(a query without aggregates would return individual rows)")
    return CheckedQuery(table=table, select=tree, where=where_expr, keys=keys,
                        aggregates=collector.calls)
