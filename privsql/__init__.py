"""privsql: a differential-privacy SQL proxy.

``privsql.connect(...)`` is the PEP 249 driver (see privsql.dbapi).
"""

from privsql.dbapi import (  # noqa: F401 - PEP 249: privsql.connect(...)
    BudgetExhausted,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PrivacyRefused,
    ProgrammingError,
    Warning,
    apilevel,
    connect,
    paramstyle,
    threadsafety,
)

__version__ = "0.1.0"
