"""How long-running jobs report progress, without depending on a UI.

A job calls ``progress.start(description, total)`` once per phase and
``progress.advance(n)`` as rows are done (from any worker thread). The CLI passes a
rich progress bar; the Python API defaults to :class:`NullProgress`.

>>> p = CountingProgress()
>>> p.start("reencrypt customers", 10); p.advance(4); p.advance(6)
>>> p.done, p.totals
(10, {'reencrypt customers': 10})
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["CountingProgress", "NullProgress", "Progress"]


@runtime_checkable
class Progress(Protocol):
    """What a job tells about its progress (thread-safe implementations only)."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class CountingProgress:
    """Counts what it is told (tests, and callers that poll)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.totals: dict[str, int | None] = {}

    def start(self, description: str, total: int | None) -> None:
        with self._lock:
            self.totals[description] = total

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
