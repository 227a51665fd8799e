"""PostgreSQL connection strings in messages."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (never its password)."""
    try:
        d = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable dsn)"
    return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', d.get('user', ''))}"
