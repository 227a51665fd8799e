"""Helpers for the wire-server tests: a fake engine, a live server, client helpers.

The server runs in a background thread's event loop on a free port, so tests
drive it with ordinary blocking clients. ``real_engine`` switches to
:class:`privsql.engine.Engine` on a temp copy of ``config/privsql.yaml`` once
the engine exists; until then (or when it fails to load) the fake stands in.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from privsql.errors import (
    BudgetExhausted, PrivacyRefused, QuerySyntaxError, UndefinedColumn, UndefinedTable, UnsupportedQuery,
)
from privsql.results import ColumnAccuracy, OutputColumn, PrivacyReport, QueryResult
from privsql.server.auth import make_verifier
from privsql.server.settings import load_settings
from privsql.server.transport import WireServer

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-pw"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, what: str) -> None:
    """Skip locally when a client is missing, but fail in CI where .ci/run installs it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} not installed")


def need_module(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        need(False, f"python package {name}")


# ------------------------------------------------------------------ fake engine


@dataclass
class FakeColumn:
    name: str
    type: str


@dataclass
class FakeTable:
    name: str
    privacy_unit: str | None
    columns: dict[str, FakeColumn]


@dataclass
class FakeAnalyst:
    name: str
    epsilon: float
    delta: float
    password: str | None


@dataclass
class FakeConfig:
    tables: dict[str, FakeTable]
    analysts: dict[str, FakeAnalyst]
    raw: dict = field(default_factory=dict)


_TYPES = {"int": "bigint", "float": "double", "text": "text", "bool": "boolean", "date": "date",
          "timestamp": "timestamp"}


class FakeEngine:
    """Enough of privsql.engine.Engine for the server: COUNT/SUM/AVG with GROUP BY, budgets, refusals."""

    def __init__(self, verifier: str) -> None:
        cols = {"pid": "int", "age": "int", "income": "float", "sex": "text", "joined": "date"}
        people = FakeTable("people", "pid", {n: FakeColumn(n, t) for n, t in cols.items()})
        regions = FakeTable("regions", None, {"code": FakeColumn("code", "text"), "name": FakeColumn("name", "text")})
        self.config = FakeConfig(
            {"people": people, "regions": regions},
            {"alice": FakeAnalyst("alice", 5.0, 1e-6, verifier), "bob": FakeAnalyst("bob", 1.0, 0.0, verifier)},
        )
        self.spent: dict[str, float] = {a: 0.0 for a in self.config.analysts}
        self.calls: list[tuple[str, str]] = []
        self.delay = 0.0
        self._lock = threading.Lock()

    def _columns(self, sql: str) -> tuple[list[OutputColumn], list[str]]:
        try:
            tree = sqlglot.parse_one(sql, read="postgres")
        except ParseError as exc:
            err = exc.errors[0] if exc.errors else {}
            raise QuerySyntaxError(f"syntax error: {err.get('description', exc)}", position=err.get("col")) from None
        if not isinstance(tree, exp.Select):
            raise UnsupportedQuery("only SELECT is supported")
        tables = [t.name for t in tree.find_all(exp.Table)]
        for name in tables:
            if name not in self.config.tables:
                raise UndefinedTable(f'relation "{name}" does not exist', position=sql.find(name) + 1)
        table = self.config.tables[tables[0]] if tables else None
        groups = [g.name for g in (tree.args.get("group").expressions if tree.args.get("group") else [])]
        out, keys = [], []
        for item in tree.expressions:
            node = item.this if isinstance(item, exp.Alias) else item
            name = item.alias_or_name
            if isinstance(node, exp.Count):
                out.append(OutputColumn(item.alias or "count", "bigint"))
            elif isinstance(node, (exp.Sum, exp.Avg)):
                out.append(OutputColumn(item.alias or type(node).__name__.lower(), "double"))
            elif isinstance(node, exp.Column) and node.name in groups:
                assert table is not None
                if node.name not in table.columns:
                    raise UndefinedColumn(f'column "{node.name}" does not exist')
                out.append(OutputColumn(name, _TYPES[table.columns[node.name].type]))
                keys.append(node.name)
            else:
                raise PrivacyRefused(f"privsql answers aggregates only: {item.sql()} is not one",
                                     position=sql.find(item.sql()) + 1 or None, hint="use COUNT, SUM or AVG")
        return out, keys

    def describe(self, sql: str, *, params: list | None = None) -> list[OutputColumn]:
        return self._columns(sql)[0]

    def execute(self, sql: str, *, analyst: str, epsilon: float | None = None, delta: float | None = None,
                params: list | None = None) -> QueryResult:
        import time
        columns, keys = self._columns(sql)
        eps = epsilon if epsilon is not None else 0.1
        total = self.config.analysts[analyst].epsilon
        with self._lock:
            if self.spent[analyst] + eps > total + 1e-12:
                raise BudgetExhausted(f"privacy budget exhausted for analyst {analyst}: "
                                      f"{total - self.spent[analyst]:g} left, query needs {eps:g}")
            self.spent[analyst] += eps
            self.calls.append((analyst, sql))
            remaining = total - self.spent[analyst]
        if self.delay:
            time.sleep(self.delay)
        groups = ["F", "M"] if keys else [None]
        rows = []
        for g in groups:
            rows.append(tuple(g if c.name in keys else (1000 if c.type == "bigint" else 42.5) for c in columns))
        report = PrivacyReport(analyst, eps, 0.0, remaining, 0.0,
                               tuple(ColumnAccuracy(c.name, "laplace", 10.0, 30.0) for c in columns))
        return QueryResult(columns, rows, report)

    def explain(self, sql: str, *, analyst: str, epsilon: float | None = None, delta: float | None = None,
                params: list | None = None) -> QueryResult:
        columns, _ = self._columns(sql)
        rows = [(c.name, "laplace", epsilon or 0.1, 30.0) for c in columns]
        cols = [OutputColumn("column", "text"), OutputColumn("mechanism", "text"),
                OutputColumn("epsilon", "double"), OutputColumn("ci95", "double")]
        return QueryResult(cols, rows)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ live server


class RunningServer:
    """A WireServer on its own event-loop thread."""

    def __init__(self, engine: Any, **settings: Any) -> None:
        self.engine = engine
        self.settings = load_settings(engine.config.raw.get("server"), host="127.0.0.1", port=0, **settings)
        self.loop = asyncio.new_event_loop()
        self.server = WireServer(engine, self.settings)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host, self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def dsn(self, user: str = "alice", password: str = PASSWORD, dbname: str = "privsql") -> str:
        return f"host={self.host} port={self.port} user={user} password={password} dbname={dbname} sslmode=disable"

    def url(self, user: str = "alice", password: str = PASSWORD, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{user}:{password}@{self.host}:{self.port}/privsql"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(grace=1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)




def _real_engine(tmp: Path, verifier: str) -> Any:
    """The real engine on a temp copy of the sample config (temp budget store), or None if unavailable."""
    config = REPO / "config" / "privsql.yaml"
    if os.environ.get("PRIVSQL_WIRE_FAKE_ENGINE"):
        return None
    try:
        import yaml
        from privsql.engine import Engine
    except ImportError:
        return None
    if not config.exists():
        return None
    raw = yaml.safe_load(config.read_text())
    for analyst in (raw.get("analysts") or {}).values():
        analyst["password"] = verifier
    for table in (raw.get("tables") or {}).values():
        if "source" in table and not os.path.isabs(table["source"]):
            table["source"] = str(REPO / table["source"])
    raw["budget_store"] = {**raw.get("budget_store", {}), "path": str(tmp / "budget.sqlite")}
    path = tmp / "privsql.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        return Engine.from_config(str(path))
    except Exception:  # noqa: BLE001 - engine or sample data not ready: fall back to the fake
        if IN_CI:
            raise
        return None




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def which(binary: str) -> str | None:
    return shutil.which(binary)


# ------------------------------------------------------- driving the state machine


class Driver:
    """Runs a protocol.Connection synchronously: feed bytes, collect what it sends."""

    def __init__(self, conn: Any) -> None:
        from privsql.server import protocol

        self.p = protocol
        self.gen = conn.run()
        self.sent = bytearray()
        self.done = False
        self.cancels: list[Any] = []
        self._action = next(self.gen)
        self._pump(None)

    def _pump(self, data: bytes | None) -> None:
        p = self.p
        value: Any = data
        while not self.done:
            action = self._action
            if isinstance(action, p.Receive):
                if value is None:
                    return
                send, value = value, None
            elif isinstance(action, p.Send):
                self.sent += action.data
                send = None
            elif isinstance(action, p.Call):
                try:
                    result = action.fn()
                except Exception as exc:  # noqa: BLE001
                    self._step(throw=exc)
                    continue
                send = result
            elif isinstance(action, p.CancelTarget):
                self.cancels.append(action)
                send = None
            else:
                send = None
            self._step(send=send)

    def _step(self, send: Any = None, throw: BaseException | None = None) -> None:
        try:
            self._action = self.gen.throw(throw) if throw is not None else self.gen.send(send)
        except StopIteration:
            self.done = True

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Feed bytes; return the backend messages produced since the last call."""
        self.sent.clear()
        self._pump(data)
        return parse_backend(bytes(self.sent))


def parse_backend(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split backend bytes into (type, body); single-byte SSL answers come back as (b'N'|b'S', b'')."""
    import struct

    out, pos = [], 0
    while pos < len(data):
        if data[pos:pos + 1] in (b"N", b"S") and len(data) - pos == 1:
            out.append((data[pos:pos + 1], b""))
            break
        kind = data[pos:pos + 1]
        (length,) = struct.unpack_from("!i", data, pos + 1)
        out.append((kind, data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def error_fields_of(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.rstrip(b"\x00").split(b"\x00"):
        if part:
            fields[part[:1].decode()] = part[1:].decode()
    return fields


def remaining(engine: Any, analyst: str) -> float:
    """The analyst's remaining ε on the fake or the real engine."""
    if isinstance(engine, FakeEngine):
        return engine.config.analysts[analyst].epsilon - engine.spent[analyst]
    return float(engine.budget(analyst).epsilon_remaining)


#: every client test runs the same DP query, refusal and per-query ε
DP_QUERY = "SELECT COUNT(*) AS n, AVG(income) AS avg_income FROM people"
DP_COLUMNS = [("n", "int8"), ("avg_income", "float8")]
PARAM_QUERY = "SELECT COUNT(*) AS n FROM people WHERE age > {}"
REFUSED = "SELECT pid FROM people"
EPSILON = "0.01"
