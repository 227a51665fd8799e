"""The narrow interface every backing database implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from sqlglot import exp

from privsql.config import TableMeta
from privsql.errors import UnsupportedQuery
from privsql.results import OutputColumn
from privsql.sql.prepare import SqlTarget


class Backend(ABC):
    """Runs rewritten queries. Only exact clamped aggregates ever come back from it."""

    target: SqlTarget

    @abstractmethod
    def table_ref(self, table: TableMeta) -> exp.Table:
        """How the rewrite names a configured table in this backend."""

    @abstractmethod
    def run(self, sql: str, *, timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Execute one read-only query and return all rows. Raises BackendError / QueryCanceled."""

    def run_with_columns(self, sql: str, *, timeout: float | None = None
                         ) -> tuple[list[OutputColumn], list[tuple[Any, ...]]]:
        """Run a query over public tables only, returning typed columns (exact answers)."""
        raise UnsupportedQuery(f"queries on public tables alone are not supported on the {type(self).__name__}")

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""
