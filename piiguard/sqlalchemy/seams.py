"""What leaves a failed statement: errors at the seam between piiguard and SQLAlchemy.

When a statement fails, SQLAlchemy builds an error that quotes the statement's
parameters (the application's plaintext, for a value refused before encryption), and
every frame the error passes through keeps its local variables (the rows of an
``executemany``, the ORM's parameter dicts). :func:`handle_error`, an ``Engine``
``handle_error`` listener, makes sure that what the application catches carries no value:

- a piiguard error raised inside the statement (a refused value, a decryption
  failure) is raised as itself, naming the rule, ``table.column`` and key id, with
  nothing chained that could quote the value; not as a ``StatementError``;
- any other error of a statement that binds values of an encrypted column keeps its
  class (``IntegrityError`` stays one) but not the parameters: its ``params`` is
  ``None`` and its message says they were hidden. The driver's own message (its
  ``orig``) is the database's: PostgreSQL's ``DETAIL: Failing row contains (...)`` and
  MariaDB's ``Duplicate entry '...'`` print stored bytes, i.e. envelopes and blind
  indexes, never plaintext (and ``create_engine(..., hide_parameters=True)`` hides
  SQLAlchemy's own parameter listing for every statement);
- the frames the error passed through are cleared (:func:`piiguard.errors.scrub_frames`):
  those below the listener at once, and those of piiguard, SQLAlchemy and SQLModel
  above it, which are still running then, as soon as they have finished, i.e. when
  the session or connection rolls back or is returned to the pool (:func:`scrub_pending`,
  on ``Session`` ``after_soft_rollback``, ``Engine`` ``rollback`` and ``Pool``
  ``checkin``). Frames of the application's own code are left as they are.

Errors raised before the statement runs (the ``before_execute`` listeners: write rules,
row-bound values, blind indexes of an UPDATE) go through :func:`guarded`, which does the
same for them.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc

from piiguard.errors import InvalidInputError, PIIGuardError, scrub_frames
from piiguard.sqlalchemy.processors import unexpected
from piiguard.sqlalchemy.state import attached_column_of
from piiguard.sqlalchemy.storage import BlindIndex

__all__ = ["guarded", "handle_error", "involves_encrypted", "refused", "scrub_pending"]

#: Errors whose frames are still to be cleared (weakly held: a collected error needs
#: nothing), most recent last; a bounded queue, so a burst of failures costs no memory.
_pending: deque[weakref.ref[BaseException]] = deque(maxlen=64)
_lock = threading.Lock()


def _defer(exc: BaseException) -> None:
    try:
        ref = weakref.ref(exc)
    except TypeError:  # pragma: no cover - an exception type without weakref support
        return
    with _lock:
        _pending.append(ref)


def scrub_pending(*_: Any) -> None:
    """Clear the finished piiguard, SQLAlchemy and SQLModel frames of the errors of
    failed statements (a listener: its arguments are ignored). An error whose frames
    are all finished and cleared leaves the queue."""
    if not _pending:
        return
    with _lock:
        refs = list(_pending)
        _pending.clear()
    keep = []
    for ref in refs:
        err = ref()
        if err is not None and not scrub_frames(err, libraries_only=True):
            keep.append(ref)   # some frames still run: again at the next rollback
    if keep:
        with _lock:
            _pending.extendleft(reversed(keep))


def refused(err: PIIGuardError) -> PIIGuardError:
    """``err`` ready to leave piiguard: an input error without its chain, the frames
    below cleared now and the ones above once they finish."""
    if isinstance(err, InvalidInputError):
        err.__cause__ = None
        err.__context__ = None
        err.__suppress_context__ = True
    scrub_frames(err, libraries_only=True)
    _defer(err)
    return err


def involves_encrypted(context: Any) -> bool:
    """True if the statement of an execution context binds a value of an encrypted
    column or a blind index (what its parameters would show)."""
    compiled = getattr(context, "compiled", None)
    binds = getattr(compiled, "binds", None)
    if not binds:
        return False
    for bind in binds.values():
        t = getattr(bind, "type", None)
        if attached_column_of(t) is not None or isinstance(t, BlindIndex):
            return True
    return False


def handle_error(ctx: Any) -> BaseException | None:
    """``Engine`` ``handle_error`` listener: see the module docstring."""
    err = ctx.original_exception
    if isinstance(err, PIIGuardError):
        refused(err)
        # (SQLAlchemy raises what we return "from" the original: a copy, so that the
        # error is not its own cause)
        out: BaseException = err.clone()
        _defer(out)
        return out
    processing = ctx.execution_context is None and \
        not isinstance(err, ctx.dialect.loaded_dbapi.Error)
    if not processing and not involves_encrypted(ctx.execution_context):
        return None
    scrub_frames(err, libraries_only=True)
    sa_err = ctx.sqlalchemy_exception
    if not isinstance(sa_err, sa_exc.StatementError) or sa_err.params is None:
        _defer(sa_err if sa_err is not None else err)
        return None
    # The same class of error (an IntegrityError stays one), without the parameters:
    # the application's values before processing, envelopes and blind indexes after.
    hidden = sa_exc.DBAPIError.instance(
        ctx.statement, None, err, ctx.dialect.loaded_dbapi.Error, hide_parameters=True,
        connection_invalidated=ctx.is_disconnect, dialect=ctx.dialect,
        ismulti=getattr(sa_err, "ismulti", None))
    if isinstance(hidden, sa_exc.StatementError):
        hidden.add_detail("statement parameters hidden by piiguard: the statement binds "
                          "values of encrypted columns")
    _defer(hidden)
    return hidden


def guarded(listener: Callable[..., Any]) -> Callable[..., Any]:
    """A ``before_execute`` listener whose errors leave as :func:`refused` piiguard
    errors (an unexpected exception becomes one naming its type, never its message)."""

    @functools.wraps(listener)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return listener(*args, **kw)
        except PIIGuardError as exc:
            err = exc
        except Exception as exc:  # noqa: BLE001 - it may quote a value: not chained
            err = unexpected(exc, None)
            scrub_frames(exc, libraries_only=True)
        del args, kw
        raise refused(err)
    return wrapper
