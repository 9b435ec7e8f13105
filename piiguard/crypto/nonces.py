"""Random 96-bit nonces, read from the OS in blocks instead of one syscall each.

``os.urandom(12)`` costs about as much as encrypting an 11-byte value with AES-GCM; a
:class:`BufferedNonces` reads 4 KiB from ``os.urandom`` at a time and hands out 12-byte
slices, so the nonces are exactly as random (the same kernel CSPRNG) at a fraction of
the cost. Every slice is handed out once:

- the slices come from one generator, and a generator cannot run in two threads at once
  (the loser of such a race gets ``ValueError`` and the caller takes ``os.urandom``);
- a child process drops the buffer it inherited at ``fork`` before handing out anything,
  so parent and child never share a slice.

    >>> source = BufferedNonces()
    >>> a, b = source(12), source.next12()
    >>> len(a), len(b), a != b
    (12, 12, True)
"""

from __future__ import annotations

import os
import weakref

NONCE_SIZE = 12
_BLOCK = 4092  # a multiple of 12


class BufferedNonces:
    """A callable ``(n) -> n random bytes`` like ``os.urandom``, buffered for n = 12.

    ``next12()`` is the zero-argument fast path (it may raise ``ValueError`` when two
    threads race for it; fall back to ``os.urandom(12)`` then).
    """

    def __init__(self) -> None:
        self._forked = False
        self.next12 = self._slices().__next__
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            me = ref()
            if me is not None:
                me._forked = True

        os.register_at_fork(after_in_child=after_fork_in_child)

    def __repr__(self) -> str:
        return "BufferedNonces()"

    def __call__(self, n: int) -> bytes:
        if n != NONCE_SIZE:
            return os.urandom(n)
        try:
            return self.next12()
        except ValueError:  # another thread is inside the generator right now
            return os.urandom(n)

    def _slices(self):
        urandom = os.urandom
        while True:
            self._forked = False
            buf = urandom(_BLOCK)
            for i in range(0, _BLOCK, NONCE_SIZE):
                if self._forked:  # inherited across fork: never hand these out again
                    break
                yield buf[i:i + NONCE_SIZE]
