"""Roles that cannot leak: acting_as never escapes the block that set it.

- a generator that yields inside ``with acting_as(...)`` is refused (it would leave its
  caller running as that role while suspended); ``@acting_as`` on a generator function
  (sync and async) sets the role around each resume only;
- context managers built on generators (contextlib, FastAPI dependencies) still work;
- one ``acting_as`` object shared by overlapping asyncio tasks and by threads;
- blocks exited out of order are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from piiguard import acting_as
from piiguard.errors import ConfigurationError
from piiguard.masking import current_principal, current_purpose, current_role

SHARED = acting_as("admin", purpose="shared")          # one module-level object


# ----------------------------------------------------------------------------- generators

def test_a_generator_yielding_inside_acting_as_is_refused():
    def rows():
        with acting_as("admin"):
            yield current_role()

    gen = rows()
    with pytest.raises(ConfigurationError, match=r"generator rows\(\).*@acting_as"):
        next(gen)
    assert current_role() is None


async def test_an_async_generator_yielding_inside_acting_as_is_refused():
    async def rows():
        async with acting_as("admin"):
            yield current_role()

    with pytest.raises(ConfigurationError, match="inside the generator"):
        await anext(rows())
    assert current_role() is None


def test_a_decorated_generator_has_the_role_only_while_it_runs():
    seen_inside, seen_outside = [], []

    @acting_as("admin", purpose="export", principal="job-1")
    def rows(n):
        for i in range(n):
            seen_inside.append((current_role(), current_purpose(), current_principal()))
            got = yield i
            seen_inside.append((current_role(), got))
        return "done"

    gen = rows(3)
    assert next(gen) == 0
    seen_outside.append(current_role())
    assert gen.send("a") == 1
    seen_outside.append(current_role())
    with acting_as("support"):
        assert gen.send("b") == 2              # the caller's own role stays its own
        seen_outside.append(current_role())
    with pytest.raises(StopIteration) as stop:
        gen.send("c")
    assert stop.value.value == "done"
    assert seen_outside == [None, None, "support"]
    assert seen_inside == [("admin", "export", "job-1"), ("admin", "a"),
                           ("admin", "export", "job-1"), ("admin", "b"),
                           ("admin", "export", "job-1"), ("admin", "c")]
    assert current_role() is None


def test_a_decorated_generator_gets_throw_and_close_under_its_role():
    log = []

    @acting_as("admin")
    def rows():
        try:
            while True:
                try:
                    yield current_role()
                except ValueError:
                    log.append(("caught", current_role()))
        finally:
            log.append(("closed", current_role()))

    gen = rows()
    assert next(gen) == "admin" and current_role() is None
    assert gen.throw(ValueError("x")) == "admin"
    gen.close()
    assert log == [("caught", "admin"), ("closed", "admin")]
    assert current_role() is None


async def test_a_decorated_async_generator_has_the_role_only_while_it_runs():
    @acting_as("admin")
    async def rows():
        for i in range(3):
            await asyncio.sleep(0)
            yield i, current_role()

    outside = []
    got = []
    async for item in rows():
        got.append(item)
        outside.append(current_role())
    assert got == [(0, "admin"), (1, "admin"), (2, "admin")]
    assert outside == [None, None, None]


def test_generator_context_managers_may_enter_acting_as():
    @contextlib.contextmanager
    def as_admin():
        with acting_as("admin"):
            yield

    with as_admin():
        assert current_role() == "admin"
    assert current_role() is None


async def test_async_generator_context_managers_may_enter_acting_as():
    @contextlib.asynccontextmanager
    async def as_admin():
        async with acting_as("admin"):
            yield

    async with as_admin():
        assert current_role() == "admin"
    assert current_role() is None


# ----------------------------------------------------------------------------- shared objects

async def test_one_acting_as_object_entered_by_overlapping_tasks():
    started = asyncio.Event()
    results = {}

    async def task(name, wait_first):
        if wait_first:
            await started.wait()
        async with SHARED:
            started.set()
            for _ in range(5):
                await asyncio.sleep(0)
                assert current_role() == "admin"
            results[name] = "ok"
        results[name + "_after"] = current_role()

    await asyncio.gather(task("a", False), task("b", True), task("c", True))
    assert results == {"a": "ok", "b": "ok", "c": "ok", "a_after": None,
                       "b_after": None, "c_after": None}
    assert current_role() is None


def test_one_acting_as_object_in_many_threads_and_nested_in_itself():
    errors = []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            for _ in range(200):
                with SHARED:
                    with SHARED:
                        assert current_role() == "admin"
                    assert current_role() == "admin"
                assert current_role() is None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_blocks_exited_out_of_order_are_refused():
    a, b = acting_as("a"), acting_as("b")
    a.__enter__()
    b.__enter__()
    with pytest.raises(ConfigurationError, match="out of order"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)
    assert current_role() is None


def test_decorated_functions_still_work():
    @acting_as("ops")
    def f():
        return current_role()

    @acting_as("ops")
    async def g():
        return current_role()

    assert f() == "ops" and asyncio.run(g()) == "ops" and current_role() is None


async def test_one_masking_object_entered_by_overlapping_tasks(guard):
    from piiguard.pydantic import masking
    from piiguard.pydantic.serialization import current_guard

    shared = masking(guard)

    async def task():
        async with shared:
            for _ in range(3):
                await asyncio.sleep(0)
                assert current_guard() is guard
        return current_guard()

    assert await asyncio.gather(task(), task(), task()) == [None, None, None]
