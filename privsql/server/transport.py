"""The asyncio TCP server that drives :class:`protocol.Connection` state machines.

It owns everything the state machine does not: sockets, TLS, timers, the
thread pool that runs blocking engine and catalog work, the registry used by
CancelRequest, connection limits and graceful shutdown. A misbehaving client
only ever ends its own connection.
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

from privsql.errors import QueryCanceled
from privsql.server import messages as m
from privsql.server.auth import Authenticator
from privsql.server.catalog import ShadowCatalog, schema_from_config
from privsql.server.executor import Executor
from privsql.server.protocol import (
    Call, CancelTarget, Connection, Receive, ReceiveTimeout, Send, StartTLS,
)
from privsql.server.router import Router
from privsql.server.settings import ServerSettings

log = logging.getLogger("privsql.server")

READ_CHUNK = 65536


@dataclass
class _Live:
    """What CancelRequest and shutdown need to know about one connection."""

    secret_key: int
    task: asyncio.Task | None = None
    call: asyncio.Future | None = None
    cancel_requested: bool = False
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)


def _fatal(sqlstate: str, message: str) -> bytes:
    return m.error_response({"S": "FATAL", "V": "FATAL", "C": sqlstate, "M": message})


class WireServer:
    """A PostgreSQL-protocol front end for one engine."""

    def __init__(self, engine: Any, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        config = engine.config
        schema = schema_from_config(config.tables)
        self.router = Router(schema)
        self.executor = Executor(engine, ShadowCatalog(schema, database=settings.database))
        self.analysts = dict(config.analysts)
        self.authenticator: Authenticator | None = None
        if settings.auth == "scram":
            self.authenticator = Authenticator(self._verifier)
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="privsql-wire")
        self.live: dict[int, _Live] = {}
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

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let running queries finish (up to ``grace`` s), then end every session."""
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.call is not None for c in self.live.values()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
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

    # ------------------------------------------------------------- connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.live) >= self.settings.max_connections:
            writer.write(_fatal("53300", "sorry, too many clients already"))
            await self._close_writer(writer)
            return
        pid = next(self._pids)
        live = _Live(secrets.randbits(31), asyncio.current_task(), writer=writer)
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
                    value = await asyncio.wait_for(reader.read(READ_CHUNK), action.timeout)
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

    async def _call(self, action: Call, live: _Live) -> tuple[Any, BaseException | None]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, action.fn)
        live.call, live.cancel_requested = future, False
        try:
            return await asyncio.wait_for(future, action.timeout), None
        except (TimeoutError, asyncio.TimeoutError):
            return None, QueryCanceled("canceling statement due to statement timeout")
        except asyncio.CancelledError:
            if not live.cancel_requested:
                raise
            return None, QueryCanceled("canceling statement due to user request")
        except Exception as exc:  # noqa: BLE001 - delivered to the state machine
            return None, exc
        finally:
            live.call = None

    def _cancel(self, target: CancelTarget) -> None:
        live = self.live.get(target.process_id)
        if live is None or not hmac.compare_digest(live.secret_key.to_bytes(4, "big"),
                                                   (target.secret_key & 0xFFFFFFFF).to_bytes(4, "big")):
            return
        if live.call is not None:
            live.cancel_requested = True
            live.call.cancel()
            log.info("cancel pid=%d", target.process_id)

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                await writer.drain()
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
