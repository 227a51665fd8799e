"""Plain result types shared by the engine and every front end (CLI, DB-API, wire)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Output column types privsql reports. Front ends map them to their own type
#: systems (the wire server to PostgreSQL OIDs, the DB-API driver to type objects).
#: 'bigint' int8, 'double' float8, 'numeric', 'text', 'boolean', 'date', 'timestamp'.
COLUMN_TYPES = ("bigint", "double", "numeric", "text", "boolean", "date", "timestamp")


@dataclass(frozen=True)
class OutputColumn:
    name: str
    type: str  # one of COLUMN_TYPES


@dataclass(frozen=True)
class ColumnAccuracy:
    """How noisy one output column is.

    ``scale`` is the noise scale of the released value (Laplace b, Gaussian σ);
    ``ci95`` the half-width of a 95% confidence interval around the released
    value (for derived columns like AVG, an approximation stated as such by
    ``approximate``). Group-key columns have mechanism 'none'.
    """

    column: str
    mechanism: str  # 'laplace' | 'gaussian' | 'none' | 'post-processing'
    scale: float | None = None
    ci95: float | None = None
    approximate: bool = False


@dataclass(frozen=True)
class PrivacyReport:
    """What one answered query cost and what is left."""

    analyst: str
    epsilon: float
    delta: float
    epsilon_remaining: float
    delta_remaining: float
    columns: tuple[ColumnAccuracy, ...] = ()
    cached: bool = False  # True: a free repeat of an earlier answer
    #: per row, the 95% CI half-width of each cell (None where the cell is not noisy, NULL, or has no CI)
    cell_ci: tuple[tuple[float | None, ...], ...] = ()
    notes: tuple[str, ...] = ()  # e.g. why some cells are NULL


@dataclass
class QueryResult:
    columns: list[OutputColumn]
    rows: list[tuple]
    privacy: PrivacyReport | None = None  # None for statements that touch no private data
    notices: list[str] = field(default_factory=list)
    #: per row, the 95% CI half-width of each cell (None where the cell is not noisy or unknown)
    cell_ci: list[tuple[float | None, ...]] | None = None
