"""Queued jobs: reencrypt / verify / encrypt-existing as Celery chords of range tasks,
run by real ``celery worker`` processes (RabbitMQ broker, Redis result backend), with
the job's progress and report in the application's database.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jobs_world import JobsApp, pg_url_of
from queue_world import Workers, need_queue_servers
from piiguard.rotation import verify
from piiguard.rotation.jobs import JobSpec

pytestmark = pytest.mark.slow

N = 3000


@pytest.fixture
def world(tmp_path, pg_engine):
    need_queue_servers()
    w = JobsApp(tmp_path, pg_url_of(pg_engine), N)
    yield w
    w.engine.dispose()


@pytest.fixture
def workers(world):
    ws = Workers(world.dir, world.spec)
    yield ws
    ws.stop()


def test_queued_reencrypt_verify_and_report(world, workers):
    from piiguard.rotation.celery import submit, wait

    world.guard.keys.rotate("dek", "customers")
    workers.start(concurrency=2)
    capp = workers.capp()
    job = submit(JobSpec("reencrypt", app=world.spec, batch_size=250), world.guard,
                 capp=capp, ranges=6)
    st = wait(world.guard, job, timeout=120)
    assert st["state"] == "done", workers.logs()
    rep = st["report"]
    assert rep["ok"] and rep["updated"] == N and rep["remaining"] == 0
    assert rep["values"] == 2 * N and st["done"] == N
    assert verify(world.guard).ok
    vjob = submit(JobSpec("verify", app=world.spec), world.guard, capp=capp, ranges=4)
    vst = wait(world.guard, vjob, timeout=120)
    assert vst["report"]["ok"] and vst["report"]["checked"] == 2 * N
    # a second reencrypt finds nothing: a job with no range finishes at once
    again = wait(world.guard, submit(JobSpec("reencrypt", app=world.spec), world.guard,
                                     capp=capp), timeout=60)
    assert again["report"]["updated"] == 0 and again["report"]["ok"]


def test_queued_verify_reports_a_failure(world, workers):
    from piiguard.rotation.celery import submit, wait

    with world.engine.begin() as conn:
        conn.execute(text("UPDATE customers SET national_id = (SELECT national_id FROM "
                          "customers WHERE id = 7) WHERE id = 2900"))
    workers.start(concurrency=1)
    st = wait(world.guard, submit(JobSpec("verify", app=world.spec), world.guard,
                                  capp=workers.capp(), ranges=3), timeout=120)
    rep = st["report"]
    assert not rep["ok"] and rep["failed"] == 1
    assert [f["row"] for f in rep["failures"]] == ["id=2900"]
