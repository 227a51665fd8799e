"""Golden transcripts: the proxy's replies to startup and catalog queries have real PostgreSQL 15's shape.

Runs the same statements against PostgreSQL at 127.0.0.1:5432 (trust, user
postgres, db test) and against the proxy, comparing column names, column type
categories and command tags (values differ: the proxy lists the configured
tables, PostgreSQL its own). Skips locally without PostgreSQL, fails in CI.
"""

from __future__ import annotations

import psycopg
import pytest
from wire_helpers import RunningServer, need

pytestmark = pytest.mark.postgres

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3 sslmode=disable"

PSQL_DT = """SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"""

PSQL_L = """SELECT d.datname as "Name",
       pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
       pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
       d.datcollate as "Collate",
       d.datctype as "Ctype",
       d.daticulocale as "ICU Locale",
       CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS "Locale Provider",
       pg_catalog.array_to_string(d.datacl, E'\\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1;"""

PSQL_D_LOOKUP = """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(people)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;"""

STATEMENTS = {
    "select 1": "SELECT 1",
    "version": "SELECT version()",
    "pg_catalog.version": "select pg_catalog.version()",
    "current_schema": "select current_schema()",
    "current_database": "SELECT current_database()",
    "show standard_conforming_strings": "show standard_conforming_strings",
    "show transaction isolation level": "show transaction isolation level",
    "psql \\dt": PSQL_DT,
    "psql \\l": PSQL_L,
    "psql \\d lookup": PSQL_D_LOOKUP,
    "hstore probe": "SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid WHERE typname = 'hstore'",
    "information_schema.tables": "SELECT table_schema, table_name, table_type FROM information_schema.tables WHERE table_schema = 'public'",
    "begin": "BEGIN",
    "set": "SET extra_float_digits = 3",
    "commit": "COMMIT",
}

_CATEGORY = {16: "bool", 18: "text", 19: "text", 25: "text", 1043: "text", 20: "int", 21: "int", 23: "int",
             26: "int", 700: "float", 701: "float", 1700: "numeric"}


def _shape(conn: psycopg.Connection, sql: str) -> tuple:
    cur = conn.execute(sql)
    cols = tuple((d.name, _CATEGORY.get(d.type_code, str(d.type_code))) for d in cur.description or ())
    return cols, (cur.statusmessage or "").split()[0]


@pytest.fixture(scope="module")
def postgres() -> psycopg.Connection:
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError:
        need(False, "PostgreSQL 15 at 127.0.0.1:5432")
    yield conn
    conn.close()


def test_startup_parameter_status_matches(postgres: psycopg.Connection, server: RunningServer) -> None:
    wanted = {"server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
              "integer_datetimes", "standard_conforming_strings", "application_name", "is_superuser",
              "session_authorization", "default_transaction_read_only", "in_hot_standby"}
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for name in wanted:
            assert (conn.info.parameter_status(name) is None) == (postgres.info.parameter_status(name) is None), name
        assert conn.info.server_version // 10000 == postgres.info.server_version // 10000
        assert conn.info.backend_pid > 0


@pytest.mark.parametrize("title", list(STATEMENTS))
def test_catalog_reply_shape_matches(postgres: psycopg.Connection, server: RunningServer, title: str) -> None:
    sql = STATEMENTS[title]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert _shape(conn, sql) == _shape(postgres, sql)
