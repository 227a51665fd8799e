"""SQL text → one sqlglot tree, with query parameters bound as literals.

Parameters are substituted into the *parsed tree* as typed literal nodes, never
spliced into the SQL text, so a parameter value can never change the shape of
the query (no injection through parameters).

Parsing is bounded before and while it runs (sqlglot's parser is recursive and
backtracks): the text is at most ``MAX_STATEMENT_BYTES`` and ``MAX_TOKENS``
(54000, checked without tokenizing), its tokens nest at most ``MAX_NESTING``
levels and its tree is at most ``MAX_TREE_DEPTH`` deep (54001), and parsing
stops after ``PARSE_TIME_LIMIT`` seconds (54001) or when the statement is
cancelled (57014, see :mod:`privsql.cancel`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import Token, TokenType

from privsql.cancel import TimeLimitExceeded, interruptible
from privsql.errors import (
    InvalidParameter,
    QuerySyntaxError,
    StatementTooComplex,
    StatementTooLarge,
    UnsupportedQuery,
)

INPUT_DIALECT = "postgres"
#: longest statement text accepted, in UTF-8 bytes (the wire server may set a lower limit)
MAX_STATEMENT_BYTES = 1 << 20
#: most tokens (words, numbers, symbols; counted before parsing) a statement may have: parsing
#: costs ~25 µs and several Python objects per token, which the garbage collector must then walk
MAX_TOKENS = 20_000
#: nesting levels (parentheses, CASE, prefix NOT/-) a statement may have: sqlglot's parser uses
#: about 25 Python frames per level, so this keeps it far from the recursion limit
MAX_NESTING = 32
#: ARRAY[...] parsing backtracks (time doubles per level): a bracket counts as this many levels
BRACKET_WEIGHT = 3
#: deepest parsed tree accepted: validation, rewriting and SQL generation recurse over it
MAX_TREE_DEPTH = 100
#: seconds tokenizing and parsing one statement may take
PARSE_TIME_LIMIT = 2.0

_OPEN = {TokenType.L_PAREN: 1, TokenType.L_BRACKET: BRACKET_WEIGHT, TokenType.L_BRACE: 1, TokenType.CASE: 1}
_CLOSE = {TokenType.R_PAREN: 1, TokenType.R_BRACKET: BRACKET_WEIGHT, TokenType.R_BRACE: 1, TokenType.END: 1}
_PREFIX = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})
TOO_DEEP = "statement too complex: it is nested too deeply"


def _offset(sql: str, line: int | None, col: int | None) -> int | None:
    """1-based character position from sqlglot's 1-based line / column."""
    if not line or col is None:
        return None
    lines = sql.split("\n")
    before = sum(len(x) + 1 for x in lines[: line - 1])
    return max(1, min(len(sql), before + col))


def _unterminated(sql: str) -> tuple[int | None, str | None]:
    """Where an unterminated string, quoted name or comment starts (1-based), for tokenizer errors."""
    i, n = 0, len(sql)
    while i < n:
        two = sql[i:i + 2]
        if two == "--":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif two == "/*":
            end = sql.find("*/", i + 2)
            if end < 0:
                return i + 1, "unterminated comment"
            i = end + 2
        elif sql[i] in "'\"":
            quote, j = sql[i], i + 1
            while j < n and not (sql[j] == quote and sql[j + 1:j + 2] != quote):
                j += 2 if sql[j] == quote else 1
            if j >= n:
                return i + 1, "unterminated quoted string" if quote == "'" else "unterminated quoted identifier"
            i = j + 1
        else:
            i += 1
    return None, None


def check_size(sql: str, limit: int = MAX_STATEMENT_BYTES) -> None:
    """Refuse a statement longer than ``limit`` UTF-8 bytes or with more than MAX_TOKENS tokens (54000)."""
    data = sql.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise StatementTooLarge(f"statement too large: {len(data):,} bytes (the limit is {limit:,})",
                                hint="send a shorter statement, e.g. fewer IN-list values")
    tokens = estimated_tokens(data)
    if tokens > MAX_TOKENS:
        raise StatementTooLarge(f"statement too large: about {tokens:,} tokens (the limit is {MAX_TOKENS:,})",
                                hint="send a shorter statement, e.g. fewer IN-list values")


def _byte_class(member: Callable[[int], bool]) -> bytes:
    """A bytes.translate table mapping member bytes to 1 and the others to 0."""
    return bytes(1 if member(b) else 0 for b in range(256))


#: bytes of names and numbers (every byte of a multi-byte UTF-8 character counts as one), and blanks
_WORD_BYTES = _byte_class(lambda b: b >= 128 or chr(b).isalnum() or chr(b) in "_$.")
_OTHER_BYTES = _byte_class(lambda b: not (b >= 128 or chr(b).isalnum() or chr(b) in "_$." or chr(b).isspace()))


def estimated_tokens(data: bytes) -> int:
    """An upper bound on a statement's tokens without tokenizing it (~2 ms per MB): runs of
    name/number bytes count once, every other non-blank byte counts once."""
    if len(data) <= MAX_TOKENS:
        return len(data)
    word = np.frombuffer(data.translate(_WORD_BYTES), dtype=bool)
    runs = int(word[0]) + int(np.count_nonzero(word[1:] > word[:-1]))
    return runs + data.translate(_OTHER_BYTES).count(1)


def nesting_depth(tokens: Sequence[Token]) -> int:
    """How deeply the tokens nest: open brackets and CASEs, plus runs of prefix operators."""
    depth = deepest = run = 0
    for token in tokens:
        kind = token.token_type
        if kind in _PREFIX:
            run += 1
            deepest = max(deepest, depth + run)
            continue
        run = 0
        if kind in _OPEN:
            depth += _OPEN[kind]
            deepest = max(deepest, depth)
        elif kind in _CLOSE:
            depth = max(0, depth - _CLOSE[kind])
    return deepest


def tree_depth(tree: exp.Expression) -> int:
    """Depth of a parsed tree, computed without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return deepest


def _parse_bounded(sql: str, dialect: str) -> list[exp.Expression]:
    tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    if nesting_depth(tokens) > MAX_NESTING:
        raise StatementTooComplex(TOO_DEEP, hint=f"at most {MAX_NESTING} nested levels")
    trees = [t for t in Dialect.get_or_raise(dialect).parser().parse(tokens, sql) if t is not None]
    if any(tree_depth(t) > MAX_TREE_DEPTH for t in trees):
        raise StatementTooComplex(TOO_DEEP, hint=f"at most {MAX_TREE_DEPTH} nested operations, e.g. use IN (...) "
                                                 "instead of a long chain of OR")
    return trees


def parse_sql(sql: str, *, dialect: str = INPUT_DIALECT, max_bytes: int = MAX_STATEMENT_BYTES) -> list[exp.Expression]:
    """Parse SQL text within the size, nesting and time limits (sqlglot's errors pass through).

    Raises StatementTooLarge (54000), StatementTooComplex (54001) or, when the statement is
    cancelled meanwhile, QueryCanceled (57014)."""
    check_size(sql, max_bytes)
    try:
        return interruptible(lambda: _parse_bounded(sql, dialect), limit=PARSE_TIME_LIMIT)
    except TimeLimitExceeded:
        raise StatementTooComplex(f"statement too complex: parsing took longer than {PARSE_TIME_LIMIT:g} s",
                                  hint="send a shorter or simpler statement") from None
    except RecursionError:
        raise StatementTooComplex(TOO_DEEP) from None


def parse_statement(sql: str, *, dialect: str = INPUT_DIALECT) -> exp.Expression:
    """Parse exactly one SQL statement; refuse empty input and multiple statements."""
    if not isinstance(sql, str):
        raise QuerySyntaxError("the query must be a string")
    if "\x00" in sql:
        raise QuerySyntaxError("the query contains a NUL character")
    try:
        trees = parse_sql(sql, dialect=dialect)
    except ParseError as err:
        info = err.errors[0] if err.errors else {}
        desc = info.get("description") or str(err).split("\n")[0]
        near = info.get("highlight")
        msg = f"syntax error: {desc}" + (f" near '{near}'" if near else "")
        raise QuerySyntaxError(msg, position=_offset(sql, info.get("line"), info.get("col"))) from None
    except TokenError:
        position, what = _unterminated(sql)
        raise QuerySyntaxError(f"syntax error: {what}" if what else "syntax error: the query cannot be tokenized",
                               position=position) from None
    if not trees:
        raise QuerySyntaxError("empty query: send one SELECT statement")
    if len(trees) > 1:
        raise UnsupportedQuery("privsql answers one statement at a time; this text holds "
                               f"{len(trees)} statements")
    tree = trees[0]
    for node in tree.walk():  # comments carry no meaning, but would make `sex -- note` differ from `sex`
        node.comments = None
    # PostgreSQL rules: unquoted identifiers (names, aliases) fold to lower case
    return normalize_identifiers(tree, dialect=dialect)


def _placeholders(tree: exp.Expression) -> list[exp.Expression]:
    """Placeholders in the order they appear in the text (depth-first, left to right)."""
    return [n for n in tree.walk(bfs=False) if isinstance(n, (exp.Placeholder, exp.Parameter))]


def count_parameters(tree: exp.Expression) -> int:
    """How many parameters the statement takes ($n numbering or positional)."""
    nodes = _placeholders(tree)
    numbered = [_param_number(n) for n in nodes if _param_number(n) is not None]
    if numbered:
        return max(numbered)  # type: ignore[type-var]
    return len(nodes)


def _param_number(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Parameter):
        inner = node.this
        text = inner.name if isinstance(inner, exp.Expression) else str(inner)
        if text.isdigit():
            return int(text)
    return None


def _param_name(node: exp.Expression) -> str | None:
    """The name of a :name / %(name)s placeholder, None for positional ones."""
    if not isinstance(node, exp.Placeholder) or node.args.get("this") is None:
        return None
    return node.name


def literal_for(value: Any) -> exp.Expression:
    """A typed literal node for a Python parameter value."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParameter(f"parameter value {value!r} is not a finite number")
        return exp.Literal.number(repr(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidParameter(f"parameter value {value} is not a finite number")
        return exp.Literal.number(str(value))
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidParameter("parameter values cannot contain NUL characters")
        return exp.Literal.string(value)
    raise InvalidParameter(f"unsupported parameter type {type(value).__name__}; "
                           "use str, int, float, Decimal, bool, date, datetime or None")


def bind_parameters(tree: exp.Expression, params: Sequence[Any] | Mapping[str, Any] | None) -> exp.Expression:
    """Replace $n / %s / ? / :name placeholders with literal nodes (a new tree)."""
    nodes = _placeholders(tree)
    if not nodes:
        if params:
            raise InvalidParameter(f"the query takes no parameters but {len(params)} were given")
        return tree
    if params is None:
        raise InvalidParameter(f"the query has {count_parameters(tree)} parameter placeholder(s) "
                               "but no parameters were given")
    tree = tree.copy()
    nodes = _placeholders(tree)
    if isinstance(params, Mapping):
        for node in nodes:
            name = _param_name(node)
            if name is None or name not in params:
                raise InvalidParameter(f"no value given for parameter {node.sql()}")
            node.replace(literal_for(params[name]))
        return tree
    params = list(params)
    positional = 0
    for node in nodes:
        number = _param_number(node)
        if number is None:
            if _param_name(node) is not None:
                raise InvalidParameter(f"named parameter {node.sql()} needs a mapping of values")
            index = positional
            positional += 1
        else:
            index = number - 1
        if not 0 <= index < len(params):
            raise InvalidParameter(f"parameter {node.sql()} has no value ({len(params)} given)")
        node.replace(literal_for(params[index]))
    expected = positional or max((_param_number(n) or 0) for n in nodes)
    if expected != len(params):
        raise InvalidParameter(f"the query takes {expected} parameter(s) but {len(params)} were given")
    return tree
