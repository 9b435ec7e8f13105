"""What a job is, as plain data, and how a worker rebuilds it: the seam between the
operator who starts ``reencrypt`` / ``verify`` / ``encrypt-existing`` and the worker
processes (:mod:`~piiguard.rotation.workers`) or queued tasks
(:mod:`~piiguard.rotation.celery`) that run its ranges.

A worker never receives a key, a Guard or a connection: it receives a :class:`JobSpec`
(the application's Guard as ``module:attribute``, the options) and builds its own Guard,
engine and key cache from it, as the CLI does from ``--app``::

    spec = JobSpec("reencrypt", app="myapp.models:guard", batch_size=1000)
    guard = load_guard(spec.app)
    job = batch_job(guard, spec, "customers")   # then job.run_range(lo, hi)

>>> JobSpec.from_dict(JobSpec("verify", app="m:g", table="t").to_dict())
JobSpec(kind='verify', app='m:g', database_url=None, table='t', ...)
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from piiguard.errors import ConfigurationError
from piiguard.rotation.batches import BatchJob, default_batch_size
from piiguard.rotation.migrate import migrate_job
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.reencrypt import reencrypt_job

__all__ = ["KINDS", "JobSpec", "batch_job", "load_guard"]

#: The jobs that run by key ranges in several processes or machines.
KINDS = ("reencrypt", "verify", "encrypt-existing")


@dataclass(frozen=True)
class JobSpec:
    """One job as plain, picklable, JSON-able data: no key, no Guard, no connection.

    ``database_url`` overrides the engine the ``app`` Guard is bound to; it may hold a
    password, so :meth:`public` drops it before a spec leaves the machine (a queued
    job's workers take the database from their own ``PIIGUARD_DATABASE_URL``)."""

    kind: str
    app: str
    database_url: str | None = None
    table: str | None = None
    column: str | None = None
    batch_size: int | None = None
    dry_run: bool = False
    max_passes: int = 5
    max_rate: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"unknown job kind {self.kind!r} (one of "
                                     f"{', '.join(KINDS)})", operation="job")
        if self.kind == "encrypt-existing" and not (self.table and self.column):
            raise ConfigurationError("encrypt-existing needs a table and a column",
                                     operation="encrypt-existing")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def public(self) -> JobSpec:
        """The spec without ``database_url`` (what goes into a broker message)."""
        return replace(self, database_url=None)


def load_guard(app: str, database_url: str | None = None) -> Any:
    """The Guard named by ``package.module:attr`` (``attr`` may be dotted, or a function
    returning a Guard), bound to ``database_url`` when given. The current directory is
    importable, as with uvicorn and celery.

    >>> try:
    ...     load_guard("piiguard")
    ... except ConfigurationError as exc:
    ...     print(exc)
    must look like package.module:attribute (got 'piiguard')
    """
    from piiguard.guard import Guard

    module_name, sep, attr = app.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"must look like package.module:attribute (got {app!r})")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} "
                                 f"({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Guard) and callable(obj):
        obj = obj()
    if not isinstance(obj, Guard):
        raise ConfigurationError(f"{app!r} is not a piiguard Guard (got "
                                 f"{type(obj).__name__})")
    if database_url:
        from sqlalchemy import create_engine

        obj.bind(create_engine(database_url))
    return obj


def batch_job(guard: Any, spec: JobSpec, table: str, *, progress: Progress | None = None,
              stop: threading.Event | None = None, workers: int = 1) -> BatchJob:
    """The batch job of ``spec`` on ``table`` (``reencrypt`` or ``encrypt-existing``),
    built in the worker from its own Guard; ``max_rate`` is shared by ``workers``."""

    kw: dict[str, Any] = dict(
        batch_size=spec.batch_size or default_batch_size(guard.engine),
        dry_run=spec.dry_run, progress=progress or NullProgress(),
        max_rate=spec.max_rate and spec.max_rate / workers,
        stop=stop or threading.Event())
    if spec.kind == "reencrypt":
        return reencrypt_job(guard, table, **kw)
    if spec.kind == "encrypt-existing":
        assert spec.column is not None  # checked in __post_init__
        return migrate_job(guard, table, spec.column, **kw)
    raise ConfigurationError(f"{spec.kind} is not a batch job", operation=spec.kind)
