"""The PostgreSQL v3 server protocol for one connection, as a pure state machine.

:meth:`Connection.run` is a generator: it yields *actions* and is resumed with
their results, so all I/O, threads and timers live in the transport
(:mod:`privsql.server.transport`) and tests can drive it with byte fixtures::

    Send(data)        write bytes; resume with None
    Receive(timeout)  read more bytes; resume with them (b'' at EOF), or throw
                      ReceiveTimeout when ``timeout`` seconds pass
    Call(fn, timeout, what, owner)
                      run the blocking ``fn`` off the event loop, counted against the
                      analyst ``owner``'s concurrent statements; resume with its result,
                      or throw its exception (QueryCanceled on timeout/cancel/disconnect)
    StartTLS()        upgrade the socket to TLS; resume with None
    CancelTarget(pid, key)  a CancelRequest; the connection ends after it
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Generator

from privsql.errors import PrivsqlError
from privsql.server import messages as m
from privsql.server import types as pgt
from privsql.server.auth import AUTH_FAILED_SQLSTATE, MECHANISM, Authenticator, AuthFailed
from privsql.server.catalog import SessionValues
from privsql.server.executor import Executor, guarded
from privsql.server.outcome import Column, Outcome
from privsql.server.router import Plan, Planned, Router
from privsql.server.session import Session, describe_utility
from privsql.server.settings import ServerSettings
from privsql.server.utility import Deallocate

log = logging.getLogger("privsql.server")

MAX_STARTUP_PACKET = 10000


# ------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Receive:
    timeout: float


@dataclass(frozen=True)
class Call:
    fn: Callable[[], Any]
    timeout: float
    what: str = "query"
    owner: str = ""


@dataclass(frozen=True)
class StartTLS:
    pass


@dataclass(frozen=True)
class CancelTarget:
    process_id: int
    secret_key: int


Action = Send | Receive | Call | StartTLS | CancelTarget
Driver = Generator[Action, Any, Any]


class ReceiveTimeout(Exception):
    """Thrown into :meth:`Connection.run` when a Receive timed out."""


class ConnectionClosed(Exception):
    """The client went away."""


class Fatal(Exception):
    """An error that ends the session (sent with severity FATAL)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


class _Error(PrivsqlError):
    """A protocol-level ERROR with an explicit SQLSTATE (portal missing, bad Bind, ...)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def error_fields(exc: PrivsqlError, *, severity: str | None = None, offset: int = 0) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields for a privsql error (1:1 with its attributes)."""
    sev = severity or exc.severity
    fields = {"S": sev, "V": sev, "C": exc.sqlstate, "M": exc.message}
    if exc.hint:
        fields["H"] = exc.hint
    if exc.position is not None:
        fields["P"] = str(exc.position + offset)
    return fields


def _notice(text: str, severity: str = "NOTICE", code: str = "00000") -> bytes:
    return m.notice_response({"S": severity, "V": severity, "C": code, "M": text})


# ------------------------------------------------------------- session objects


@dataclass
class PreparedStatement:
    name: str
    sql: str
    plan: Plan
    param_types: tuple[int, ...]


@dataclass
class Portal:
    statement: PreparedStatement
    params: list[Any]
    result_formats: tuple[int, ...]
    outcome: Outcome | None = None
    sent: int = 0
    columns: list[Column] | None = field(default=None)


def _formats(codes: tuple[int, ...], count: int, what: str) -> tuple[int, ...]:
    if not codes:
        return (0,) * count
    if len(codes) == 1:
        return codes * count
    if len(codes) != count:
        raise _Error("08P01", f"bind message has {len(codes)} {what} formats but {count} {what}s")
    return codes


# ---------------------------------------------------------------- connection


class Connection:
    """One client connection: startup, authentication, then the query loop."""

    def __init__(self, *, router: Router, executor: Executor, settings: ServerSettings,
                 authenticator: Authenticator | None, analysts: Container[str],
                 process_id: int, secret_key: int, peer: str = "") -> None:
        self.router = router
        self.executor = executor
        self.settings = settings
        self.authenticator = authenticator  # None: trust
        self.analysts = analysts
        self.process_id = process_id
        self.secret_key = secret_key
        self.peer = peer
        self.session: Session | None = None
        self.statements: dict[str, PreparedStatement] = {}
        self.portals: dict[str, Portal] = {}
        self._buf = bytearray()
        self._pos = 0
        self._out = bytearray()
        self._skipping = False
        self._tls_done = False

    # ------------------------------------------------------------------ I/O

    def _flush(self) -> Driver:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            yield Send(data)

    def _fill(self, n: int, timeout: float) -> Driver:
        while len(self._buf) - self._pos < n:
            yield from self._flush()
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            data = yield Receive(timeout)
            if not data:
                raise ConnectionClosed()
            self._buf += data

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return chunk

    def _read_message(self, timeout: float) -> Generator[Action, Any, tuple[bytes, bytes]]:
        yield from self._fill(5, timeout)
        msg_type = bytes(self._buf[self._pos:self._pos + 1])
        (length,) = struct.unpack_from("!i", self._buf, self._pos + 1)
        if length < 4 or length > self.settings.max_message_size:
            raise m.ProtocolViolation(f"invalid message length {length}")
        yield from self._fill(1 + length, timeout)
        self._pos += 5
        return msg_type, self._take(length - 4)

    def _call(self, fn: Callable[[], Any], what: str) -> Driver:
        timeout = self.settings.query_timeout
        owner = ""
        if self.session is not None:
            owner = self.session.user
            session_limit = self.session.statement_timeout()
            if session_limit:
                timeout = min(timeout, session_limit)
        yield from self._flush()
        return (yield Call(fn, timeout, what, owner))

    def _planned(self, sql: str) -> Generator[Action, Any, Planned]:
        """The plans of a message's statements: from the cache, else parsed in a worker thread."""
        planned = self.router.cached(sql)
        if planned is None:
            planned = yield from self._call(lambda: guarded("parsing", lambda: self.router.plan_message(sql)),
                                            "parse")
        return planned

    # ------------------------------------------------------------------- run

    def run(self) -> Driver:
        """Serve the connection until it ends; see the module docstring for the actions."""
        try:
            startup = yield from self._startup()
            if startup is not None:
                yield from self._authenticate(startup)
                yield from self._serve()
        except ConnectionClosed:
            pass
        except m.ProtocolViolation as exc:
            self._fatal("08P01", str(exc))
        except Fatal as exc:
            self._fatal(exc.sqlstate, exc.message)
        except ReceiveTimeout:
            if self.session is None:
                self._fatal("08P01", "canceling authentication due to timeout")
            else:
                self._fatal("57P05", "terminating connection due to idle-session timeout")
        if self.session is not None:
            log.info("disconnect analyst=%s pid=%d peer=%s", self.session.user, self.process_id, self.peer)
        yield from self._flush()

    def _fatal(self, sqlstate: str, message: str) -> None:
        self._out += m.error_response({"S": "FATAL", "V": "FATAL", "C": sqlstate, "M": message})

    # --------------------------------------------------------------- startup

    def _startup(self) -> Generator[Action, Any, m.Startup | None]:
        timeout = self.settings.auth_timeout
        while True:
            yield from self._fill(4, timeout)
            (length,) = struct.unpack_from("!i", self._buf, self._pos)
            if length < 8 or length > MAX_STARTUP_PACKET:
                raise m.ProtocolViolation("invalid length of startup packet")
            yield from self._fill(length, timeout)
            self._pos += 4
            msg = m.decode_startup(self._take(length - 4))
            if isinstance(msg, m.SSLRequest):
                if self._tls_done:
                    raise m.ProtocolViolation("SSL request after TLS is established")
                if not self.settings.tls_enabled:
                    self._out += b"N"
                    continue
                if len(self._buf) > self._pos:
                    raise m.ProtocolViolation("received unencrypted data after SSL request")
                yield from self._flush()
                yield Send(b"S")
                yield StartTLS()
                self._tls_done = True
            elif isinstance(msg, m.GSSENCRequest):
                self._out += b"N"
            elif isinstance(msg, m.CancelRequest):
                yield CancelTarget(msg.process_id, msg.secret_key)
                return None
            else:
                return msg

    def _authenticate(self, startup: m.Startup) -> Driver:
        params = startup.params
        user = params.get("user", "")
        if not user:
            raise Fatal("28000", "no PostgreSQL user name specified in startup packet")
        minor = startup.version & 0xFFFF
        unknown = [k for k in params if k.startswith("_pq_.")]
        if minor > 0 or unknown:
            self._out += m.negotiate_protocol_version(0, unknown)
        if self.authenticator is None:
            if user not in self.analysts:
                raise Fatal("28000", f'role "{user}" does not exist')
        else:
            yield from self._scram(user)
        session = Session(user, params.get("database") or user)
        session.apply_startup(params)
        self.session = session
        self._out += m.authentication_ok()
        for name, value in session.reported().items():
            self._out += m.parameter_status(name, value)
        self._out += m.backend_key_data(self.process_id, self.secret_key)
        log.info("connect analyst=%s pid=%d peer=%s", user, self.process_id, self.peer)

    def _scram(self, user: str) -> Driver:
        assert self.authenticator is not None
        exchange = self.authenticator.start(user)
        self._out += m.authentication_sasl([MECHANISM])
        try:
            msg_type, body = yield from self._read_message(self.settings.auth_timeout)
            if msg_type != b"p":
                raise m.ProtocolViolation("expected SASL response")
            mechanism, first = m.decode_sasl_initial(body)
            if mechanism != MECHANISM:
                raise m.ProtocolViolation("client selected an invalid SASL authentication mechanism")
            self._out += m.authentication_sasl_continue(exchange.server_first(first))
            msg_type, body = yield from self._read_message(self.settings.auth_timeout)
            if msg_type != b"p":
                raise m.ProtocolViolation("expected SASL response")
            self._out += m.authentication_sasl_final(exchange.server_final(body))
        except AuthFailed as exc:
            log.info("auth failed user=%s pid=%d peer=%s", user, self.process_id, self.peer)
            raise Fatal(AUTH_FAILED_SQLSTATE, str(exc)) from None

    # ------------------------------------------------------------ query loop

    def _ready(self) -> None:
        assert self.session is not None
        self._out += m.ready_for_query(self.session.transaction)

    def _error(self, exc: PrivsqlError, offset: int = 0) -> None:
        assert self.session is not None
        self._out += m.error_response(error_fields(exc, offset=offset))
        self.session.failed()

    def _serve(self) -> Driver:
        self._ready()
        while True:
            msg_type, body = yield from self._read_message(self.settings.idle_timeout)
            msg = m.decode_frontend(msg_type, body)
            if isinstance(msg, m.Terminate):
                return
            if self._skipping:
                if isinstance(msg, m.Sync):
                    self._skipping = False
                    self._sync()
                continue
            if isinstance(msg, m.Query):
                yield from self._simple_query(msg.sql)
            elif isinstance(msg, m.Sync):
                self._sync()
            elif isinstance(msg, m.Flush):
                yield from self._flush()
            elif isinstance(msg, m.AuthData):
                raise m.ProtocolViolation("unexpected password message")
            elif isinstance(msg, m.Unsupported):
                if msg.type == b"F":
                    self._error(_Error("0A000", "function calls are not supported by privsql"))
                    self._ready()
            else:
                try:
                    yield from self._extended(msg)
                except PrivsqlError as exc:
                    self._error(exc)
                    self._skipping = True

    def _sync(self) -> None:
        assert self.session is not None
        if self.session.transaction == "I":
            self.portals.clear()
        self._ready()

    # ---------------------------------------------------------- simple query

    def _simple_query(self, sql: str) -> Driver:
        try:
            pieces = yield from self._planned(sql)
        except PrivsqlError as exc:
            self._error(exc)
            self._ready()
            return
        for offset, plan in pieces:
            try:
                outcome = yield from self._run(plan, [])
                self._send_outcome(outcome, (), describe=True)
            except PrivsqlError as exc:
                self._error(exc, offset)
                break
        self._ready()

    # ---------------------------------------------------------- running plans

    def _values(self) -> SessionValues:
        assert self.session is not None
        s = self.session
        settings = {k: s.get(k) for k in ("server_version", "server_version_num", "search_path", "datestyle",
                                          "timezone", "client_encoding", "standard_conforming_strings",
                                          "transaction_isolation", "application_name", "extra_float_digits",
                                          "max_identifier_length", "privsql.epsilon", "privsql.delta")}
        return SessionValues(s.user, s.database, self.process_id, settings)

    def _run(self, plan: Plan, params: list[Any]) -> Generator[Action, Any, Outcome]:
        session = self.session
        assert session is not None
        if plan.kind == "empty":
            return Outcome("")
        if plan.error is not None:
            raise plan.error
        if plan.kind == "utility":
            assert plan.utility is not None
            outcome = session.apply(plan.utility)
            if isinstance(plan.utility, Deallocate):
                self._deallocate(plan.utility.name)
            return outcome
        session.check_not_failed()
        if plan.kind == "catalog":
            hit = self.executor.cached_constant(plan)
            if hit is not None:
                return hit
            values = self._values()
            return (yield from self._call(lambda: self.executor.run_catalog(plan, values, params), "catalog query"))
        epsilon, delta = session.budget()
        analyst = session.user
        if plan.kind == "explain":
            return (yield from self._call(lambda: self.executor.explain(
                plan.target, analyst=analyst, epsilon=epsilon, delta=delta, params=params), "EXPLAIN"))
        try:
            outcome = yield from self._call(lambda: self.executor.execute(
                plan.sql, analyst=analyst, epsilon=epsilon, delta=delta, params=params), "query")
        except PrivsqlError as exc:
            log.info("query analyst=%s pid=%d epsilon=%s outcome=%s", analyst, self.process_id,
                     epsilon, exc.sqlstate)
            raise
        spent = outcome.privacy.epsilon if outcome.privacy else 0.0
        log.info("query analyst=%s pid=%d epsilon=%s outcome=ok spent=%g rows=%d", analyst, self.process_id,
                 epsilon, spent, len(outcome.rows))
        return outcome

    def _deallocate(self, name: str | None) -> None:
        if name is None:
            self.statements.clear()
            self.portals.clear()
        elif self.statements.pop(name, None) is None:
            raise _Error("26000", f'prepared statement "{name}" does not exist')

    def _describe_plan(self, plan: Plan, params: list[Any]) -> Generator[Action, Any, list[Column] | None]:
        """Result columns without executing a DP query or spending budget."""
        if plan.kind == "empty":
            return None
        if plan.kind == "utility":
            assert plan.utility is not None
            return describe_utility(plan.utility)
        if plan.kind in ("catalog", "explain"):  # free and data-free: run it and read the columns
            outcome = yield from self._run(plan, params)
            return outcome.columns
        return (yield from self._call(lambda: self.executor.describe(plan.sql, params or None), "describe"))

    # ----------------------------------------------------------------- output

    def _send_status(self, outcome: Outcome) -> None:
        for text in outcome.warnings:
            self._out += _notice(text, "WARNING", "01000")
        for text in outcome.notices:
            self._out += _notice(text)
        for name, value in outcome.parameter_status.items():
            self._out += m.parameter_status(name, value)

    def _row_description(self, columns: list[Column], formats: tuple[int, ...]) -> bytes:
        return m.row_description([
            m.FieldDescription(c.name, c.type.oid, c.type.size, fmt) for c, fmt in zip(columns, formats)
        ])

    def _data_rows(self, columns: list[Column], rows: list[tuple], formats: tuple[int, ...]) -> None:
        oids = [c.type.oid for c in columns]
        encoders = [
            (lambda v, oid=oid: pgt.encode_binary(v, oid)) if fmt == 1 else pgt.encode_text
            for oid, fmt in zip(oids, formats)
        ]
        out = self._out
        for row in rows:
            out += m.data_row([enc(v) for enc, v in zip(encoders, row)])

    def _send_outcome(self, outcome: Outcome, result_formats: tuple[int, ...], *, describe: bool) -> None:
        """A whole result in simple-query style (RowDescription when ``describe``)."""
        self._send_status(outcome)
        if not outcome.tag:
            self._out += m.empty_query_response()
            return
        if outcome.columns is not None:
            formats = _formats(result_formats, len(outcome.columns), "result")
            if describe:
                self._out += self._row_description(outcome.columns, formats)
            self._data_rows(outcome.columns, outcome.rows, formats)
        self._out += m.command_complete(outcome.tag)

    # --------------------------------------------------------- extended query

    def _extended(self, msg: m.FrontendMessage) -> Driver:
        if isinstance(msg, m.Parse):
            yield from self._parse(msg)
        elif isinstance(msg, m.Bind):
            self._bind(msg)
        elif isinstance(msg, m.Describe):
            yield from self._describe(msg)
        elif isinstance(msg, m.Execute):
            yield from self._execute(msg)
        elif isinstance(msg, m.Close):
            if msg.kind == "S":
                self.statements.pop(msg.name, None)
            else:
                self.portals.pop(msg.name, None)
            self._out += m.close_complete()

    def _parse(self, msg: m.Parse) -> Driver:
        if msg.name and msg.name in self.statements:
            raise _Error("42P05", f'prepared statement "{msg.name}" already exists')
        plan = Router.single((yield from self._planned(msg.sql)))
        count = max(len(msg.param_types), len(plan.param_types))
        types = tuple(
            (msg.param_types[i] if i < len(msg.param_types) and msg.param_types[i] else 0)
            or (plan.param_types[i] if i < len(plan.param_types) else 0)
            for i in range(count)
        )
        self.statements[msg.name] = PreparedStatement(msg.name, msg.sql, plan, types)
        self._out += m.parse_complete()

    def _statement(self, name: str) -> PreparedStatement:
        stmt = self.statements.get(name)
        if stmt is None:
            raise _Error("26000", f'prepared statement "{name}" does not exist')
        return stmt

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise _Error("34000", f'portal "{name}" does not exist')
        return portal

    def _bind(self, msg: m.Bind) -> None:
        stmt = self._statement(msg.statement)
        if len(msg.params) != len(stmt.param_types):
            raise _Error("08P01", f'bind message supplies {len(msg.params)} parameters, but prepared statement '
                                  f'"{stmt.name}" requires {len(stmt.param_types)}')
        formats = _formats(msg.param_formats, len(msg.params), "parameter")
        params = [pgt.decode_param(value, oid, fmt == 1)
                  for value, oid, fmt in zip(msg.params, stmt.param_types, formats)]
        if msg.portal and msg.portal in self.portals:
            raise _Error("42P03", f'cursor "{msg.portal}" already exists')
        self.portals[msg.portal] = Portal(stmt, params, msg.result_formats)
        self._out += m.bind_complete()

    def _describe(self, msg: m.Describe) -> Driver:
        if msg.kind == "S":
            stmt = self._statement(msg.name)
            # the engine describes with stand-in values: no data is touched, nothing is charged
            columns = yield from self._describe_plan(stmt.plan, pgt.placeholder_values(stmt.param_types))
            self._out += m.parameter_description([oid or pgt.TEXT.oid for oid in stmt.param_types])
            formats: tuple[int, ...] = (0,) * len(columns or [])
        else:
            portal = self._portal(msg.name)
            if portal.columns is None:
                plan = portal.statement.plan
                if plan.kind in ("catalog", "explain"):
                    portal.outcome = yield from self._run(plan, portal.params)
                    self._send_status(portal.outcome)
                    portal.columns = portal.outcome.columns
                else:
                    portal.columns = yield from self._describe_plan(plan, portal.params)
            columns = portal.columns
            formats = _formats(portal.result_formats, len(columns or []), "result")
        if columns is None:
            self._out += m.no_data()
        else:
            self._out += self._row_description(columns, formats)

    def _execute(self, msg: m.Execute) -> Driver:
        portal = self._portal(msg.portal)
        if portal.outcome is None:
            portal.outcome = yield from self._run(portal.statement.plan, portal.params)
            self._send_status(portal.outcome)
        outcome = portal.outcome
        if not outcome.tag:
            self._out += m.empty_query_response()
            return
        if outcome.columns is None:
            self._out += m.command_complete(outcome.tag)
            return
        formats = _formats(portal.result_formats, len(outcome.columns), "result")
        rows = outcome.rows[portal.sent:]
        if 0 < msg.max_rows < len(rows):
            rows = rows[:msg.max_rows]
            self._data_rows(outcome.columns, rows, formats)
            portal.sent += len(rows)
            self._out += m.portal_suspended()
            return
        self._data_rows(outcome.columns, rows, formats)
        portal.sent += len(rows)
        verb = outcome.tag.split()[0]
        self._out += m.command_complete(f"{verb} {len(rows)}" if verb == "SELECT" else outcome.tag)
