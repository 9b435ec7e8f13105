"""One background thread that flushes batched audit trails when their ``max_delay`` is up.

A batched :class:`~piiguard.masking.audit.AuditTrail` holds reveal counts until an
``acting_as`` block ends, ``batch_size`` is reached or ``max_delay`` passes; the last
must hold while the process is idle too, so it cannot wait for the next reveal. A trail
whose pending counts go from none to some calls :func:`schedule`; this module's one
daemon thread (started on first use, restarted in a forked child) sleeps until the
earliest deadline and calls the trail's ``flush()``. Nothing runs while nothing is
pending. Deadlines use the real monotonic clock.

>>> import threading
>>> class Trail:
...     def __init__(self):
...         self.done = threading.Event()
...     def flush(self):
...         self.done.set()
>>> t = Trail()
>>> schedule(t, 0.01)
>>> t.done.wait(5)
True
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

__all__ = ["schedule"]

logger = logging.getLogger("piiguard.audit")


class _Flushable(Protocol):
    def flush(self) -> Any: ...


class _Ticker:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None

    def schedule(self, trail: _Flushable, delay: float) -> None:
        deadline = time.monotonic() + delay
        with self._cond:
            current = self._due.get(trail)
            if current is None or deadline < current:
                self._due[trail] = deadline
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="piiguard-audit-flush")
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                due: list[Any] = []
                while not due:
                    now = time.monotonic()
                    pending = list(self._due.items())
                    due = [t for t, at in pending if at <= now]
                    if not due:
                        nearest = min((at for _, at in pending), default=None)
                        self._cond.wait(None if nearest is None else nearest - now)
                for t in due:
                    self._due.pop(t, None)
            for t in due:
                try:
                    t.flush()
                except Exception as exc:  # noqa: BLE001 - a timer must keep running
                    logger.error("could not write audit events: %s", type(exc).__name__)

    def after_fork(self) -> None:
        # The child has no thread (and maybe a lock held by a thread that is gone).
        self._cond = threading.Condition()
        self._thread = None
        if len(self._due):
            self._due = weakref.WeakKeyDictionary(
                {t: time.monotonic() for t in list(self._due.keys())})
            self.schedule_existing()

    def schedule_existing(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="piiguard-audit-flush")
                self._thread.start()
            self._cond.notify()


_TICKER = _Ticker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TICKER.after_fork)


def schedule(trail: _Flushable, delay: float) -> None:
    """Call ``trail.flush()`` from the timer thread in ``delay`` seconds (an earlier
    deadline already set for ``trail`` stands)."""
    _TICKER.schedule(trail, delay)
