"""SQLAlchemy 2 dialect for privsql's embedded DB-API driver (:mod:`privsql.dbapi`).

    engine = create_engine("privsql:///config/privsql.yaml?analyst=alice")
    pandas.read_sql("SELECT sex, COUNT(*) AS n FROM people GROUP BY sex", engine)

URL rule (the same as SQLAlchemy's ``sqlite://`` URLs): what follows
``privsql://`` and one more slash is the config file path, so three slashes give
a path relative to the working directory (``privsql:///config/privsql.yaml``)
and four an absolute one (``privsql:////srv/privsql/privsql.yaml``).
``privsql://`` alone uses ``$PRIVSQL_CONFIG``, else ``config/privsql.yaml``.
Query options: ``analyst``, ``epsilon``, ``delta`` (the per-query budget of each
connection). A host, port, user or password is refused: those belong to a
``privsql serve`` server.

SQL is compiled by SQLAlchemy's PostgreSQL compiler (privsql parses PostgreSQL
SQL), with ``pyformat`` parameters that the driver binds into the parsed tree.
Reflection is answered from the config's table metadata: every configured table
in schema ``public``; no primary keys, foreign keys or indexes (privsql never
returns rows, so there is nothing to key). Read-only: ``commit``/``rollback``
are no-ops and the isolation level is reported as AUTOCOMMIT, since every query
is charged when it runs and a rollback never refunds it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from sqlalchemy import exc
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import base as pg
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import default, interfaces, reflection
from sqlalchemy.engine.interfaces import IsolationLevel
from sqlalchemy.engine.url import URL

#: config column types → SQLAlchemy types
COLUMN_TYPES: dict[str, type[sqltypes.TypeEngine[Any]]] = {
    "int": pg.BIGINT,
    "float": pg.DOUBLE_PRECISION,
    "text": pg.TEXT,
    "bool": pg.BOOLEAN,
    "date": pg.DATE,
    "timestamp": pg.TIMESTAMP,
}
SCHEMA = "public"
_URL_OPTIONS = ("analyst", "epsilon", "delta")


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise exc.ArgumentError(f"privsql URL option {name} must be a number, not {value!r}") from None


class PrivsqlDialect(pg.PGDialect):
    """``privsql://``: the PostgreSQL dialect's SQL compiler over the embedded privsql driver."""

    name = "privsql"
    driver = "privsql"
    supports_statement_cache = True
    default_paramstyle = "pyformat"
    bind_typing = interfaces.BindTyping.NONE  # no '::VARCHAR' casts: the driver binds typed literals
    supports_server_side_cursors = False
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    supports_comments = True
    inspector = reflection.Inspector  # type: ignore[assignment]  # the generic one: PGInspector reads pg_catalog

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        from privsql import dbapi

        return dbapi

    def create_connect_args(self, url: URL) -> interfaces.ConnectArgsType:
        if url.host or url.port or url.username or url.password:
            raise exc.ArgumentError(
                "a privsql:// URL names a config file (privsql:///relative/path.yaml or "
                "privsql:////absolute/path.yaml); to reach a privsql server use a postgresql:// URL")
        opts: dict[str, Any] = {}
        if url.database:
            opts["config"] = url.database
        for key, value in url.query.items():
            if key not in _URL_OPTIONS:
                raise exc.ArgumentError(f"unknown privsql URL option {key!r}; known: {', '.join(_URL_OPTIONS)}")
            if isinstance(value, tuple):
                raise exc.ArgumentError(f"privsql URL option {key} is given more than once")
            opts[key] = value if key == "analyst" else _number(key, value)
        return [], opts

    # ------------------------------------------------------------ session: nothing to ask a server
    def initialize(self, connection: Any) -> None:
        default.DefaultDialect.initialize(self, connection)

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        return (16, 0)  # the PostgreSQL dialect whose SQL privsql parses

    def _get_default_schema_name(self, connection: Any) -> str:
        return SCHEMA

    def _set_backslash_escapes(self, connection: Any) -> None:
        self._backslash_escapes = False

    def get_isolation_level_values(self, dbapi_conn: Any) -> list[IsolationLevel]:
        return ["AUTOCOMMIT", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "READ UNCOMMITTED"]

    def get_isolation_level(self, dbapi_connection: Any) -> IsolationLevel:
        return "AUTOCOMMIT"

    def set_isolation_level(self, dbapi_connection: Any, level: IsolationLevel) -> None:
        pass  # read-only: every level behaves the same

    def get_readonly(self, connection: Any) -> bool:
        return True

    def set_readonly(self, connection: Any, value: bool) -> None:
        pass

    def get_deferrable(self, connection: Any) -> bool:
        return False

    def set_deferrable(self, connection: Any, value: bool) -> None:
        pass

    # ------------------------------------------------------------ reflection from the config
    @staticmethod
    def _tables(connection: Any) -> dict[str, Any]:
        return connection.connection.dbapi_connection.tables()  # type: ignore[no-any-return]

    def _table(self, connection: Any, table_name: str, schema: str | None) -> Any:
        table = self._tables(connection).get(table_name.lower()) if schema in (None, SCHEMA) else None
        if table is None:
            raise exc.NoSuchTableError(f"{schema}.{table_name}" if schema else table_name)
        return table

    def get_schema_names(self, connection: Any, **kw: Any) -> list[str]:
        return [SCHEMA]

    def has_schema(self, connection: Any, schema_name: str, **kw: Any) -> bool:  # type: ignore[override]
        return schema_name == SCHEMA

    def get_table_names(self, connection: Any, schema: str | None = None, **kw: Any) -> list[str]:
        return sorted(self._tables(connection)) if schema in (None, SCHEMA) else []

    def has_table(self, connection: Any, table_name: str, schema: str | None = None, **kw: Any) -> bool:
        self._ensure_has_table_connection(connection)
        return schema in (None, SCHEMA) and table_name.lower() in self._tables(connection)

    def get_columns(self, connection: Any, table_name: str, schema: str | None = None,
                    **kw: Any) -> list[interfaces.ReflectedColumn]:
        table = self._table(connection, table_name, schema)
        return [
            {"name": c.name, "type": COLUMN_TYPES.get(c.type, pg.TEXT)(), "nullable": True, "default": None,
             "autoincrement": False, "comment": _column_comment(table, c)}
            for c in table.columns.values()
        ]

    def get_table_comment(self, connection: Any, table_name: str, schema: str | None = None,
                          **kw: Any) -> interfaces.ReflectedTableComment:
        table = self._table(connection, table_name, schema)
        if not table.is_private:
            return {"text": "public table (never charged)"}
        return {"text": f"private: privacy unit {table.privacy_unit}; a person counts in at most "
                        f"{table.max_groups} group(s) with at most {table.max_rows} row(s) each"}

    def get_pk_constraint(self, connection: Any, table_name: str, schema: str | None = None,
                          **kw: Any) -> interfaces.ReflectedPrimaryKeyConstraint:
        self._table(connection, table_name, schema)
        return {"constrained_columns": [], "name": None}

    def get_foreign_keys(self, connection: Any, table_name: str, schema: str | None = None,
                         **kw: Any) -> list[interfaces.ReflectedForeignKeyConstraint]:
        self._table(connection, table_name, schema)
        return []

    def get_indexes(self, connection: Any, table_name: str, schema: str | None = None,
                    **kw: Any) -> list[interfaces.ReflectedIndex]:
        self._table(connection, table_name, schema)
        return []

    def get_unique_constraints(self, connection: Any, table_name: str, schema: str | None = None,
                               **kw: Any) -> list[interfaces.ReflectedUniqueConstraint]:
        self._table(connection, table_name, schema)
        return []

    def get_check_constraints(self, connection: Any, table_name: str, schema: str | None = None,
                              **kw: Any) -> list[interfaces.ReflectedCheckConstraint]:
        self._table(connection, table_name, schema)
        return []

    def get_table_options(self, connection: Any, table_name: str, schema: str | None = None,
                          **kw: Any) -> dict[str, Any]:
        self._table(connection, table_name, schema)
        return {}

    def _empty(self, connection: Any, schema: str | None = None, **kw: Any) -> list[str]:
        return []

    get_view_names = get_materialized_view_names = get_temp_table_names = _empty
    get_temp_view_names = get_sequence_names = _empty

    def has_sequence(self, connection: Any, sequence_name: str, schema: str | None = None, **kw: Any) -> bool:
        return False

    def has_type(self, connection: Any, type_name: str, schema: str | None = None, **kw: Any) -> bool:
        return False

    # the generic multi-table reflection, over the single-table methods above
    has_multi_table = default.DefaultDialect.has_multi_table
    get_multi_columns = default.DefaultDialect.get_multi_columns  # type: ignore[assignment]
    get_multi_pk_constraint = default.DefaultDialect.get_multi_pk_constraint  # type: ignore[assignment]
    get_multi_foreign_keys = default.DefaultDialect.get_multi_foreign_keys  # type: ignore[assignment]
    get_multi_indexes = default.DefaultDialect.get_multi_indexes  # type: ignore[assignment]
    get_multi_unique_constraints = default.DefaultDialect.get_multi_unique_constraints  # type: ignore[assignment]
    get_multi_check_constraints = default.DefaultDialect.get_multi_check_constraints  # type: ignore[assignment]
    get_multi_table_comment = default.DefaultDialect.get_multi_table_comment  # type: ignore[assignment]
    get_multi_table_options = default.DefaultDialect.get_multi_table_options  # type: ignore[assignment]


def _column_comment(table: Any, column: Any) -> str | None:
    notes = []
    if column.name == table.privacy_unit:
        notes.append("privacy unit (usable in COUNT(DISTINCT ...) only)")
    if column.lower is not None and column.upper is not None:
        notes.append(f"bounds [{column.lower:g}, {column.upper:g}]")
    if column.values is not None:
        notes.append(f"public domain of {len(column.values)} values")
    return "; ".join(notes) or None


class PrivsqlRemoteDialect(PGDialect_psycopg):
    """``privsql+remote://alice:secret@host:5433/privsql``: SQLAlchemy's psycopg 3 dialect, pointed at a
    running ``privsql serve`` (whose shadow catalog answers its reflection queries). The same as a
    ``postgresql+psycopg://`` URL; errors arrive as psycopg exceptions carrying the same SQLSTATEs
    as :mod:`privsql.dbapi`'s."""

    supports_statement_cache = True


dialect = PrivsqlDialect

__all__ = ["COLUMN_TYPES", "PrivsqlDialect", "PrivsqlRemoteDialect", "dialect"]
