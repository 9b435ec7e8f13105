"""The binding part of a row-bound envelope's associated data (``docs/format.md``,
section 2.1): the values of the row columns an envelope is bound to, length-prefixed and
typed. :mod:`piiguard.crypto.envelope` seals and opens with it (format flag 0x02).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from piiguard.errors import EnvelopeFormatError

__all__ = ["BindingLayout"]

_NULL_VALUE = b"n\x00\x00"


def _bound_value(value: int | str | None) -> bytes:
    if value is None:
        return _NULL_VALUE
    if type(value) is str:
        tag, raw = b"s", value.encode("utf-8")
    elif type(value) is int:
        tag, raw = b"i", str(value).encode("ascii")
    else:
        raise EnvelopeFormatError("a bound value must be an integer, a string or NULL",
                                  operation="encrypt")
    if len(raw) > 0xFFFF:
        raise EnvelopeFormatError("bound value too long", operation="encrypt")
    return tag + len(raw).to_bytes(2, "big") + raw


class BindingLayout:
    """The row columns an envelope is bound to, prepared once per encrypted column:
    :meth:`aad` turns one row's values of them into the binding part of the associated
    data (after the field context; see ``docs/format.md``, section 2.1)::

        u16(count) || for each column: u16(len(name)) || name
                                      || tag || u16(len(data)) || data

    ``tag`` is ``n`` (NULL, no data), ``i`` (an integer in ASCII decimal) or ``s``
    (text, UTF-8). Names and values are length-prefixed, and the type is part of it,
    so ``7`` and ``'7'`` bind differently:

    >>> layout = BindingLayout(("tenant_id", "version"))
    >>> layout.aad((7, 3))
    b'\\x00\\x02\\x00\\ttenant_idi\\x00\\x017\\x00\\x07versioni\\x00\\x013'
    >>> layout.aad((7, 3)) != layout.aad(("7", 3)) != layout.aad((None, 3))
    True
    >>> layout.aad((1.5, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    piiguard.errors.EnvelopeFormatError: a bound value must be an integer, a string ...
    """

    __slots__ = ("names", "_names", "_count")

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        if not self.names or len(self.names) > 0xFFFF:
            raise EnvelopeFormatError("a binding names 1 to 65535 columns",
                                      operation="encrypt")
        parts = []
        for name in self.names:
            raw = name.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise EnvelopeFormatError("bound column name too long", operation="encrypt")
            parts.append(len(raw).to_bytes(2, "big") + raw)
        self._names = tuple(parts)
        self._count = len(self.names).to_bytes(2, "big")

    def __repr__(self) -> str:
        return f"BindingLayout({self.names!r})"

    def aad(self, values: Sequence[int | str | None]) -> bytes:
        """The binding part of the associated data for one row's values, in the order
        of :attr:`names` (read for every row of a bound column: kept to one loop)."""
        names = self._names
        if len(values) != len(names):
            raise EnvelopeFormatError("binding values do not match the bound columns",
                                      operation="encrypt")
        out = [self._count]
        for name, value in zip(names, values):   # noqa: B905 - lengths checked above
            out.append(name)
            if type(value) is int:
                raw = str(value).encode("ascii")
                out.append(b"i" + len(raw).to_bytes(2, "big") + raw)
            else:
                out.append(_bound_value(value))
        return b"".join(out)
