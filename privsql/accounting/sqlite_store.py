"""The embedded budget store: one SQLite file in WAL mode.

Safe for several threads (one connection per thread) and several processes on
the same file: every write runs in ``BEGIN IMMEDIATE`` (the file's single
write lock, waited for up to ``busy_timeout``), and commits are fsynced
(``synchronous=FULL``), so a crash or power loss cannot drop a charge.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from privsql.accounting.store import Spent, SqlBudgetStore
from privsql.errors import BudgetStoreError

_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budget (
    analyst TEXT PRIMARY KEY,
    epsilon INTEGER NOT NULL DEFAULT 0,
    delta   INTEGER NOT NULL DEFAULT 0,
    rho     INTEGER NOT NULL DEFAULT 0,
    queries INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS ledger (
    id       INTEGER PRIMARY KEY,
    time     TEXT NOT NULL,
    analyst  TEXT NOT NULL,
    sql_hash TEXT NOT NULL,
    sql_text TEXT NOT NULL,
    epsilon  INTEGER NOT NULL,
    delta    INTEGER NOT NULL,
    rho      INTEGER NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('reserved', 'answered', 'failed', 'cached'))
) STRICT;
CREATE INDEX IF NOT EXISTS ledger_analyst ON ledger (analyst, id);
CREATE TABLE IF NOT EXISTS cache (
    analyst TEXT NOT NULL,
    key     TEXT NOT NULL,
    blob    BLOB NOT NULL,
    PRIMARY KEY (analyst, key)
) STRICT
"""


class SqliteBudgetStore(SqlBudgetStore):
    """A budget store in the SQLite file at ``path`` (created with its parent directories).

    One store object may be shared by threads; open a new one after ``fork``.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        if sqlite3.sqlite_version_info < (3, 37):
            raise BudgetStoreError(f"the budget store needs SQLite >= 3.37, this Python has {sqlite3.sqlite_version}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BudgetStoreError(f"cannot create the budget store directory {self.path.parent}: {exc}") from exc
        self._create_schema()

    # -- connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent: only a new file needs it), retrying for ``busy_timeout``.

        SQLite fails the switch at once, without its busy handler, while
        another process holds a lock: processes opening a new file together.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.05)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; connections of finished threads are closed."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._connect()
        with self._lock:
            for thread in [t for t in self._conns if not t.is_alive()]:
                self._conns.pop(thread).close()
            self._conns[threading.current_thread()] = conn
        self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Cursor]:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn.cursor()
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.rollback()
        except sqlite3.Error as exc:
            raise BudgetStoreError(f"budget store {self.path} failed: {exc}") from exc

    def complete(self, ledger_id: int, analyst: str, outcome: str, *,
                 cache: tuple[str, bytes] | None = None) -> Spent:
        """As the base class, but committed without waiting for the disk (WAL, synchronous=NORMAL):
        still safe against a killed process; a power cut could lose only the outcome and cache
        row, never a charge (reservations are committed with synchronous=FULL)."""
        conn = self._connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return super().complete(ledger_id, analyst, outcome, cache=cache)
        finally:
            conn.execute("PRAGMA synchronous = FULL")

    def _create_schema(self) -> None:
        with self._transaction(write=True) as cur:
            self._init_schema(cur, _DDL)

    def __repr__(self) -> str:
        return f"SqliteBudgetStore({str(self.path)!r})"

    # -- dialect

    def _encode_time(self, when: datetime) -> str:
        return when.isoformat()

    def _decode_time(self, value: str) -> datetime:
        return super()._decode_time(datetime.fromisoformat(value))

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
        self._local = threading.local()
