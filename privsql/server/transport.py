"""The asyncio TCP server that drives :class:`protocol.Connection` state machines.

It owns everything the state machine does not: sockets, TLS, timers, the
thread pool that runs blocking engine and catalog work, the registry used by
CancelRequest, connection and per-analyst statement limits and graceful
shutdown. A misbehaving client only ever ends its own connection.

Every statement's work runs under a :class:`~privsql.cancel.CancelScope` bound
to its worker thread. Its deadline passing, a CancelRequest, the client
disconnecting or shutdown cancel the scope, which interrupts the work itself
(DuckDB ``interrupt()``, PostgreSQL cancel, Spark job cancel, the parser); work
whose deadline passed while it waited for a thread never starts. The client's
answer waits for the interrupted work up to ``CANCEL_GRACE`` seconds; the
analyst's slot is only given back when the work has really stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import secrets
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from privsql import cancel
from privsql.cancel import CancelScope
from privsql.errors import PrivsqlError, QueryCanceled
from privsql.server import messages as m
from privsql.server.auth import Authenticator
from privsql.server.catalog import ShadowCatalog, schema_from_config
from privsql.server.executor import Executor
from privsql.server.limits import AnalystSlots
from privsql.server.protocol import (
    Call,
    CancelTarget,
    Connection,
    Receive,
    ReceiveTimeout,
    Send,
    StartTLS,
)
from privsql.server.router import Router
from privsql.server.settings import ServerSettings

log = logging.getLogger("privsql.server")

READ_CHUNK = 65536
#: seconds an answer waits for interrupted work to stop before it is sent anyway
CANCEL_GRACE = 1.0
#: bytes a client may send ahead while its statement runs (read to notice a disconnect)
MAX_READ_AHEAD = 1 << 20


class AdminShutdown(PrivsqlError):
    sqlstate = "57P01"


@dataclass
class _Live:
    """What CancelRequest, disconnects and shutdown need to know about one connection."""

    secret_key: int
    task: asyncio.Task | None = None
    scope: CancelScope | None = None  # the running statement's
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when that statement is cancelled
    reader: asyncio.StreamReader | None = field(default=None, repr=False)
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)
    ahead: bytearray = field(default_factory=bytearray)  # bytes read while a statement ran
    eof: bool = False


def _fatal(sqlstate: str, message: str) -> bytes:
    return m.error_response({"S": "FATAL", "V": "FATAL", "C": sqlstate, "M": message})


def _run_bound(scope: CancelScope, fn: Any) -> Any:
    """Worker-thread side of a statement: never starts past its deadline or once cancelled."""
    with cancel.bound(scope):
        scope.check()
        return fn()


def _outcome(future: asyncio.Future) -> tuple[Any, BaseException | None]:
    exc = future.exception()
    return (None, exc) if exc is not None else (future.result(), None)


class WireServer:
    """A PostgreSQL-protocol front end for one engine."""

    def __init__(self, engine: Any, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        config = engine.config
        schema = schema_from_config(config.tables)
        self.router = Router(schema, max_statement_size=settings.max_statement_size)
        self.executor = Executor(engine, ShadowCatalog(schema, database=settings.database))
        self.slots = AnalystSlots(settings.max_statements_per_analyst, settings.queue_timeout)
        self.analysts = dict(config.analysts)
        self.authenticator: Authenticator | None = None
        if settings.auth == "scram":
            self.authenticator = Authenticator(self._verifier)
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="privsql-wire")
        # interrupts may block briefly (a PostgreSQL cancel opens a connection): never on the event loop
        self.cancel_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="privsql-cancel")
        self.live: dict[int, _Live] = {}
        self.busy = 0  # statements whose work is running or queued in the pool
        self.closing = False
        self._pids = itertools.count(secrets.randbelow(1 << 20) + 1000)
        self._server: asyncio.base_events.Server | None = None
        self._ssl = self._ssl_context() if settings.tls_enabled else None

    def _verifier(self, user: str) -> str | None:
        analyst = self.analysts.get(user)
        return getattr(analyst, "password", None) if analyst is not None else None

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.settings.tls_cert or "", self.settings.tls_key)
        return ctx

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound (host, port) (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._handle, self.settings.host, self.settings.port,
                                                  limit=READ_CHUNK)
        sock = self._server.sockets[0].getsockname()
        log.info("privsql wire server listening on %s:%d (auth=%s, tls=%s)", sock[0], sock[1],
                 self.settings.auth, "on" if self._ssl else "off")
        return sock[0], sock[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def close(self, grace: float = 5.0) -> bool:
        """Stop accepting, let running statements finish for ``grace`` s, interrupt the rest, end
        every session. Returns whether all work stopped (else some is still running in the pool)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        await self._until_idle(grace)
        for live in self.live.values():
            self._interrupt(live, cancel.SHUTDOWN)
        await self._until_idle(2 * CANCEL_GRACE)
        for live in list(self.live.values()):
            if live.writer is not None and not live.writer.is_closing():
                live.writer.write(_fatal("57P01", "terminating connection due to administrator command"))
            if live.task is not None:
                live.task.cancel()
        tasks = [c.task for c in self.live.values() if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.cancel_pool.shutdown(wait=False)
        return self.busy == 0

    async def _until_idle(self, seconds: float) -> None:
        """Wait until no statement's work is running, or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------- connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.live) >= self.settings.max_connections:
            writer.write(_fatal("53300", "sorry, too many clients already"))
            await self._close_writer(writer)
            return
        pid = next(self._pids)
        live = _Live(secrets.randbits(31), asyncio.current_task(), reader=reader, writer=writer)
        self.live[pid] = live
        conn = Connection(router=self.router, executor=self.executor, settings=self.settings,
                          authenticator=self.authenticator, analysts=self.analysts,
                          process_id=pid, secret_key=live.secret_key, peer=peer_text)
        try:
            await self._drive(conn, live, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("connection pid=%d ended: %s", pid, exc)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one bad connection never takes the server down
            log.exception("connection pid=%d failed", pid)
        finally:
            self.live.pop(pid, None)
            await self._close_writer(writer)

    async def _drive(self, conn: Connection, live: _Live, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        gen = conn.run()
        action: Any = next(gen)
        while True:
            value: Any = None
            error: BaseException | None = None
            if isinstance(action, Send):
                writer.write(action.data)
                await writer.drain()
            elif isinstance(action, Receive):
                try:
                    value = await self._receive(live, action.timeout)
                except (TimeoutError, asyncio.TimeoutError):
                    error = ReceiveTimeout()
            elif isinstance(action, Call):
                value, error = await self._call(action, live)
            elif isinstance(action, StartTLS):
                assert self._ssl is not None
                await writer.start_tls(self._ssl)
            elif isinstance(action, CancelTarget):
                self._cancel(action)
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration:
                return

    async def _receive(self, live: _Live, timeout: float) -> bytes:
        """Bytes read ahead while a statement ran, else the next read (b'' at EOF)."""
        if live.ahead:
            data = bytes(live.ahead)
            live.ahead.clear()
            return data
        if live.eof or live.reader is None:
            return b""
        return await asyncio.wait_for(live.reader.read(READ_CHUNK), timeout)

    async def _call(self, action: Call, live: _Live) -> tuple[Any, BaseException | None]:
        """Run one statement's work in the pool under its own cancel scope."""
        if self.closing:
            return None, AdminShutdown("the server is shutting down; no new statements are started")
        scope = CancelScope(action.timeout, gate=self.slots.gate(action.owner))
        try:
            await self.slots.acquire(action.owner, scope)
        except PrivsqlError as exc:
            return None, exc
        future = asyncio.get_running_loop().run_in_executor(self.pool, _run_bound, scope, action.fn)
        self.busy += 1
        future.add_done_callback(lambda _: self._done(action.owner))
        live.scope = scope
        live.wake.clear()
        watcher = asyncio.create_task(self._watch(live))
        try:
            return await self._wait(future, scope, live)
        except asyncio.CancelledError:
            self._interrupt(live, cancel.SHUTDOWN)
            raise
        finally:
            live.scope = None
            watcher.cancel()
            # let it finish: until then the reader still counts it as waiting and refuses another read
            await asyncio.gather(watcher, return_exceptions=True)

    def _done(self, owner: str) -> None:
        """The work really stopped: give back the analyst's slot."""
        self.busy -= 1
        self.slots.release(owner)

    async def _wait(self, future: asyncio.Future, scope: CancelScope,
                    live: _Live) -> tuple[Any, BaseException | None]:
        """The work's result; on timeout, cancel or disconnect interrupt it and wait briefly for it."""
        woken = asyncio.create_task(live.wake.wait())
        try:
            await asyncio.wait({future, woken}, timeout=scope.remaining(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if not future.done():
            self._interrupt(live, cancel.TIMEOUT)
            await asyncio.wait({future}, timeout=CANCEL_GRACE)
        if future.done():
            return _outcome(future)
        log.warning("statement work did not stop within %g s of its interrupt (%s); answering now", CANCEL_GRACE,
                    scope.reason)
        return None, QueryCanceled(scope.reason or cancel.TIMEOUT)

    async def _watch(self, live: _Live) -> None:
        """While a statement runs, read ahead to notice the client going away."""
        reader = live.reader
        if reader is None:
            return
        while len(live.ahead) < MAX_READ_AHEAD and not live.eof:
            data = await reader.read(READ_CHUNK)
            if not data:
                live.eof = True
                self._interrupt(live, cancel.DISCONNECT)
                return
            live.ahead += data

    def _interrupt(self, live: _Live, reason: str) -> None:
        """Cancel the connection's running statement (if any) from a thread that may block."""
        scope = live.scope
        if scope is None:
            return
        live.wake.set()
        with contextlib.suppress(RuntimeError):  # the cancel pool is already shut down
            self.cancel_pool.submit(scope.cancel, reason)

    def _cancel(self, target: CancelTarget) -> None:
        live = self.live.get(target.process_id)
        if live is None or not hmac.compare_digest(live.secret_key.to_bytes(4, "big"),
                                                   (target.secret_key & 0xFFFFFFFF).to_bytes(4, "big")):
            return
        if live.scope is not None:
            self._interrupt(live, cancel.USER_REQUEST)
            log.info("cancel pid=%d", target.process_id)

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                await writer.drain()
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
