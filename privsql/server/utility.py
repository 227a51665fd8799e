"""Recognise session and transaction statements: SET, SHOW, RESET, BEGIN, COMMIT, ...

These never reach the engine; :mod:`privsql.server.session` applies them.
:func:`parse_utility` returns None for anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from privsql.errors import QuerySyntaxError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>[eE]?'(?:[^']|'')*')
      | (?P<ident>"(?:[^"]|"")*")
      | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_$.]*)
      | (?P<punct>[=,;()*-])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # 'str' | 'ident' | 'num' | 'word' | 'punct'
    text: str  # words lower-cased; strings and identifiers unquoted

    @property
    def value(self) -> str:
        return self.text


def tokenize(sql: str) -> list[Token] | None:
    """Tokens of a short utility statement, or None when it has other syntax."""
    tokens: list[Token] = []
    pos, end = 0, len(sql.rstrip().rstrip(";").rstrip())
    while pos < end:
        m = _TOKEN.match(sql, pos)
        if not m or m.end() == pos:
            return None
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            text = text[1:] if text[0] in "eE" else text
            text = text[1:-1].replace("''", "'")
        elif kind == "ident":
            text = text[1:-1].replace('""', '"')
        elif kind == "word":
            text = text.lower()
        tokens.append(Token(kind, text))
    return tokens


@dataclass(frozen=True)
class SetVar:
    name: str
    value: str | None  # None: DEFAULT (reset)


@dataclass(frozen=True)
class ShowVar:
    name: str  # 'all' for SHOW ALL


@dataclass(frozen=True)
class ResetVar:
    name: str  # 'all' for RESET ALL


@dataclass(frozen=True)
class Transaction:
    action: str  # begin | commit | rollback | savepoint | release | rollback_to
    savepoint: str | None = None


@dataclass(frozen=True)
class Deallocate:
    """DEALLOCATE name / DEALLOCATE ALL / DISCARD ALL: drop prepared statements."""

    name: str | None  # None: all
    tag: str = "DEALLOCATE"


@dataclass(frozen=True)
class Noop:
    """Accepted and ignored (DISCARD ALL, SET TRANSACTION ..., DEALLOCATE ...)."""

    tag: str


UtilityCommand = SetVar | ShowVar | ResetVar | Transaction | Deallocate | Noop

_MULTIWORD = {
    ("time", "zone"): "timezone",
    ("transaction", "isolation", "level"): "transaction_isolation",
    ("session", "authorization"): "session_authorization",
}


def _words(tokens: list[Token]) -> list[str]:
    return [t.text for t in tokens]


def _multiword(tokens: list[Token]) -> tuple[str, list[Token]]:
    words = _words(tokens)
    for key, name in _MULTIWORD.items():
        if tuple(words[: len(key)]) == key:
            return name, tokens[len(key):]
    if not tokens or tokens[0].kind not in ("word", "ident"):
        raise QuerySyntaxError("syntax error: expected a setting name")
    return tokens[0].text, tokens[1:]


def _value(tokens: list[Token]) -> str | None:
    if not tokens:
        raise QuerySyntaxError("syntax error: SET needs a value")
    if len(tokens) == 1 and tokens[0].kind == "word" and tokens[0].text in ("default", "local"):
        return None
    parts = [t.text for t in tokens if t.text != ","]
    return ", ".join(parts)


def _parse_set(tokens: list[Token]) -> UtilityCommand:
    if tokens and tokens[0].text in ("session", "local") and tokens[0].kind == "word":
        if len(tokens) > 1 and tokens[1].text == "characteristics":
            return Noop("SET")
        if tokens[0].text == "session" and len(tokens) > 1 and tokens[1].text == "authorization":
            pass
        else:
            tokens = tokens[1:]
    words = _words(tokens)
    if words[:1] == ["transaction"]:
        return Noop("SET")
    if words[:1] == ["names"]:
        return SetVar("client_encoding", _value(tokens[1:]))
    if words[:1] == ["schema"]:
        return SetVar("search_path", _value(tokens[1:]))
    name, rest = _multiword(tokens)
    if name == "timezone" and words[:2] == ["time", "zone"]:
        return SetVar(name, _value(rest))
    if rest and rest[0].text in ("=", "to"):
        rest = rest[1:]
    else:
        raise QuerySyntaxError(f'syntax error at or near "{rest[0].text if rest else "end of input"}"')
    return SetVar(name, _value(rest))


def _parse_transaction(words: list[str]) -> UtilityCommand | None:
    head = words[0]
    if head in ("begin", "start"):
        return Transaction("begin")
    if head in ("commit", "end"):
        return Transaction("commit")
    if head in ("rollback", "abort"):
        if "to" in words:
            return Transaction("rollback_to", words[-1])
        return Transaction("rollback")
    if head == "savepoint" and len(words) == 2:
        return Transaction("savepoint", words[1])
    if head == "release" and len(words) >= 2:
        return Transaction("release", words[-1])
    return None


def parse_utility(sql: str) -> UtilityCommand | None:
    """The utility command in ``sql`` (one statement), or None if it is not one."""
    head = sql.lstrip()[:12].lower()
    if not head.startswith(("set", "show", "reset", "begin", "start", "commit", "end", "rollback", "abort",
                            "savepoint", "release", "discard", "deallocate", "unlisten", "close", "listen")):
        return None
    tokens = tokenize(sql)
    if not tokens or tokens[0].kind != "word":
        return None
    words = _words(tokens)
    head_word = words[0]
    if head_word == "set":
        return _parse_set(tokens[1:])
    if head_word == "show":
        if len(tokens) < 2:
            raise QuerySyntaxError("syntax error at end of input")
        name, _ = _multiword(tokens[1:])
        return ShowVar(name)
    if head_word == "reset":
        if len(tokens) < 2:
            raise QuerySyntaxError("syntax error at end of input")
        name, _ = _multiword(tokens[1:])
        return ResetVar(name)
    if head_word == "discard":
        if words[1:] == ["all"]:
            return Deallocate(None, "DISCARD ALL")
        return Noop("DISCARD " + (words[1].upper() if len(words) > 1 else "ALL"))
    if head_word == "deallocate":
        if len(tokens) < 2:
            raise QuerySyntaxError("syntax error at end of input")
        target = tokens[-1]
        if target.kind == "word" and target.text == "all":
            return Deallocate(None, "DEALLOCATE ALL")
        name = target.text if target.kind == "ident" else sql.split()[-1].rstrip(";").strip('"')
        return Deallocate(name)
    if head_word in ("unlisten", "listen"):
        return Noop(head_word.upper())
    if head_word == "close" and words[1:] == ["all"]:
        return Noop("CLOSE CURSOR ALL")
    if head_word == "start" and words[1:2] != ["transaction"]:
        return None
    return _parse_transaction(words)
