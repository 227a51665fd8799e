"""Plan-time folding of date/time functions into DATE / TIMESTAMP literals.

BI tools filter on time with ``TO_DATE('2025-12-03', 'YYYY-MM-DD')``,
``TO_TIMESTAMP('... 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')``,
``CURRENT_DATE`` and ``NOW()``. Each is evaluated here, once, from literal
arguments and the clock (UTC), never from data; the result is an ordinary
literal that the validator checks as usual. Anything else is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable

from sqlglot import exp

from privsql.errors import InvalidDatetimeFormat, PrivacyRefused, UnsupportedQuery
from privsql.sql.parse import literal_for

Clock = Callable[[], dt.datetime]

#: strftime codes sqlglot maps the supported PostgreSQL patterns to (YYYY MM DD HH24 MI SS US), plus
#: MS (milliseconds, which sqlglot leaves as is) and separators
_FORMAT = re.compile(r"(?:%[YmdHMSf]|MS|[-/:. T,])+")
#: statement text that may call the clock (plans of such statements are not cached)
CLOCK_WORDS = re.compile(r"current_date|current_timestamp|localtimestamp|now\s*\(", re.IGNORECASE)


def utc_now() -> dt.datetime:
    """The current UTC time without a time zone (the clock CURRENT_DATE and NOW() read)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _literal_text(node: exp.Expression | None, func: str) -> str:
    """A string literal argument's text; refuse anything else (a column would make it row data)."""
    if not isinstance(node, exp.Literal) or not node.is_string:
        raise PrivacyRefused(f"{func}() is allowed only on string literals, e.g. {func}('2025-12-03', "
                             "'YYYY-MM-DD'): it is evaluated once when the query is planned")
    return node.this


def _parse(text: str, fmt: str, func: str) -> dt.datetime:
    """``text`` read with a supported (sqlglot-translated) format."""
    if not _FORMAT.fullmatch(fmt):
        raise UnsupportedQuery(f"{func}() format is not supported: use YYYY, MM, DD, HH24, MI, SS, US or MS "
                               "with - / : . or space between them")
    try:
        return dt.datetime.strptime(text.strip(), fmt.replace("MS", "%f"))
    except ValueError:
        raise InvalidDatetimeFormat(f"invalid value for {func}(): {text!r} does not match its format") from None


def _no_args(node: exp.Expression, func: str) -> None:
    """Refuse CURRENT_TIMESTAMP(p) and similar forms with arguments."""
    if any(node.args.get(k) is not None for k in node.args):
        raise UnsupportedQuery(f"{func} with arguments is not supported; use {func} alone")


def _fold(node: exp.Expression, now: dt.datetime) -> exp.Expression:
    """One node → its literal value, or the node unchanged."""
    if isinstance(node, exp.StrToDate):
        text = _literal_text(node.this, "to_date")
        return literal_for(_parse(text, _literal_text(node.args.get("format"), "to_date"), "to_date").date())
    if isinstance(node, exp.StrToTime):
        text = _literal_text(node.this, "to_timestamp")
        return literal_for(_parse(text, _literal_text(node.args.get("format"), "to_timestamp"), "to_timestamp"))
    if isinstance(node, exp.CurrentDate):
        _no_args(node, "CURRENT_DATE")
        return literal_for(now.date())
    if isinstance(node, (exp.CurrentTimestamp, exp.Localtimestamp)):
        _no_args(node, "CURRENT_TIMESTAMP")
        return literal_for(now)
    return node


def fold_datetime(tree: exp.Expression, clock: Clock = utc_now) -> exp.Expression:
    """A new tree with TO_DATE / TO_TIMESTAMP of literals, CURRENT_DATE and NOW() replaced by literals."""
    if not any(isinstance(n, (exp.StrToDate, exp.StrToTime, exp.CurrentDate, exp.CurrentTimestamp,
                              exp.Localtimestamp)) for n in tree.walk()):
        return tree
    now = clock()
    return tree.copy().transform(lambda node: _fold(node, now))
