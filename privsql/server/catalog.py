"""The shadow catalog: answers catalog and constant queries from config metadata only.

A private in-memory DuckDB holds an emulated ``pg_catalog`` and
``information_schema`` filled from the configured tables' names and column
types — never a row of real data — and is locked down (no file or network
access). Client queries are parsed as PostgreSQL with sqlglot, rewritten onto
the emulated relations and functions (:func:`rewrite`), and run there. Nothing
here is charged to any budget.

Catalog statements are bounded like any other: each runs on one DuckDB thread
within a small memory limit, is interrupted when its statement is cancelled or
times out (:func:`privsql.cancel.guard`), and returns at most ``MAX_ROWS`` rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import duckdb
from sqlglot import exp

from privsql.cancel import guard
from privsql.errors import (
    PrivsqlError,
    QuerySyntaxError,
    StatementTooLarge,
    UndefinedColumn,
    UndefinedTable,
    UnsupportedQuery,
)
from privsql.server import types as pgt
from privsql.server.catalog_schema import (
    DATABASE_OID,
    FIRST_TABLE_OID,
    INFO_SCHEMA,
    NAMESPACE_OIDS,
    OWNER_NAME,
    OWNER_OID,
    PG_CATALOG,
)
from privsql.server.outcome import Column
from privsql.server.session import DEFAULTS, VERSION_STRING

#: configured schema as the catalog sees it: table → column → wire type
Schema = Mapping[str, Mapping[str, pgt.PgType]]
#: most rows one catalog statement may return
MAX_ROWS = 100_000
#: DuckDB memory for every catalog statement together
MEMORY_LIMIT = "256MB"

_SQL_TYPE_NAMES = {
    "int8": "bigint", "int4": "integer", "int2": "smallint", "float8": "double precision", "float4": "real",
    "bool": "boolean", "varchar": "character varying", "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone", "bpchar": "character",
}

_MACROS = [
    f"CREATE MACRO version() AS '{VERSION_STRING}'",
    f"CREATE MACRO pg_get_userbyid(x) AS '{OWNER_NAME}'",
    "CREATE MACRO pg_table_is_visible(x) AS true",
    "CREATE MACRO pg_type_is_visible(x) AS true",
    "CREATE MACRO pg_function_is_visible(x) AS true",
    "CREATE MACRO format_type(t, m) AS (SELECT coalesce(s.sqlname, p.typname) FROM pgcat.pg_type p"
    " LEFT JOIN pgcat_type_names s ON s.typname = p.typname WHERE p.oid = t)",
    "CREATE MACRO pg_get_expr(a, b, c := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_encoding_to_char(x) AS 'UTF8'",
    "CREATE MACRO pg_relation_is_publishable(x) AS false",
    "CREATE MACRO pg_get_statisticsobjdef_columns(x) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO obj_description(a, b := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO col_description(a, b) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO shobj_description(a, b) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_indexdef(a, b := NULL, c := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_constraintdef(a, b := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_viewdef(a, b := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_function_result(a) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_function_arguments(a) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_get_partkeydef(a) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO has_table_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO has_schema_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO has_database_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO has_column_privilege(a, b, c, d := NULL) AS true",
    "CREATE MACRO pg_has_role(a, b, c := NULL) AS true",
    "CREATE MACRO pg_is_in_recovery() AS false",
    "CREATE MACRO pg_total_relation_size(x) AS 0",
    "CREATE MACRO pg_relation_size(x, f := NULL) AS 0",
    "CREATE MACRO pg_table_size(x) AS 0",
    "CREATE MACRO pg_database_size(x) AS 0",
    "CREATE MACRO pg_tablespace_location(x) AS ''",
    "CREATE MACRO array_upper(a, d) AS len(a)",
    "CREATE MACRO array_lower(a, d) AS CASE WHEN len(a) > 0 THEN 1 END",
    "CREATE MACRO txid_current() AS 1",
    "CREATE MACRO pg_postmaster_start_time() AS TIMESTAMP '2000-01-01 00:00:00'",
    "CREATE MACRO pg_regclass_name(x) AS coalesce((SELECT relname FROM pgcat.pg_class WHERE oid = x), CAST(x AS VARCHAR))",
    "CREATE MACRO pg_regtype_name(x) AS coalesce(format_type(x, NULL), CAST(x AS VARCHAR))",
    "CREATE MACRO pg_regnamespace_name(x) AS coalesce((SELECT nspname FROM pgcat.pg_namespace WHERE oid = x), CAST(x AS VARCHAR))",
    "CREATE MACRO pg_unqualified(x) AS regexp_replace(replace(CAST(x AS VARCHAR), '\"', ''), '^.*[.]', '')",
    "CREATE MACRO pg_regclass_oid(x) AS (SELECT oid FROM pgcat.pg_class WHERE relname = pg_unqualified(x))",
    "CREATE MACRO pg_regtype_oid(x) AS (SELECT oid FROM pgcat.pg_type WHERE typname = pg_unqualified(x))",
    "CREATE MACRO pg_regnamespace_oid(x) AS (SELECT oid FROM pgcat.pg_namespace WHERE nspname = pg_unqualified(x))",
    "CREATE MACRO to_regclass(x) AS pg_regclass_oid(x)",
    "CREATE MACRO pg_setting_value(x) AS (SELECT setting FROM pgcat.pg_settings WHERE name = lower(x))",
    "CREATE MACRO pg_get_serial_sequence(a, b) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pg_collation_is_visible(x) AS true",
    "CREATE MACRO pg_opclass_is_visible(x) AS true",
    "CREATE MACRO pg_conversion_is_visible(x) AS true",
    "CREATE MACRO to_regtype(x) AS pg_regtype_oid(x)",
    "CREATE MACRO to_regnamespace(x) AS pg_regnamespace_oid(x)",
]


class ShadowCatalog:
    """The locked-down DuckDB holding the emulated catalog for one schema."""

    def __init__(self, schema: Schema, *, database: str = "privsql") -> None:
        self.schema = {name: dict(cols) for name, cols in schema.items()}
        self.database = database
        self._db = duckdb.connect(":memory:")
        self._local = threading.local()
        self._build()
        self._db.execute("SET threads = 1")
        self._db.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self._db.execute("SET enable_external_access = false")
        self._db.execute("SET lock_configuration = true")

    # ----------------------------------------------------------------- build

    def _create(self, schema: str, name: str, columns: str) -> None:
        self._db.execute(f'CREATE TABLE {schema}."{name}" ({columns})')

    def _insert(self, table: str, rows: Sequence[tuple]) -> None:
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            self._db.executemany(f"INSERT INTO {table} VALUES ({marks})", [list(r) for r in rows])

    def _build(self) -> None:
        db = self._db
        db.execute("CREATE SCHEMA pgcat")
        db.execute("CREATE SCHEMA infoschema")
        for name, cols in PG_CATALOG.items():
            self._create("pgcat", name, cols)
        for name, cols in INFO_SCHEMA.items():
            self._create("infoschema", name, cols)
        db.execute("CREATE TABLE pgcat_type_names (typname VARCHAR, sqlname VARCHAR)")
        self._insert("pgcat_type_names", list(_SQL_TYPE_NAMES.items()))
        self._fill_fixed()
        self._fill_tables()
        for macro in _MACROS:
            db.execute(macro)

    def _fill_fixed(self) -> None:
        self._insert("pgcat.pg_namespace", [(oid, name, OWNER_OID, None) for name, oid in NAMESPACE_OIDS.items()])
        self._insert("pgcat.pg_am", [(2, "heap", "heap_tableam_handler", "t"), (403, "btree", "bthandler", "i")])
        self._insert("pgcat.pg_roles", [(OWNER_NAME, False, True, False, False, True, False, -1, "********", None,
                                         False, None, OWNER_OID)])
        self._insert("pgcat.pg_user", [(OWNER_NAME, OWNER_OID, False, False, False, False, "********", None, None)])
        self._insert("pgcat.pg_database", [(DATABASE_OID, self.database, OWNER_OID, 6, "c", False, True, -1, 0, 1,
                                            1663, "C.UTF-8", "C.UTF-8", None, None, None)])
        self._insert("pgcat.pg_tablespace", [(1663, "pg_default", OWNER_OID, None, None)])
        self._insert("pgcat.pg_collation", [(100, "default", 11, OWNER_OID, "d", True, -1, None, None)])
        self._insert("pgcat.pg_settings", [(key, value, None, "privsql", "", "user", "string", "default")
                                           for key, (_, value) in DEFAULTS.items()])
        self._insert("infoschema.schemata", [(self.database, name, OWNER_NAME) for name in NAMESPACE_OIDS])
        types = []
        for t in pgt.BUILTIN:
            byval = 0 < t.size <= 8
            collation = 100 if t.category == "S" else 0
            types.append((t.oid, t.name, 11, OWNER_OID, t.size, byval, "p" if t is pgt.UNKNOWN else "b", t.category,
                          False, True, ",", 0, "-", 0, t.array_oid, f"{t.name}in", f"{t.name}out", f"{t.name}recv",
                          f"{t.name}send", "-", "-", "-", "d" if t.size == 8 else "i", "p" if t.size > 0 else "x",
                          False, 0, -1, 0, collation, None, None, None))
            if t.array_oid:
                types.append((t.array_oid, f"_{t.name}", 11, OWNER_OID, -1, False, "b", "A", False, True, ",", 0,
                              "array_subscript_handler", t.oid, 0, "array_in", "array_out", "array_recv",
                              "array_send", "-", "-", "array_typanalyze", "d" if t.size == 8 else "i", "x", False,
                              0, -1, 0, collation, None, None, None))
        self._insert("pgcat.pg_type", types)

    def _fill_tables(self) -> None:
        classes, attributes, info_tables, info_columns, pg_tables = [], [], [], [], []
        public = NAMESPACE_OIDS["public"]
        for i, (table, columns) in enumerate(sorted(self.schema.items())):
            oid = FIRST_TABLE_OID + i
            classes.append((oid, table, public, 0, 0, OWNER_OID, 2, oid, 0, 0, -1.0, 0, 0, False, False, "p", "r",
                            len(columns), 0, False, False, False, False, False, True, "d", False, 0, 0, 1, None,
                            None, None, False))
            info_tables.append((self.database, "public", table, "BASE TABLE", None, None, None, None, None, "NO",
                                "NO", None))
            pg_tables.append(("public", table, OWNER_NAME, None, False, False, False, False))
            for num, (col, t) in enumerate(columns.items(), start=1):
                collation = 100 if t.category == "S" else 0
                attributes.append((oid, col, t.oid, -1, t.size, num, 0, -1, -1, 0 < t.size <= 8,
                                   "d" if t.size == 8 else "i", "p" if t.size > 0 else "x", "", False, False, False,
                                   "", "", False, True, 0, collation, None, None, None, None))
                precision = {"int8": 64, "float8": 53}.get(t.name)
                info_columns.append((self.database, "public", table, col, num, None, "YES",
                                     _SQL_TYPE_NAMES.get(t.name, t.name), None, None, precision,
                                     2 if precision else None, 0 if t.name == "int8" else None,
                                     6 if t.category == "D" and t.name != "date" else (0 if t.name == "date" else None),
                                     self.database, "pg_catalog", t.name, "NO", "NEVER", "NO"))
        self._insert("pgcat.pg_class", classes)
        self._insert("pgcat.pg_attribute", attributes)
        self._insert("infoschema.tables", info_tables)
        self._insert("infoschema.columns", info_columns)
        self._insert("pgcat.pg_tables", pg_tables)

    # ------------------------------------------------------------------- run

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Column], list[tuple]]:
        """Run rewritten DuckDB SQL; returns wire columns and rows. Interrupted when the current
        statement is cancelled or reaches its deadline (QueryCanceled)."""
        cursor = self._cursor()
        try:
            with guard(cursor.interrupt, None, interrupted=duckdb.InterruptException):
                cursor.execute(sql, list(params) if params else None)
                rows = cursor.fetchmany(MAX_ROWS + 1)
        except duckdb.Error as exc:
            raise _translate(exc) from None
        if len(rows) > MAX_ROWS:
            raise StatementTooLarge(f"the catalog answer has more than {MAX_ROWS:,} rows",
                                    hint="add a WHERE clause or a LIMIT")
        description = cursor.description or []
        columns = [Column(d[0], pgt.duckdb_type(str(d[1]))) for d in description]
        return columns, [_wire_row(r) for r in rows]


def _wire_row(row: tuple) -> tuple:
    return tuple(list(v) if isinstance(v, tuple) else v for v in row)


_ERRORS: list[tuple[str, type[PrivsqlError]]] = [
    ("Parser Error", QuerySyntaxError),
    ("Catalog Error: Table", UndefinedTable),
    ("Binder Error: Referenced column", UndefinedColumn),
]


class CatalogQueryError(PrivsqlError):
    sqlstate = "42883"


def _translate(exc: duckdb.Error) -> PrivsqlError:
    text = str(exc).splitlines()[0]
    for prefix, cls in _ERRORS:
        if text.startswith(prefix):
            return cls(text)
    if isinstance(exc, (duckdb.ConversionException, duckdb.InvalidInputException)):
        return UnsupportedQuery(f"privsql's catalog cannot answer this: {text}")
    return CatalogQueryError(f"privsql's catalog cannot answer this: {text}")


# ----------------------------------------------------------------- rewriting


@dataclass(frozen=True)
class SessionValues:
    """Per-session values that catalog functions report."""

    user: str
    database: str
    process_id: int
    settings: Mapping[str, str]


_REGCASTS = {"regclass", "regtype", "regnamespace", "regproc", "regprocedure", "regrole", "regoper"}
_OID_TYPES = {"oid", "xid", "cid", "tid", "regoperator", "regconfig", "regdictionary"}
_TEXT_TYPES = {"name", "char", '"char"', "bpchar", "text", "varchar", "character varying", "aclitem"}
_OPERATORS: dict[str, type[exp.Expression]] = {
    "=": exp.EQ, "<>": exp.NEQ, "!=": exp.NEQ, "<": exp.LT, ">": exp.GT, "<=": exp.LTE, ">=": exp.GTE,
    "~": exp.RegexpLike, "~*": exp.RegexpILike, "~~": exp.Like, "~~*": exp.ILike,
}


def _type_name(to: exp.Expression) -> str:
    text = to.sql("postgres").lower().replace("pg_catalog.", "").strip()
    return text


def _literal_name(value: str) -> str:
    name = value.split(".")[-1]
    return name.strip('"')


_DUCK_TYPES = {
    "int2": "SMALLINT", "smallint": "SMALLINT", "int4": "INTEGER", "integer": "INTEGER", "int": "INTEGER",
    "int8": "BIGINT", "bigint": "BIGINT", "float4": "REAL", "real": "REAL", "float8": "DOUBLE",
    "double precision": "DOUBLE", "bool": "BOOLEAN", "boolean": "BOOLEAN", "numeric": "DECIMAL(38, 10)",
    "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "bytea": "BLOB",
    **{name: "BIGINT" for name in _OID_TYPES},
    **{name: "VARCHAR" for name in _TEXT_TYPES},
}


def _rewrite_cast(node: exp.Cast) -> exp.Expression:
    name = _type_name(node.to)
    inner = node.this
    is_array = name.endswith(("_array_", "[]"))
    base = name.removesuffix("_array_").removesuffix("[]").strip()
    if base in _REGCASTS and not is_array:
        kind = {"regprocedure": "regproc"}.get(base, base)
        if isinstance(inner, exp.Parameter) and kind in ("regclass", "regtype", "regnamespace"):
            return exp.Anonymous(this=f"pg_{kind}_oid", expressions=[inner])
        if isinstance(inner, exp.Literal) and inner.is_string:
            if kind in ("regproc", "regrole", "regoper"):
                return exp.Literal.string(_literal_name(inner.this))
            return exp.Anonymous(this=f"pg_{kind}_oid", expressions=[exp.Literal.string(_literal_name(inner.this))])
        if kind in ("regclass", "regtype", "regnamespace"):
            return exp.Anonymous(this=f"pg_{kind}_name", expressions=[inner])
        return exp.cast(inner, "VARCHAR")
    target = "BIGINT" if base in _REGCASTS else _DUCK_TYPES.get(base)
    if target is None:
        return node
    return exp.cast(inner, f"{target}[]" if is_array else target, dialect="duckdb")


def _rewrite_operator(node: exp.Operator) -> exp.Expression:
    op = str(node.args.get("operator", "")).replace("pg_catalog.", "").strip()
    negate = op.startswith("!") and op not in ("!=",)
    cls = _OPERATORS.get(op[1:] if negate else op)
    if cls is None:
        return node
    built = cls(this=node.this, expression=node.expression)
    return exp.Not(this=built) if negate else built


class Rewriter:
    """Rewrites one parsed PostgreSQL catalog query into DuckDB SQL for the shadow."""

    def __init__(self, session: SessionValues) -> None:
        self.session = session

    def _function(self, name: str, args: list[exp.Expression]) -> exp.Expression | None:
        s = self.session
        if name in ("current_database", "current_catalog"):
            return exp.Literal.string(s.database)
        if name == "current_schema":
            return exp.Literal.string("public")
        if name in ("current_user", "session_user", "user", "current_role"):
            return exp.Literal.string(s.user)
        if name == "current_schemas":
            return exp.Array(expressions=[exp.Literal.string("pg_catalog"), exp.Literal.string("public")])
        if name == "pg_backend_pid":
            return exp.Literal.number(s.process_id)
        if name == "current_setting" and args:
            if not isinstance(args[0], exp.Literal):
                return exp.Anonymous(this="pg_setting_value", expressions=[args[0]])
            value = s.settings.get(str(args[0].this).lower())
            return exp.Literal.string(value) if value is not None else exp.Null()
        if name in ("json_build_object", "jsonb_build_object"):
            return exp.Anonymous(this="json_object", expressions=args)
        if name in ("inet_server_addr", "inet_client_addr", "inet_server_port", "inet_client_port"):
            return exp.Null()
        return None

    def _node(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            db = node.db.lower()
            if not isinstance(node.this, exp.Identifier):
                node.set("db", None)
            elif db == "information_schema":
                node.set("db", exp.to_identifier("infoschema"))
            elif db in ("pg_catalog", "") and node.name.lower() in PG_CATALOG:
                node.set("db", exp.to_identifier("pgcat"))
            node.set("catalog", None)
            return node
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
                and node.this.name.lower() == "pg_catalog" and isinstance(node.expression, (exp.Func, exp.Anonymous)):
            return self._node(node.expression)
        if isinstance(node, (exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentUser, exp.SessionUser)):
            key = {exp.CurrentDatabase: "current_database", exp.CurrentSchema: "current_schema",
                   exp.CurrentUser: "current_user", exp.SessionUser: "session_user"}[type(node)]
            return self._function(key, []) or node
        if isinstance(node, exp.Anonymous):
            replaced = self._function(str(node.this).lower(), list(node.expressions))
            return replaced if replaced is not None else node
        if isinstance(node, exp.Column) and node.args.get("db") is not None:
            schema = {"pg_catalog": "pgcat", "information_schema": "infoschema"}.get(node.text("db").lower())
            if schema:
                node.set("db", exp.to_identifier(schema))
            return node
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in (
                "current_user", "session_user", "current_catalog", "current_role", "user", "current_schema"):
            if not node.this.quoted:
                return self._function(node.name.lower(), []) or node
        if isinstance(node, exp.Cast):
            return _rewrite_cast(node)
        if isinstance(node, exp.Operator):
            return _rewrite_operator(node)
        if isinstance(node, exp.Collate):
            return node.this
        return node

    def rewrite(self, ast: exp.Expression) -> str:
        """DuckDB SQL for ``ast`` (left untouched); children are rewritten before parents."""
        tree = ast.copy()
        _name_outputs(tree)
        for node in reversed(list(tree.walk(bfs=False))):
            new = self._node(node)
            if new is not node:
                if node is tree:
                    tree = new
                else:
                    node.replace(new)
        return tree.sql(dialect="duckdb")


def output_name(node: exp.Expression) -> str:
    """The column name PostgreSQL gives an unaliased select-list expression."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Dot) and isinstance(node.expression, (exp.Func, exp.Anonymous)):
        return output_name(node.expression)
    if isinstance(node, exp.Cast):
        inner = output_name(node.this)
        return _type_name(node.to).split(".")[-1] if inner == "?column?" else inner
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, (exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentUser, exp.SessionUser)):
        return {exp.CurrentDatabase: "current_database", exp.CurrentSchema: "current_schema",
                exp.CurrentUser: "current_user", exp.SessionUser: "session_user"}[type(node)]
    if isinstance(node, exp.Func):
        name = node.sql_name().lower()
        return {"current_version": "version"}.get(name, name)
    return "?column?"


def _name_outputs(tree: exp.Expression) -> None:
    """Alias each unnamed output column of the outermost SELECT(s) the way PostgreSQL names it."""
    selects = [tree] if isinstance(tree, exp.Select) else list(tree.find_all(exp.Select))[:1]
    for select in selects:
        for item in list(select.expressions):
            if isinstance(item, (exp.Alias, exp.Star)) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                continue
            item.replace(exp.alias_(item.copy(), output_name(item), quoted=True))


def schema_from_config(tables: Mapping[str, Any]) -> dict[str, dict[str, pgt.PgType]]:
    """Wire types of every configured table's columns (from ``engine.config.tables``)."""
    return {
        name: {col: pgt.CONFIG_TYPES.get(meta.type, pgt.TEXT) for col, meta in table.columns.items()}
        for name, table in tables.items()
    }
