"""The whole piiguard exception tree.

Every error piiguard raises is a :class:`PIIGuardError`. Messages name the rule, the
``table.column``, the key id and the operation that failed, never the value and never key
bytes, so they are safe to log::

    PIIGuardError
    ├── InvalidInputError (also ValueError)      a value was refused before encryption
    │   ├── InvalidFormatError                   wrong characters or shape
    │   ├── InvalidLengthError                   wrong number of characters
    │   ├── InvalidChecksumError                 check digit(s) do not match
    │   ├── InvalidComponentError                unknown province, postal code mismatch …
    │   └── MaskedValueError                     a masked view was written back
    ├── ConfigurationError                       a Guard, column, policy or key file is mis-set
    │   └── PolicyError (also ValueError)        a masking policy could not be loaded
    ├── AccessDeniedError                        the policy does not let this role do that
    │   └── SearchLimitError                     too many search candidates tried too fast
    ├── AuditError                               an audit record could not be written
    ├── CryptoError
    │   ├── EnvelopeFormatError (also ValueError) bytes are not a well-formed envelope
    │   ├── DecryptionError                      authentication failed: tampered or misplaced
    │   └── AlreadyEncryptedError (also ValueError) refusing to encrypt an envelope again
    ├── KeyStateError
    │   ├── UnknownKeyError                      no such DEK / master key
    │   ├── KeyDestroyedError                    the key was crypto-shredded
    │   ├── ScopeErasedError                     writing to an erased scope (tombstone)
    │   └── KeyInUseError                        retiring a key that rows still use
    └── KMSError
        ├── KMSUnavailableError                  KMS unreachable, timed out or throttled
        └── KMSAccessError                       KMS refused: disabled key, access denied …
            └── KMSConfigurationError (also ConfigurationError) no credentials …

Validation errors are ``ValueError`` so that pydantic turns them into its own
``ValidationError``; piiguard never defines a class named ``ValidationError``.

An error piiguard raises while it handles a value carries no value: not in its message,
its attributes or the errors chained to it (an input error chains none). Frames hold
values in their local variables, and a raised error keeps every frame it passed through
alive (error trackers that capture locals would record them): :func:`scrub_frames`
clears the local variables of the frames that have finished, and piiguard calls it where
it can (see ``docs/errors.md``).

>>> err = InvalidChecksumError("checksum", column="customers.national_id")
>>> str(err)
'invalid value for customers.national_id: checksum rule failed'
>>> isinstance(err, ValueError) and isinstance(err, PIIGuardError)
True
>>> err.rule
'checksum'
"""

from __future__ import annotations

import copy
import dis
import inspect
from collections.abc import Iterator
from typing import Any, Self

__all__ = [
    "PIIGuardError",
    "InvalidInputError",
    "InvalidFormatError",
    "InvalidLengthError",
    "InvalidChecksumError",
    "InvalidComponentError",
    "MaskedValueError",
    "ConfigurationError",
    "PolicyError",
    "AccessDeniedError",
    "SearchLimitError",
    "AuditError",
    "CryptoError",
    "EnvelopeFormatError",
    "DecryptionError",
    "AlreadyEncryptedError",
    "KeyStateError",
    "UnknownKeyError",
    "KeyDestroyedError",
    "ScopeErasedError",
    "KeyInUseError",
    "KMSError",
    "KMSUnavailableError",
    "KMSAccessError",
    "KMSConfigurationError",
    "scrub_frames",
]


class PIIGuardError(Exception):
    """Base of every piiguard error.

    Carries structured, value-free context: ``column`` (``table.column``), ``key_id``
    and ``operation``. The message is built from these and from ``reason`` (what went
    wrong, a fixed text), never from user data.

    >>> err = DecryptionError("decryption failed", key_id=7, operation="decrypt")
    >>> str(err.with_column("customers.phone"))
    'decryption failed column=customers.phone key_id=7 operation=decrypt'
    """

    def __init__(
        self,
        message: str,
        *,
        column: str | None = None,
        key_id: str | int | None = None,
        operation: str | None = None,
    ) -> None:
        self.reason = message
        self.column = column
        self.key_id = None if key_id is None else str(key_id)
        self.operation = operation
        super().__init__(self._render())

    def _headline(self) -> str:
        return self.reason

    def _render(self) -> str:
        parts = [self._headline()]
        if self.column:
            parts.append(f"column={self.column}")
        if self.key_id is not None:
            parts.append(f"key_id={self.key_id}")
        if self.operation:
            parts.append(f"operation={self.operation}")
        return " ".join(parts)

    def with_column(self, column: str | None) -> Self:
        """Name ``column`` (``table.column``) in this error and its message, if it names
        no column yet; returns the error itself, so ``raise exc.with_column(label)``
        re-raises it with its cause. Where the frames below may hold a value (a
        validator's), drop them: ``raise exc.with_column(label).with_traceback(None)
        from None``."""
        if self.column is None and column:
            self.column = column
            self.args = (self._render(),)
        return self

    def detached(self) -> Self:
        """This error without its traceback and without the errors chained to it;
        returns the error itself. For a refused value: the frames below hold the value,
        and a validator's own error (chained as the cause or context) may quote its
        characters. ``raise exc.detached()`` inside ``except ... as exc`` chains nothing
        (the error being handled is the error itself).

        >>> try:
        ...     try:
        ...         int("x1")
        ...     except ValueError as inner:
        ...         raise InvalidFormatError("format") from inner
        ... except InvalidInputError as exc:
        ...     err = exc.detached()
        >>> err.__cause__, err.__context__, err.__traceback__
        (None, None, None)
        """
        self.__cause__ = None
        self.__context__ = None
        self.__suppress_context__ = True
        self.__traceback__ = None
        return self

    def clone(self) -> Self:
        """A fresh copy of this error (same class, same context and cause, no
        traceback): what a framework hook raises instead of its own wrapper."""
        new = copy.copy(self)
        new.args = (new._render(),)
        new.__traceback__ = None
        new.__cause__ = self.__cause__
        new.__context__ = None
        new.__suppress_context__ = True
        return new


class InvalidInputError(PIIGuardError, ValueError):
    """A value was refused before encryption; ``rule`` names the rule that failed and
    ``detail`` says more (never the value)."""

    kind = "invalid"

    def __init__(self, rule: str, *, column: str | None = None, detail: str | None = None,
                 operation: str | None = None) -> None:
        self.rule = rule
        self.detail = detail
        PIIGuardError.__init__(self, f"{rule} rule failed", column=column,
                               operation=operation)

    def _headline(self) -> str:
        where = f" for {self.column}" if self.column else ""
        msg = f"invalid value{where}: {self.rule} rule failed"
        if self.detail:
            msg += f" ({self.detail})"
        return msg

    def _render(self) -> str:
        # The column is in the headline already ("invalid value for t.c: ...").
        return self._headline() if not self.operation else \
            f"{self._headline()} operation={self.operation}"


class InvalidFormatError(InvalidInputError):
    """Wrong characters or shape (letters in a number, non-ASCII digits, bad syntax)."""


class InvalidLengthError(InvalidInputError):
    """Wrong number of characters or digits."""


class InvalidChecksumError(InvalidInputError):
    """The check digit(s) do not match."""


class InvalidComponentError(InvalidInputError):
    """A part is unknown or inconsistent: unknown province, postal code mismatch, region."""


class MaskedValueError(InvalidInputError):
    """A masked view of a value (``1********46``) was about to be written back."""


class ConfigurationError(PIIGuardError):
    """A Guard, column type, policy or key file is configured wrongly."""


class PolicyError(ConfigurationError, ValueError):
    """A masking policy is invalid (unknown mask, unknown kind, bad syntax)."""


class AccessDeniedError(PIIGuardError):
    """The masking policy does not let the role in effect do this: search a column,
    write a value, or clear one it cannot see. ``rule`` names the policy rule
    (``'search'``, ``'write'``, ``'clear'``, ``'search_limit'``) and ``role`` the role.

    >>> str(AccessDeniedError("search", role="intern", column="customers.national_id"))
    "role 'intern' may not search customers.national_id (policy rule: search)"
    """

    def __init__(self, rule: str, *, role: str | None, column: str | None = None,
                 detail: str | None = None, operation: str | None = None) -> None:
        self.rule = rule
        self.role = role
        self.detail = detail
        PIIGuardError.__init__(self, rule, column=column, operation=operation)

    _VERBS = {"search": "search", "write": "write", "clear": "clear the value of",
              "search_limit": "search"}

    def _headline(self) -> str:
        who = "code running with no role" if self.role is None else f"role {self.role!r}"
        verb = self._VERBS.get(self.rule, self.rule)
        msg = f"{who} may not {verb} {self.column or 'this column'} (policy rule: {self.rule})"
        if self.detail:
            msg += f": {self.detail}"
        return msg

    def _render(self) -> str:
        return self._headline() if not self.operation else \
            f"{self._headline()} operation={self.operation}"


class SearchLimitError(AccessDeniedError):
    """The search rate limit of the principal in effect is used up: more candidate
    values were tried than the policy allows in the time."""

    def _headline(self) -> str:
        who = "code running with no role" if self.role is None else f"role {self.role!r}"
        msg = f"search limit reached for {who} on {self.column or 'this column'}"
        return f"{msg}: {self.detail}" if self.detail else msg


class AuditError(PIIGuardError):
    """An audit record could not be written (durable audit: the sink or the audit table
    failed), so what it would record (a reveal, a search) did not happen."""


class CryptoError(PIIGuardError):
    """Base of envelope and decryption errors."""


class EnvelopeFormatError(CryptoError, ValueError):
    """The bytes are not a well-formed piiguard envelope (version, length, encoding)."""


class DecryptionError(CryptoError):
    """Authentication failed: the value was tampered with, truncated, or moved from
    another column, table or key. One opaque error for every cause."""


class AlreadyEncryptedError(CryptoError, ValueError):
    """Refusing to encrypt a value that already parses as an envelope."""


class KeyStateError(PIIGuardError):
    """Base of errors about a key's existence or lifecycle state."""


class UnknownKeyError(KeyStateError):
    """No such data key or master key."""


class KeyDestroyedError(KeyStateError):
    """The key was destroyed (crypto-shredded): data under it is gone for good."""


class ScopeErasedError(KeyStateError):
    """A key scope was erased (``piiguard shred --scope``): no key is created for it
    again until it is re-opened on purpose (``piiguard keys reopen``). Names the scope
    (``scope``), never a value.

    >>> str(ScopeErasedError("scope was erased", scope="customers:C-42", operation="encrypt"))
    'scope was erased scope=customers:C-42 operation=encrypt'
    """

    def __init__(self, message: str, *, scope: str | None = None, column: str | None = None,
                 key_id: str | int | None = None, operation: str | None = None) -> None:
        self.scope = scope
        super().__init__(message, column=column, key_id=key_id, operation=operation)

    def _headline(self) -> str:
        return f"{self.reason} scope={self.scope}"


class KeyInUseError(KeyStateError):
    """The key cannot be retired or destroyed while rows still use it."""


class KMSError(PIIGuardError):
    """Base of errors from the key management service."""


class KMSUnavailableError(KMSError):
    """The KMS could not be reached in time, or throttled us beyond the retry budget."""


class KMSAccessError(KMSError):
    """The KMS answered but refused: disabled or missing key, access denied, bad context."""


class KMSConfigurationError(KMSAccessError, ConfigurationError):
    """The KMS client is mis-set (no credentials …): a ConfigurationError whose message
    names the fix, and a KMSError, so jobs stop instead of failing row by row."""


# ---------------------------------------------------------------------------------------
# frames that held values
# ---------------------------------------------------------------------------------------
#: Modules whose finished frames :func:`scrub_frames` clears with ``libraries_only=True``:
#: piiguard and the frameworks whose frames hold the values an application hands them.
LIBRARY_MODULES = ("piiguard", "sqlalchemy", "sqlmodel")
_YIELD_VALUE = dis.opmap.get("YIELD_VALUE", -1)
_GENERATOR_FLAGS = (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
                    | inspect.CO_ITERABLE_COROUTINE)


def _may_be_suspended(frame: Any) -> bool:
    """True unless a generator or coroutine frame has surely finished. A suspended one
    stopped at a ``YIELD_VALUE`` (an ``await`` or a ``yield``); one that raised or
    returned stopped elsewhere. (A running one refuses to be cleared anyway.)"""
    try:
        return frame.f_lasti < 0 or frame.f_code.co_code[frame.f_lasti] == _YIELD_VALUE
    except (IndexError, AttributeError):    # pragma: no cover - another interpreter
        return True


def chained(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception chained to it (``__cause__``, ``__context__``, the
    members of an exception group), each once.

    >>> try:
    ...     try:
    ...         raise KeyError("a")
    ...     except KeyError as inner:
    ...         raise InvalidFormatError("type") from inner
    ... except PIIGuardError as outer:
    ...     [type(e).__name__ for e in chained(outer)]
    ['InvalidFormatError', 'KeyError']
    """
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(getattr(e, "exceptions", None) or ())


def scrub_frames(exc: BaseException, *, libraries_only: bool = False) -> bool:
    """Clear the local variables of the finished frames that ``exc`` (and every exception
    chained to it) keeps alive through its traceback; True if every such frame was
    cleared, False if some are still running (they are left as they are).

    A raised exception keeps each frame it passed through, and with it each frame's
    local variables: the statement parameters SQLAlchemy was executing, the value a
    validator refused. Error trackers that capture locals (Sentry, rollbar) and
    post-mortem debuggers read them. Call this before handing an error to one of them;
    piiguard calls it (``libraries_only=True``: frames of piiguard, SQLAlchemy and
    SQLModel only) when a statement fails and its transaction is rolled back, and in the
    error handlers of :func:`piiguard.fastapi.install`. The traceback itself (files,
    lines, functions) stays. Frames still running and suspended generators and
    coroutines are never touched.

    >>> def refuse(value):
    ...     raise InvalidChecksumError("checksum")
    >>> try:
    ...     refuse("10000000147")
    ... except PIIGuardError as exc:
    ...     err = exc
    >>> err.__traceback__.tb_next.tb_frame.f_locals
    {'value': '10000000147'}
    >>> scrub_frames(err), err.__traceback__.tb_next.tb_frame.f_locals
    (True, {})
    """
    complete = True
    for e in chained(exc):
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            tb = tb.tb_next
            if frame.f_code.co_flags & _GENERATOR_FLAGS and _may_be_suspended(frame):
                continue        # clearing a suspended generator's frame would close it
            if libraries_only:
                module = frame.f_globals.get("__name__") or ""
                if module.partition(".")[0] not in LIBRARY_MODULES:
                    continue
            try:
                frame.clear()
            except RuntimeError:   # still running
                complete = False
    return complete
