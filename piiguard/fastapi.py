"""FastAPI integration: ``install(app, guard, role=...)``.

One call gives a FastAPI application what piiguard needs around each request:

- **role scoping** that works for ``async def`` and plain ``def`` endpoints alike. The
  role comes from ``role``, any FastAPI dependency (a sync or async callable, with its
  own ``Header``/``Depends`` parameters) returning a role name, ``None`` (no role: the
  policy's default applies) or an :class:`~piiguard.acting_as` (to give a purpose or a
  principal too). piiguard enters it in an *async* dependency of its own: that runs in
  the request's task, so the role is in effect for the endpoint (a sync endpoint runs
  in a worker thread with a copy of that context), for the response serialisation and
  for the audit trail, and ends with the request. A role set in a plain ``def``
  dependency would be set in a worker thread and lost: that mistake is not possible
  here, because your dependency only *returns* the role;
- role-aware serialisation of piiguard pydantic types under ``guard``'s policy
  (:class:`piiguard.pydantic.masking`);
- error responses that never echo a value:

  - **422 without inputs**: request validation errors (FastAPI's default handler copies
    each error's ``input``, the value, into the body whatever the model config says)
    and pydantic ``ValidationError`` raised in an endpoint (``Model.model_validate(...)``)
    answer ``{"detail": [{"loc", "msg", "type"[, "rule"]}]}``: no ``input``, no ``ctx``
    (piiguard types add their ``rule``), for every field of every model;
  - :class:`~piiguard.errors.InvalidInputError` (a value refused by a column type or a
    search, e.g. ``Customer.national_id == "12345678901"``) → 422, never a 500;
    :class:`~piiguard.errors.MaskedValueError` → 422 (``piiguard_masked``);
  - :class:`~piiguard.errors.AccessDeniedError` → 403,
    :class:`~piiguard.errors.SearchLimitError` → 429 (with ``Retry-After``),
    :class:`~piiguard.errors.AuditError` → 503 (the reveal was refused because it could
    not be recorded), :class:`~piiguard.errors.KMSUnavailableError` → 503, any other
    piiguard error → 500 ``internal error`` (logged, without a value, on the
    ``piiguard.fastapi`` logger), a response that failed its ``response_model`` → 500
    (FastAPI's own error would quote the response's values in the server log);

  each handler first clears the local variables of the finished frames the error kept
  (:func:`piiguard.errors.scrub_frames`: the endpoint's, SQLAlchemy's …), which error
  trackers would otherwise capture. Handlers the application registered itself are kept
  (FastAPI's default 422 handler is replaced);
- a **lifespan** that, when the application shuts down, flushes the audit trail and
  closes the Guard (:meth:`piiguard.Guard.close`: plaintext keys dropped from memory),
  after the application's own lifespan has finished (it composes with
  ``FastAPI(lifespan=...)``: your shutdown code can still use the Guard).

Call it right after creating the app, before declaring routes (FastAPI fixes a route's
dependencies when the route is added; a route declared earlier is refused with a
:class:`~piiguard.errors.ConfigurationError` rather than left unscoped)::

    from fastapi import FastAPI, Header
    from piiguard import acting_as
    import piiguard.fastapi

    app = FastAPI()

    def caller_role(authorization: str | None = Header(None)) -> str | None:
        return roles_by_token.get(token_of(authorization))   # your authentication

    piiguard.fastapi.install(app, guard, role=caller_role)

    @app.get("/customers/{id}", response_model=CustomerOut)
    def get_customer(id: int): ...        # runs as the caller's role
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from piiguard.errors import (
    AccessDeniedError,
    AuditError,
    ConfigurationError,
    InvalidInputError,
    KMSUnavailableError,
    MaskedValueError,
    PIIGuardError,
    SearchLimitError,
    scrub_frames,
)
from piiguard.masking.context import acting_as
from piiguard.masking.host import MaskingHost
from piiguard.pydantic.serialization import masking

__all__ = ["errors_without_input", "install", "scope_of"]

logger = logging.getLogger("piiguard.fastapi")


def scope_of(actor: Any) -> acting_as | None:
    """The :class:`acting_as` for what a role dependency returned (a role name, ``None``
    or an ``acting_as``).

    >>> scope_of("support"), scope_of(None), scope_of("")
    (acting_as('support', purpose=None), None, None)
    >>> scope_of(42)
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: the role dependency returned a int: return a role
    name, None or an acting_as
    """
    if actor is None or actor == "":
        return None
    if isinstance(actor, acting_as):
        return actor
    if isinstance(actor, str):
        return acting_as(actor)
    raise ConfigurationError(f"the role dependency returned a {type(actor).__name__}: "
                             "return a role name, None or an acting_as")


def errors_without_input(errors: Any) -> list[dict[str, Any]]:
    """pydantic/FastAPI validation errors with only ``loc``, ``msg``, ``type`` and, for
    piiguard types, the ``rule``: never ``input`` (the value) nor ``ctx`` (which may
    hold an exception quoting it) nor ``url``.

    >>> errors_without_input([{"loc": ("body", "national_id"), "msg": "invalid value: "
    ...     "checksum rule failed", "type": "tckn_checksum", "input": "10000000147",
    ...     "ctx": {"rule": "checksum"}}])
    [{'loc': ['body', 'national_id'], 'msg': 'invalid value: checksum rule failed', \
'type': 'tckn_checksum', 'rule': 'checksum'}]
    """
    out = []
    for e in errors:
        item: dict[str, Any] = {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                "type": e.get("type", "")}
        rule = (e.get("ctx") or {}).get("rule")
        if isinstance(rule, str):
            item["rule"] = rule
        out.append(item)
    return out


def _error(status: int, exc: BaseException, content: Any,
           headers: dict[str, str] | None = None) -> JSONResponse:
    scrub_frames(exc)   # before anything (a tracker, a log handler) reads the frames
    return JSONResponse(status_code=status, content=content, headers=headers)


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, (RequestValidationError, ValidationError)) \
        else []
    content = {"detail": errors_without_input(errors)}
    if isinstance(exc, RequestValidationError):
        # FastAPI's error object holds the inputs and the request body too: emptied, for
        # whatever reads it after this handler (a tracker, a middleware's log line)
        for e in errors:
            if isinstance(e, dict):
                item = cast(dict[str, Any], e)
                item.pop("input", None)
                item.pop("ctx", None)
        exc.body = None
    return _error(422, exc, content)


async def _response_invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, ResponseValidationError) else []
    logger.error("response of %s %s failed its response_model: %s", request.method,
                 request.url.path, errors_without_input(errors))
    return _error(500, exc, {"detail": "internal error"})


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    rule = getattr(exc, "rule", None)
    # piiguard messages name the rule and column, never a value
    return _error(422, exc, {"detail": [{"loc": [], "msg": str(exc),
                                         "type": f"piiguard_{rule}", "rule": rule}]})


async def _access_denied(request: Request, exc: Exception) -> JSONResponse:
    return _error(403, exc, {"detail": str(exc)})


async def _search_limited(request: Request, exc: Exception) -> JSONResponse:
    return _error(429, exc, {"detail": str(exc)}, {"Retry-After": "60"})


async def _masked_value(request: Request, exc: Exception) -> JSONResponse:
    return _error(422, exc, {"detail": [
        {"msg": str(exc), "type": "piiguard_masked", "rule": getattr(exc, "rule", None)}]})


async def _audit_failed(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, exc, {"detail": str(exc)})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s: %s", request.method, request.url.path, exc)
    return _error(503, exc, {"detail": "service unavailable"}, {"Retry-After": "5"})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    # decryption, key and configuration errors: value-free, but nothing for a client
    logger.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                 exc)
    return _error(500, exc, {"detail": "internal error"})


_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    ValidationError: _validation_failed,
    ResponseValidationError: _response_invalid,
    InvalidInputError: _invalid_input,
    MaskedValueError: _masked_value,
    AccessDeniedError: _access_denied,
    SearchLimitError: _search_limited,
    AuditError: _audit_failed,
    KMSUnavailableError: _unavailable,
    PIIGuardError: _internal,
}


def _closing_lifespan(app: FastAPI, guard: MaskingHost) -> None:
    """Wrap the application's lifespan: the Guard is flushed and closed after it."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        try:
            async with inner(app_) as state:
                yield state
        finally:
            close = getattr(guard, "close", None)
            # (in a worker thread: a durable audit trail writes to the database)
            await run_in_threadpool(close if callable(close) else guard.audit.flush)

    app.router.lifespan_context = lifespan


def install(app: FastAPI, guard: MaskingHost, *, role: Callable[..., Any]) -> None:
    """Scope every request of ``app`` to the role ``role`` gives, mask responses under
    ``guard``'s policy, answer errors without values (422 without inputs, piiguard
    errors as 422/403/429/503/500), and flush and close ``guard`` when the application
    shuts down (see the module docstring)."""
    if not isinstance(app, FastAPI):
        raise ConfigurationError("piiguard.fastapi.install() takes a FastAPI application")
    if not isinstance(guard, MaskingHost):
        raise ConfigurationError("piiguard.fastapi.install() needs a piiguard Guard")
    if not callable(role):
        raise ConfigurationError("role= must be a callable or FastAPI dependency giving "
                                 "the caller's role")
    if getattr(app.state, "piiguard_guard", None) is not None:
        raise ConfigurationError("piiguard.fastapi.install() was already called for this "
                                 "app")
    early = [r.path for r in app.router.routes if isinstance(r, APIRoute)]
    if early:
        raise ConfigurationError(
            "piiguard.fastapi.install() must be called before routes are declared "
            f"(already declared: {', '.join(early[:3])}{' …' if len(early) > 3 else ''}): "
            "FastAPI fixes a route's dependencies when it is added, and these would run "
            "without the caller's role")

    # (a default, not Annotated[..., Depends(role)]: with postponed annotations FastAPI
    # could not resolve the local name ``role`` in a string annotation)
    async def piiguard_scope(actor: Any = Depends(role)) -> AsyncIterator[None]:  # noqa: B008
        # An async dependency: it runs in the request's task, so what it sets is in
        # effect for the endpoint (sync ones get a copy of this context) and for the
        # response serialisation.
        scope = scope_of(actor)
        with masking(guard):
            if scope is None:
                yield
            else:
                async with scope:
                    yield

    app.router.dependencies.append(Depends(piiguard_scope))
    for exc_type, handler in _HANDLERS.items():
        if exc_type not in app.exception_handlers:
            app.add_exception_handler(exc_type, handler)
    # FastAPI registers its own 422 handler (it copies each error's input into the
    # body): replaced, unless the application registered one of its own
    if app.exception_handlers.get(RequestValidationError) in (
            None, request_validation_exception_handler):
        app.add_exception_handler(RequestValidationError, _validation_failed)
    _closing_lifespan(app, guard)
    app.state.piiguard_guard = guard
