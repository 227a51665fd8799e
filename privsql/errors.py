"""One error hierarchy for privsql, each class carrying its SQLSTATE.

The wire server turns these into ErrorResponses and the DB-API driver maps
them onto PEP 249 exception classes; both read ``sqlstate`` from here, so the
two front ends can never disagree on a code.

Budget exhaustion uses class 53 (insufficient resources): SQLSTATE ``53400``
(``configuration_limit_exceeded``) — the analyst's configured privacy budget is
the limit that was hit.
"""

from __future__ import annotations


class PrivsqlError(Exception):
    """Base class. ``sqlstate`` is the PostgreSQL error code sent on the wire."""

    sqlstate: str = "XX000"
    #: wire severity: ERROR for query-level failures, FATAL closes the session
    severity: str = "ERROR"

    def __init__(self, message: str, *, position: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: 1-based character position in the query text, when known
        self.position = position
        self.hint = hint


class ConfigError(PrivsqlError):
    """The YAML configuration is invalid; the message names the key and line."""

    sqlstate = "F0000"


class QuerySyntaxError(PrivsqlError):
    """The SQL text does not parse."""

    sqlstate = "42601"


class UnsupportedQuery(PrivsqlError):
    """Valid SQL that privsql does not answer (yet): feature not supported."""

    sqlstate = "0A000"


class PrivacyRefused(PrivsqlError):
    """privsql will not answer: the query would reveal individuals or is unbounded."""

    sqlstate = "42501"


class UndefinedTable(PrivsqlError):
    sqlstate = "42P01"


class UndefinedColumn(PrivsqlError):
    sqlstate = "42703"


class DatatypeMismatch(PrivsqlError):
    sqlstate = "42804"


class InvalidParameter(PrivsqlError):
    """A bad ε/δ or bound parameter, or a bad query parameter value."""

    sqlstate = "22023"


class InvalidDatetimeFormat(PrivsqlError):
    """A date/time literal or format (TO_DATE, TO_TIMESTAMP) that cannot be read."""

    sqlstate = "22007"


class BudgetExhausted(PrivsqlError):
    """The analyst's remaining privacy budget cannot pay for the query."""

    sqlstate = "53400"


class UnknownAnalyst(PrivsqlError):
    sqlstate = "28000"


class QueryCanceled(PrivsqlError):
    """The query was cancelled or hit its timeout (budget stays spent)."""

    sqlstate = "57014"


class BackendError(PrivsqlError):
    """The backing database failed while running a reserved query.

    The budget reserved for the query stays spent: the data may already have
    been read, and a refund could leak whether it was.
    """

    sqlstate = "58000"


class BudgetStoreError(PrivsqlError):
    """The budget store could not be read or written; the query is refused."""

    sqlstate = "58030"


class StatementTooLarge(PrivsqlError):
    """The statement text is longer than the configured limit (program_limit_exceeded)."""

    sqlstate = "54000"


class StatementTooComplex(QuerySyntaxError):
    """The statement is nested too deeply, or takes too long, to parse (statement_too_complex).

    A QuerySyntaxError to callers that catch those; its own SQLSTATE on the wire and in DB-API."""

    sqlstate = "54001"


class TooManyStatements(PrivsqlError):
    """The analyst already runs as many statements at once as the server allows."""

    sqlstate = "53300"
