"""Per-analyst limit on statements running at once (over all of the analyst's connections)."""

from __future__ import annotations

import asyncio
import threading

from privsql.cancel import CancelScope
from privsql.errors import TooManyStatements


class AnalystSlots:
    """At most ``limit`` statements per analyst run at once; one more waits up to ``wait`` seconds
    (never past its own deadline) for a slot, then gets 53300. Used on the event loop only.

    Each analyst also has one parse gate (see :class:`privsql.cancel.CancelScope`): their
    statements parse one at a time, in whichever worker threads they run."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._gates: dict[str, threading.Semaphore] = {}

    def gate(self, analyst: str) -> threading.Semaphore:
        """The analyst's parse gate."""
        return self._gates.setdefault(analyst, threading.Semaphore(1))

    async def acquire(self, analyst: str, scope: CancelScope) -> None:
        """Take one of ``analyst``'s slots; raises TooManyStatements, or QueryCanceled past the deadline."""
        slots = self._slots.setdefault(analyst, asyncio.Semaphore(self.limit))
        left = scope.remaining()
        wait = self.wait if left is None else max(0.0, min(self.wait, left))
        try:
            await asyncio.wait_for(slots.acquire(), wait)
        except (TimeoutError, asyncio.TimeoutError):
            scope.check()
            raise TooManyStatements(
                f"too many statements at once for analyst {analyst}: at most {self.limit} run together",
                hint="wait for a running statement to finish, or cancel one") from None

    def release(self, analyst: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        self._slots[analyst].release()
