"""Per-analyst privacy budgets: ``open_store`` picks the SQLite or PostgreSQL store."""

from __future__ import annotations

import os

from privsql.accounting.store import BudgetStore, Cost, LedgerEntry, Limits, Spent

__all__ = ["BudgetStore", "Cost", "LedgerEntry", "Limits", "Spent", "open_store"]


def open_store(kind: str, path: str | os.PathLike[str] | None = None, dsn: str | None = None, *,
               schema: str = "privsql") -> BudgetStore:
    """Open the budget store of ``kind`` 'sqlite' (at ``path``) or 'postgres' (at ``dsn``).

    Creates the schema on first use; raises BudgetStoreError if the store
    cannot be opened and ValueError for a bad kind or a missing path/dsn.
    """
    if kind == "sqlite":
        if path is None:
            raise ValueError("a sqlite budget store needs a path")
        from privsql.accounting.sqlite_store import SqliteBudgetStore

        return SqliteBudgetStore(path)
    if kind == "postgres":
        if dsn is None:
            raise ValueError("a postgres budget store needs a dsn")
        from privsql.accounting.postgres_store import PostgresBudgetStore

        return PostgresBudgetStore(dsn, schema=schema)
    raise ValueError(f"budget store kind must be 'sqlite' or 'postgres', not {kind!r}")
