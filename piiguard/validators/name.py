"""Personal names: free text with two rules, so a name column never stores nothing.

A name is kept as written (no case folding: ``McDonald``, ``de la Cruz``, ``Şükrü`` stay
as they are): Unicode NFC, runs of whitespace collapsed to one space, no space at either
end. Refused: empty input or whitespace only (rule ``empty``), control and format
characters other than whitespace (rule ``characters``), more than :data:`MAX_LENGTH`
characters (rule ``length``).

>>> validate('  Ayşe   Nur\\tYılmaz ')
'Ayşe Nur Yılmaz'
>>> validate('   ')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: empty rule failed
    (name is empty)
>>> is_valid('Ali\\x00'), is_valid(None), is_valid('Ali')
(False, False, True)
"""

from __future__ import annotations

import re
import unicodedata

from piiguard.errors import InvalidFormatError
from piiguard.validators._util import empty, is_blank, require_str

__all__ = ["MAX_LENGTH", "is_valid", "validate"]

#: Longest name accepted, in characters.
MAX_LENGTH = 300
_NAME = "name"
# Control characters (Cc) other than whitespace: refused, as are format characters.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def validate(value: str) -> str:
    """Check a name and return it NFC, whitespace collapsed (see the module docstring)."""
    text = require_str(value, _NAME, MAX_LENGTH)
    if is_blank(text):
        raise empty(_NAME)
    if _CONTROL.search(text) is not None:
        raise InvalidFormatError("characters", detail=f"{_NAME} has control characters")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        if any(unicodedata.category(ch) in ("Cf", "Cs", "Co", "Cn") for ch in text
               if not ch.isascii()):
            raise InvalidFormatError("characters",
                                     detail=f"{_NAME} has format or unassigned characters")
    return " ".join(text.split())


def is_valid(value: object) -> bool:
    """True if :func:`validate` accepts ``value``; never raises."""
    try:
        validate(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True
