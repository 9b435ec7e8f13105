"""``docs/workers.md``, checked: the commands and options it shows exist, its defaults
are the code's, the task options it promises are set, its figures are the benchmark's,
and the queued job's logic (plan, ranges, finish once) behaves as it says, here without
a broker (``tests/test_rotation_queue.py`` runs it on real Celery workers).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from jobs_world import JobsApp
from piiguard.cli import app as cli_app
from piiguard.errors import ConfigurationError
from piiguard.rotation.jobs import JobSpec

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "workers.md").read_text()


def _help(*argv: str) -> str:
    res = CliRunner().invoke(cli_app, [*argv, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_the_commands_and_options_shown_exist():
    for cmd in ("reencrypt", "verify", "encrypt-existing"):
        out = _help(cmd)
        for opt in ("--workers", "--queue", "--ranges", "--no-wait"):
            assert opt in out, (cmd, opt)
    out = _help("jobs")
    for sub in ("list", "status", "wait"):
        assert sub in out
    for line in re.findall(r"^piiguard .*$", DOC, re.M):
        assert "--app myapp.models:guard" in line


def test_defaults_and_task_options_are_the_codes():
    celery = pytest.importorskip("piiguard.rotation.celery")
    from piiguard.rotation.jobstore import JOB_TABLES, JOBS
    from piiguard.rotation.queued import RANGE_ROWS

    assert RANGE_ROWS == 50_000 and "about 50,000 rows" in DOC
    assert f"| `PIIGUARD_CELERY_BROKER` | `{celery.DEFAULT_BROKER}` |" in DOC
    assert f"| `PIIGUARD_CELERY_BACKEND` | `{celery.DEFAULT_BACKEND}` |" in DOC
    assert f"| `PIIGUARD_CELERY_QUEUE` | `{celery.QUEUE}` |" in DOC
    assert f"`{JOBS.name}`" in DOC and f"`{JOB_TABLES.name}`" in DOC
    capp = celery.make_app("memory://", "cache+memory://", "q")
    for name in ("piiguard.range", "piiguard.finish"):
        task = capp.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost
    assert capp.conf.worker_prefetch_multiplier == 1


def test_a_worker_refuses_another_apps_task(monkeypatch):
    celery = pytest.importorskip("piiguard.rotation.celery")
    monkeypatch.setenv("PIIGUARD_APP", "myapp.models:guard")
    with pytest.raises(ConfigurationError, match="not other.app:guard's"):
        celery.worker_guard(JobSpec("verify", app="other.app:guard"))
    monkeypatch.delenv("PIIGUARD_APP")
    with pytest.raises(ConfigurationError, match="PIIGUARD_APP"):
        celery.worker_guard(JobSpec("verify", app="other.app:guard"))


def test_the_broker_message_holds_no_database_url():
    spec = JobSpec("reencrypt", app="m:g", database_url="postgresql://u:secret@h/db")
    assert "secret" not in repr(spec.public().to_dict())


def test_queued_logic_without_a_broker(tmp_path):
    """plan → every range → finish: the report; a finish delivered twice acts once; a
    range run twice (a redelivery) changes and counts nothing more."""
    from piiguard.rotation.jobstore import JobStore
    from piiguard.rotation.queued import finish_pass, plan, run_range

    w = JobsApp(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", 1200)
    w.guard.keys.rotate("dek", "customers")
    spec = JobSpec("reencrypt", app=w.spec, batch_size=100)
    todo, tasks = plan(w.guard, spec, ranges=4)
    assert todo == {"customers": 1200} and len(tasks) == 4
    store = JobStore(w.engine)
    job = store.create("reencrypt", spec.to_dict(), todo)
    results = [run_range(w.guard, spec, job, t) for t in tasks]
    again = run_range(w.guard, spec, job, tasks[0])          # delivered twice
    assert again["counts"]["updated"] == 0
    assert store.get(job)["done"] == 1200
    assert finish_pass(w.guard, spec, job, 1, results) is None
    first = store.get(job)
    assert first["state"] == "done" and first["report"]["updated"] == 1200
    assert first["report"]["ok"] and first["report"]["values"] == 2400
    assert finish_pass(w.guard, spec, job, 1, results) is None   # a second delivery
    assert store.get(job)["report"] == first["report"]
    w.engine.dispose()


def test_the_figures_are_the_benchmarks():
    results = ROOT / "benchmarks" / "results" / "workers-1000000.md"
    if not results.exists():
        pytest.skip("no 1,000,000-row benchmark result yet")
    table = [line for line in results.read_text().splitlines() if line.startswith("|")]
    for line in table:
        assert line in DOC, line
    import json

    doc = json.loads(results.with_suffix(".json").read_text())
    by = {c["case"]: c for c in doc["cases"]}
    assert f"**2 worker processes: {doc['speedup_2_processes']}x one**" in DOC
    assert f"workers: {doc['speedup_queue_2']}x**" in DOC
    assert f"verify: {doc['speedup_verify_2']}x" in DOC
    for name in ("processes-1", "processes-2", "queue-2"):
        assert all(n == 2 for n in by[name]["kms_calls_by_process"])   # old + new DEK
        assert f"{by[name]['rows_per_s']:,} rows/s" in DOC or \
            f"{by[name]['rows_per_s']:,} vs" in DOC or f"({by[name]['rows_per_s']:,} " in DOC
    assert max(m for c in doc["cases"] for m in c["worker_memory_mib"]) < 100
    hours = 1e9 / by["processes-2"]["rows_per_s"] / 3600
    assert f"about {hours:.0f} hours" in DOC
    assert f"about {1e9 / (2 * 15900) / 3600:.0f} hours" in DOC


def test_workers_are_spawned():
    import inspect

    from piiguard.rotation import workers

    assert 'get_context("spawn")' in inspect.getsource(workers.WorkerPool)
    assert "(`spawn`: nothing of the parent process, no key," in DOC


def test_alembic_autogenerate_keeps_the_job_tables():
    pytest.importorskip("alembic")
    from piiguard.rotation.jobstore import JOB_TABLES, JOBS
    from piiguard.sqlalchemy.alembic import JOB_TABLE_NAMES

    assert set(JOB_TABLE_NAMES) == {JOBS.name, JOB_TABLES.name}


def test_ci_starts_the_broker_and_the_backend():
    run = (ROOT / ".ci" / "run").read_text()
    services = (ROOT / ".ci" / "services").read_text()
    assert run.index("bash .ci/services") < run.index("make test")
    assert "redis-server --daemonize yes" in services and "6379" in services
    assert "rabbitmq-server -detached" in services and "5672" in services
    assert "(`.ci/services`)" in DOC


def test_queue_tests_fail_under_ci_without_a_broker(monkeypatch):
    import queue_world

    monkeypatch.setattr(queue_world, "BROKER", "amqp://guest:guest@127.0.0.1:1//")
    monkeypatch.setattr(queue_world, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        queue_world.need_queue_servers()
    monkeypatch.setattr(queue_world, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="RabbitMQ broker not reachable"):
        queue_world.need_queue_servers()


@given(lo=st.integers(-10**12, 10**12), span=st.integers(0, 10**6),
       workers=st.integers(2, 64))
def test_ranges_cover_every_key_once(lo, span, workers):
    from piiguard.rotation.batches import KeyRange, split

    hi = lo + span
    assert split((lo, hi), 1) == [KeyRange(None, None)]      # one worker: unbounded
    parts = split((lo, hi), workers)
    assert 1 <= len(parts) <= workers
    assert parts[0].lo == lo and parts[-1].hi == hi
    for a, b in zip(parts, parts[1:], strict=False):
        assert b.lo == a.hi + 1 and a.lo <= a.hi


@given(st.builds(dict, updated=st.integers(0, 10**9), conflicts=st.integers(0, 10**6),
                 values=st.integers(0, 10**9)),
       st.lists(st.text(min_size=1, max_size=20), max_size=5))
def test_counts_round_trip_as_plain_data(numbers, stuck):
    import json

    from piiguard.rotation.batches import Counts, Failure

    c = Counts()
    for k, v in numbers.items():
        setattr(c, k, v)
    c.stuck = set(stuck)
    c.failures = [Failure("t.c", s, "DecryptionError") for s in stuck]
    back = Counts.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back.to_dict() == c.to_dict()


def test_max_rate_is_shared_by_processes_and_per_worker_in_the_queue(tmp_path):
    import inspect

    from piiguard.rotation import queued
    from piiguard.rotation.jobs import batch_job

    w = JobsApp(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", 10)
    spec = JobSpec("reencrypt", app=w.spec, max_rate=1000)
    assert batch_job(w.guard, spec, "customers", workers=4).max_rate == 250
    assert batch_job(w.guard, spec, "customers").max_rate == 1000
    assert "batch_job(guard, spec, task.table)" in inspect.getsource(queued.run_range)
    assert "with `--queue` it\n  applies to each worker process" in DOC
    w.engine.dispose()


def test_the_ten_million_row_figures_are_the_benchmarks():
    import json

    results = ROOT / "benchmarks" / "results" / "workers-10000000.json"
    if not results.exists():
        pytest.skip("no 10,000,000-row benchmark result yet")
    doc = json.loads(results.read_text())
    case = doc["cases"][0]
    assert case["case"] == "processes-2" and case["rows"] == 10_000_000 and case["ok"]
    table = [line for line in results.with_suffix(".md").read_text().splitlines()
             if line.startswith("|")]
    for line in table:
        assert line in DOC, line
    assert f"{case['wall_s']} s ({case['wall_s'] / 60:.0f} minutes) at " \
           f"{case['rows_per_s']:,} rows/s" in DOC
    assert case["kms_calls"] == 4 and case["kms_calls_by_process"] == [2, 2]
    assert f"{case['kms_calls']} KMS calls in all (2 per worker process)" in DOC
    assert max(case["worker_memory_mib"]) < 74 and "stayed at 73 MiB" in DOC
    assert f"about {1e9 / case['rows_per_s'] / 3600:.0f} hours)" in DOC
