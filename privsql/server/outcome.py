"""What one statement produced, in wire terms: columns, rows, command tag, notices."""

from __future__ import annotations

from dataclasses import dataclass, field

from privsql.results import PrivacyReport
from privsql.server.types import PgType


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType


@dataclass
class Outcome:
    """The answer to one statement.

    ``columns`` is None for statements that return no rows (SET, BEGIN): they
    get NoData on Describe and no RowDescription on a simple Query.
    """

    tag: str
    columns: list[Column] | None = None
    rows: list[tuple] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    privacy: PrivacyReport | None = None
    #: ParameterStatus updates for the client (SET of a reported setting)
    parameter_status: dict[str, str] = field(default_factory=dict)


def rows_tag(verb: str, count: int) -> str:
    return f"{verb} {count}"
