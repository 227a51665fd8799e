"""A small thread-safe LRU map bounded by entry count and by an estimate of bytes held."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class BoundedLRU:
    """Least-recently-used map holding at most ``entries`` items and ``max_bytes`` estimated bytes.

    Each ``put`` says what its entry costs; an entry costing more than a quarter of the byte
    budget is not kept at all (one huge statement never evicts everything else)."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value for ``key``, or None."""
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: Any, value: Any, cost: int = 0) -> None:
        """Keep ``value`` unless it alone would take more than a quarter of the byte budget."""
        if cost * 4 > self._max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, cost)
            self._bytes += cost
            while len(self._data) > self._entries or self._bytes > self._max_bytes:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped

    @property
    def bytes(self) -> int:
        """Estimated bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)
