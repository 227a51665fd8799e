"""Cancellation that reaches the work: one :class:`CancelScope` per statement.

The wire server creates a scope for each statement, binds it to the worker
thread that runs the statement (:func:`bound`) and cancels it on a timeout, a
CancelRequest, a client disconnect or shutdown. Whatever runs in that thread
finds the scope with :func:`current_scope` without it being passed through
every call: the backends register their interrupt (DuckDB ``interrupt()``,
PostgreSQL cancel, Spark job-tag cancel) with :func:`guard`, which also keeps
their own ``timeout=`` argument working when there is no scope (DB-API, CLI).
Pure-Python phases such as parsing run under :func:`interruptible`, which
raises :class:`~privsql.errors.QueryCanceled` inside the thread when the scope
is cancelled.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from contextvars import ContextVar
from typing import Callable, Iterator, TypeVar

from privsql.errors import QueryCanceled

T = TypeVar("T")

TIMEOUT = "canceling statement due to statement timeout"
USER_REQUEST = "canceling statement due to user request"
DISCONNECT = "canceling statement because the client disconnected"
SHUTDOWN = "canceling statement due to server shutdown"
#: what backends add for a reserved DP query that was cancelled
BUDGET_NOTE = "; its budget stays spent"

_current: ContextVar[CancelScope | None] = ContextVar("privsql_cancel_scope", default=None)
_held = threading.local()  # the gate this thread holds, if any


class CancelScope:
    """The cancellation state and deadline of one statement; thread-safe.

    ``gate``, when given, is held while the statement runs :func:`interruptible` work: the wire
    server gives all of one analyst's statements the same one-slot gate, so an analyst parses in
    one thread at a time. Python runs one thread at a time anyway (the GIL), so this costs the
    analyst nothing, and keeps one analyst's parsing from crowding out everyone else's."""

    def __init__(self, timeout: float | None = None, *, gate: threading.Semaphore | None = None) -> None:
        self.deadline = time.monotonic() + timeout if timeout else None
        self.gate = gate
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._interrupts: dict[int, Callable[[], None]] = {}
        self._next = 0

    @property
    def reason(self) -> str | None:
        """Why the scope was cancelled (None while it is not)."""
        if self._reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            return TIMEOUT
        return self._reason

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise QueryCanceled if the scope was cancelled or its deadline passed."""
        reason = self.reason
        if reason is not None:
            raise QueryCanceled(reason)

    def cancel(self, reason: str) -> None:
        """Cancel once and interrupt whatever work is registered (may block briefly: run it off the event loop)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            interrupts = list(self._interrupts.values())
        for interrupt in interrupts:
            _call_quietly(interrupt)

    @contextlib.contextmanager
    def interrupting(self, interrupt: Callable[[], None]) -> Iterator[None]:
        """Call ``interrupt`` if the scope is cancelled while the block runs (at once if it already was)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._interrupts[key] = interrupt
            already = self._reason is not None
        if already:
            _call_quietly(interrupt)
        try:
            yield
        finally:
            with self._lock:
                self._interrupts.pop(key, None)


def _call_quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - an interrupt that fails leaves the deadline as the backstop
        pass


def current_scope() -> CancelScope | None:
    """The scope bound to this thread's statement, if any."""
    return _current.get()


@contextlib.contextmanager
def bound(scope: CancelScope) -> Iterator[CancelScope]:
    """Bind ``scope`` to the current thread for the block."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def check_current() -> None:
    """Raise QueryCanceled if this thread's statement was cancelled (no-op without a scope)."""
    scope = _current.get()
    if scope is not None:
        scope.check()


def effective_timeout(timeout: float | None) -> float | None:
    """The smaller of ``timeout`` and the current scope's remaining time; raises if already cancelled."""
    scope = _current.get()
    if scope is None:
        return timeout
    scope.check()
    left = scope.remaining()
    if left is None:
        return timeout
    return min(timeout, left) if timeout else left


class Guard:
    """What :func:`guard` reports: whether the interrupt fired (timeout or cancel)."""

    def __init__(self) -> None:
        self.fired = threading.Event()
        self.reason: str | None = None

    def fire(self, interrupt: Callable[[], None], reason: str) -> None:
        if not self.fired.is_set():
            self.reason = reason
            self.fired.set()
            interrupt()


@contextlib.contextmanager
def guard(interrupt: Callable[[], None], timeout: float | None, *,
          interrupted: type[BaseException] | tuple[type[BaseException], ...] = (),
          note: str = "") -> Iterator[Guard]:
    """Run a backend call that ``interrupt`` stops: after ``timeout`` seconds (capped by the current
    scope's deadline) and when the current scope is cancelled.

    Raises QueryCanceled up front if the scope is already cancelled or past its deadline, and in
    place of an ``interrupted`` exception from the block (its message is the reason plus ``note``;
    never the backend's text)."""
    state = Guard()
    limit = effective_timeout(timeout)
    timer = threading.Timer(limit, state.fire, (interrupt, TIMEOUT)) if limit else None
    scope = _current.get()
    scoped = scope.interrupting(lambda: state.fire(interrupt, scope.reason or USER_REQUEST)) \
        if scope is not None else contextlib.nullcontext()
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with scoped:
            yield state
    except interrupted:
        reason = state.reason or (scope.reason if scope is not None else None) or TIMEOUT
        raise QueryCanceled(reason + note) from None
    finally:
        if timer is not None:
            timer.cancel()


class TimeLimitExceeded(Exception):
    """:func:`interruptible` work ran longer than its own ``limit``."""


class _Interrupted(BaseException):
    """Raised asynchronously inside a thread whose scope was cancelled during :func:`interruptible`."""


class _OverLimit(BaseException):
    """Raised asynchronously inside a thread whose :func:`interruptible` work passed its limit."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


class _Interrupter:
    """Raises one exception asynchronously in the thread that created it, only while armed."""

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = True
        self._fired = False

    def fire(self, exc: type[BaseException]) -> None:
        with self._lock:
            if self._armed and not self._fired:
                self._fired = True
                _raise_in(self.thread_id, exc)

    def disarm(self) -> None:
        """No exception after this; one fired but not yet raised is withdrawn."""
        with self._lock:
            self._armed = False
            if self._fired:
                _raise_in(self.thread_id, None)


def interruptible(fn: Callable[[], T], *, limit: float | None = None) -> T:
    """Run pure-Python work (parsing, planning) so that it stops when the current scope is
    cancelled (QueryCanceled) or after ``limit`` seconds (TimeLimitExceeded).

    Only code run here may be interrupted, never the caller's: an interruption not yet raised
    is withdrawn before this returns. Whoever owns the scope cancels it at its deadline (the
    wire server does). The work runs holding the scope's gate, if it has one."""
    scope = _current.get()
    if scope is None and limit is None:
        return fn()
    with _through_gate(scope):
        return _interruptible(fn, scope, limit)


@contextlib.contextmanager
def _through_gate(scope: CancelScope | None) -> Iterator[None]:
    """Hold the scope's gate for the block (waiting for it until the scope is cancelled)."""
    gate = scope.gate if scope is not None else None
    if scope is not None:
        scope.check()
    if gate is None or getattr(_held, "gate", None) is gate:
        yield
        return
    while not gate.acquire(timeout=0.05):
        scope.check()  # type: ignore[union-attr]
    _held.gate = gate
    try:
        yield
    finally:
        _held.gate = None
        gate.release()


def _interruptible(fn: Callable[[], T], scope: CancelScope | None, limit: float | None) -> T:
    interrupter = _Interrupter()
    timer = threading.Timer(limit, interrupter.fire, (_OverLimit,)) if limit else None
    scoped = scope.interrupting(lambda: interrupter.fire(_Interrupted)) if scope is not None \
        else contextlib.nullcontext()
    try:
        with scoped:
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                return fn()
            finally:
                interrupter.disarm()
                if timer is not None:
                    timer.cancel()
    except _Interrupted:
        raise QueryCanceled(scope.reason if scope is not None and scope.reason else USER_REQUEST) from None
    except _OverLimit:
        raise TimeLimitExceeded(f"took longer than {limit:g} s") from None
