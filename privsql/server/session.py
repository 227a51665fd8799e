"""One connection's session: run-time settings (GUCs) and transaction status.

Settings are per connection and never shared. ``privsql.epsilon`` and
``privsql.delta`` set the per-query budget passed to the engine. Transactions
are accepted and read-only: they only track the status byte clients read from
ReadyForQuery ('I' idle, 'T' in a block, 'E' failed block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privsql import __version__
from privsql.errors import InvalidParameter, PrivsqlError
from privsql.server.outcome import Column, Outcome
from privsql.server.types import TEXT
from privsql.server.utility import Deallocate, Noop, ResetVar, SetVar, ShowVar, Transaction, UtilityCommand

SERVER_VERSION = "15.0"
SERVER_VERSION_NUM = "150000"
VERSION_STRING = f"PostgreSQL {SERVER_VERSION} (privsql {__version__}) on x86_64-pc-linux-gnu, 64-bit"


class UndefinedObject(PrivsqlError):
    sqlstate = "42704"


class InFailedTransaction(PrivsqlError):
    sqlstate = "25P02"


class NoActiveTransaction(PrivsqlError):
    sqlstate = "25P01"


class CantChangeRuntimeParam(PrivsqlError):
    sqlstate = "55P02"


#: name (lower case) → (display name, default); reported ones go out as ParameterStatus
DEFAULTS: dict[str, tuple[str, str]] = {
    "server_version": ("server_version", SERVER_VERSION),
    "server_version_num": ("server_version_num", SERVER_VERSION_NUM),
    "server_encoding": ("server_encoding", "UTF8"),
    "client_encoding": ("client_encoding", "UTF8"),
    "datestyle": ("DateStyle", "ISO, MDY"),
    "intervalstyle": ("IntervalStyle", "postgres"),
    "integer_datetimes": ("integer_datetimes", "on"),
    "standard_conforming_strings": ("standard_conforming_strings", "on"),
    "timezone": ("TimeZone", "UTC"),
    "application_name": ("application_name", ""),
    "is_superuser": ("is_superuser", "off"),
    "session_authorization": ("session_authorization", ""),
    "default_transaction_read_only": ("default_transaction_read_only", "on"),
    "in_hot_standby": ("in_hot_standby", "off"),
    "extra_float_digits": ("extra_float_digits", "1"),
    "search_path": ("search_path", '"$user", public'),
    "transaction_isolation": ("transaction_isolation", "read committed"),
    "default_transaction_isolation": ("default_transaction_isolation", "read committed"),
    "transaction_read_only": ("transaction_read_only", "on"),
    "statement_timeout": ("statement_timeout", "0"),
    "lock_timeout": ("lock_timeout", "0"),
    "idle_in_transaction_session_timeout": ("idle_in_transaction_session_timeout", "0"),
    "max_identifier_length": ("max_identifier_length", "63"),
    "bytea_output": ("bytea_output", "hex"),
    "lc_messages": ("lc_messages", "C"),
    "lc_monetary": ("lc_monetary", "C"),
    "lc_numeric": ("lc_numeric", "C"),
    "lc_time": ("lc_time", "C"),
    "lc_collate": ("lc_collate", "C.UTF-8"),
    "lc_ctype": ("lc_ctype", "C.UTF-8"),
    "geqo": ("geqo", "on"),
    "jit": ("jit", "off"),
    "default_table_access_method": ("default_table_access_method", "heap"),
    "max_index_keys": ("max_index_keys", "32"),
    "privsql.epsilon": ("privsql.epsilon", ""),
    "privsql.delta": ("privsql.delta", ""),
}

REPORTED = frozenset({
    "server_version", "server_encoding", "client_encoding", "datestyle", "intervalstyle",
    "integer_datetimes", "standard_conforming_strings", "timezone", "application_name",
    "is_superuser", "session_authorization", "default_transaction_read_only", "in_hot_standby",
})

#: settings a client may not change
READ_ONLY = frozenset({
    "server_version", "server_version_num", "server_encoding", "integer_datetimes", "is_superuser",
    "in_hot_standby", "max_identifier_length", "lc_collate", "lc_ctype", "session_authorization",
})

_ENCODINGS = {"utf8": "UTF8", "utf-8": "UTF8", "unicode": "UTF8"}


def _privacy_value(name: str, value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    low_ok = number > 0 if name == "privsql.epsilon" else number >= 0
    if not (math.isfinite(number) and low_ok):
        raise InvalidParameter(f'invalid value for parameter "{name}": "{value}"',
                               hint="a positive number, e.g. SET privsql.epsilon = 0.5")
    return value


def _normalise(name: str, value: str) -> str:
    if name in ("privsql.epsilon", "privsql.delta"):
        return _privacy_value(name, value)
    if name == "client_encoding":
        enc = _ENCODINGS.get(value.lower())
        if enc is None:
            raise InvalidParameter(f'invalid value for parameter "client_encoding": "{value}"',
                                   hint="privsql speaks UTF8 only")
        return enc
    if name == "transaction_read_only" and value.lower() in ("off", "false", "0"):
        raise InvalidParameter("privsql sessions are read-only", hint="privsql answers aggregate queries only")
    return value


@dataclass
class Session:
    """Settings and transaction status of one connection."""

    user: str
    database: str
    transaction: str = "I"  # ReadyForQuery status byte

    def __post_init__(self) -> None:
        self._values: dict[str, str] = {k: v for k, (_, v) in DEFAULTS.items()}
        self._values["session_authorization"] = self.user
        self._defaults = dict(self._values)
        self._savepoints: list[str] = []

    # -------------------------------------------------------------- settings

    def get(self, name: str) -> str:
        key = name.lower()
        if key not in self._values:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        return self._values[key]

    def set(self, name: str, value: str | None, *, startup: bool = False) -> dict[str, str]:
        """Set (or, with None, reset) one setting; returns ParameterStatus updates."""
        key = name.lower()
        if key in READ_ONLY and not startup:
            raise CantChangeRuntimeParam(f'parameter "{name}" cannot be changed')
        if value is None:
            value = self._defaults.get(key, "")
        elif key in READ_ONLY:
            return {}
        else:
            value = _normalise(key, value)
        if key not in self._values and "." not in key:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        self._values[key] = value
        if key in REPORTED:
            return {DEFAULTS[key][0]: value}
        return {}

    def apply_startup(self, params: dict[str, str]) -> None:
        """Apply the startup packet's settings, ignoring ones privsql does not know."""
        for name, value in params.items():
            if name in ("user", "database", "replication", "options") or name.startswith("_pq_."):
                continue
            try:
                self.set(name, value, startup=True)
            except PrivsqlError:
                continue
        for option in _startup_options(params.get("options", "")):
            try:
                self.set(*option, startup=True)
            except PrivsqlError:
                continue

    def reported(self) -> dict[str, str]:
        """Every ParameterStatus value sent after authentication."""
        return {DEFAULTS[k][0]: self._values[k] for k in sorted(REPORTED)}

    def budget(self) -> tuple[float | None, float | None]:
        """The session's per-query (ε, δ), None where not set."""
        eps, delta = self._values.get("privsql.epsilon", ""), self._values.get("privsql.delta", "")
        return (float(eps) if eps else None, float(delta) if delta else None)

    def statement_timeout(self) -> float | None:
        """statement_timeout in seconds, None when 0 (no session limit)."""
        text = self._values.get("statement_timeout", "0").strip().lower()
        units = {"ms": 0.001, "s": 1.0, "min": 60.0}
        scale = 0.001
        for unit, factor in units.items():
            if text.endswith(unit):
                text, scale = text[: -len(unit)].strip(), factor
                break
        try:
            seconds = float(text) * scale
        except ValueError:
            return None
        return seconds if seconds > 0 else None

    # ---------------------------------------------------------- transactions

    def check_not_failed(self) -> None:
        if self.transaction == "E":
            raise InFailedTransaction("current transaction is aborted, commands ignored until end of transaction block")

    def failed(self) -> None:
        """An error happened: an explicit block becomes failed."""
        if self.transaction == "T":
            self.transaction = "E"

    def _transaction(self, cmd: Transaction) -> Outcome:
        action = cmd.action
        if action == "begin":
            if self.transaction != "I":
                out = Outcome("BEGIN", warnings=["there is already a transaction in progress"])
                self.check_not_failed()
                return out
            self.transaction = "T"
            return Outcome("BEGIN")
        if action in ("commit", "rollback"):
            tag = "ROLLBACK" if action == "rollback" or self.transaction == "E" else "COMMIT"
            warnings = ["there is no transaction in progress"] if self.transaction == "I" else []
            self.transaction = "I"
            self._savepoints.clear()
            return Outcome(tag, warnings=warnings)
        if self.transaction == "I":
            verb = {"savepoint": "SAVEPOINT", "release": "RELEASE SAVEPOINT", "rollback_to": "ROLLBACK TO SAVEPOINT"}[action]
            raise NoActiveTransaction(f"{verb} can only be used in transaction blocks")
        if action == "savepoint":
            self.check_not_failed()
            self._savepoints.append(cmd.savepoint or "")
            return Outcome("SAVEPOINT")
        if cmd.savepoint not in self._savepoints:
            raise InFailedTransaction(f'savepoint "{cmd.savepoint}" does not exist') if self.transaction == "E" \
                else NoActiveTransaction(f'savepoint "{cmd.savepoint}" does not exist')
        index = self._savepoints.index(cmd.savepoint or "")
        if action == "release":
            self.check_not_failed()
            del self._savepoints[index:]
            return Outcome("RELEASE")
        del self._savepoints[index + 1:]
        self.transaction = "T"
        return Outcome("ROLLBACK")

    # --------------------------------------------------------------- commands

    def apply(self, cmd: UtilityCommand) -> Outcome:
        """Run one utility command against this session."""
        if isinstance(cmd, Transaction):
            return self._transaction(cmd)
        self.check_not_failed()
        if isinstance(cmd, SetVar):
            return Outcome("SET", parameter_status=self.set(cmd.name, cmd.value))
        if isinstance(cmd, ResetVar):
            if cmd.name == "all":
                changes: dict[str, str] = {}
                for key in self._values:
                    if key not in READ_ONLY:
                        changes.update(self.set(key, None))
                return Outcome("RESET", parameter_status=changes)
            return Outcome("RESET", parameter_status=self.set(cmd.name, None))
        if isinstance(cmd, ShowVar):
            return self._show(cmd.name)
        assert isinstance(cmd, (Noop, Deallocate))
        return Outcome(cmd.tag)

    def _show(self, name: str) -> Outcome:
        if name == "all":
            cols = [Column("name", TEXT), Column("setting", TEXT), Column("description", TEXT)]
            rows = [(DEFAULTS.get(k, (k, ""))[0], v, "") for k, v in sorted(self._values.items())]
            return Outcome("SHOW", cols, rows)
        value = self.get(name)
        return Outcome("SHOW", [Column(name, TEXT)], [(value,)])


def describe_utility(cmd: UtilityCommand) -> list[Column] | None:
    """Result columns of a utility command without running it."""
    if isinstance(cmd, ShowVar):
        if cmd.name == "all":
            return [Column("name", TEXT), Column("setting", TEXT), Column("description", TEXT)]
        return [Column(cmd.name, TEXT)]
    return None


def _startup_options(options: str) -> list[tuple[str, str]]:
    """``-c name=value`` pairs from the startup ``options`` parameter."""
    out: list[tuple[str, str]] = []
    parts = options.replace("--", "-c ").split()
    for i, part in enumerate(parts):
        if part == "-c" and i + 1 < len(parts) and "=" in parts[i + 1]:
            name, _, value = parts[i + 1].partition("=")
            out.append((name, value))
        elif part.startswith("-c") and "=" in part[2:]:
            name, _, value = part[2:].partition("=")
            out.append((name, value))
    return out
