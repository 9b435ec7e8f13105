"""``--workers N``: reencrypt / verify / encrypt-existing in N worker processes.

Each worker is a spawned process that imports the application module by name (as the
CLI's ``--app`` does) and builds its own Guard, engine and key cache: the tests count
KMS calls per process id through the app's logging KMS (``tests/jobs_world.py``), check
that the work happened in other processes than the test's, that the counts and the one
progress total add up, that a concurrent writer loses nothing (PostgreSQL), and that
the CLI runs it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from jobs_world import JobsApp, pg_url_of
from piiguard.cli import app as cli_app
from piiguard.rotation import CountingProgress, reencrypt, verify
from piiguard.rotation.jobs import JobSpec
from piiguard.rotation.workers import run_job

pytestmark = pytest.mark.slow

N = 1500


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = pg_url_of(request.getfixturevalue("pg_engine"))
    w = JobsApp(tmp_path, url, N)
    yield w
    w.engine.dispose()


def test_reencrypt_in_two_processes(world):
    world.guard.keys.rotate("dek", "customers")
    world.clear_kms_log()
    progress = CountingProgress()
    report = run_job(JobSpec("reencrypt", app=world.spec, batch_size=200), workers=2,
                     progress=progress, guard=world.guard)
    assert report.ok and report.updated == N and report.values == 2 * N
    assert progress.done == N                      # one bar: the workers' rows, once
    calls = world.kms_calls()
    workers = {pid for pid in calls if pid != os.getpid()}
    assert len(workers) == 2                       # the work ran in two other processes
    # one unwrap per worker and key it used (old DEK, new DEK), whatever the rows
    assert all(calls[pid] <= 2 for pid in workers), calls
    assert verify(world.guard).ok
    assert reencrypt(world.guard).updated == 0     # nothing left: a second run is a no-op
    again = run_job(JobSpec("reencrypt", app=world.spec), workers=2, guard=world.guard)
    assert again.updated == 0 and again.ok


def test_verify_in_processes_finds_what_one_process_finds(world):
    with world.engine.begin() as conn:   # a ciphertext copied to another row, in raw SQL
        conn.execute(text("UPDATE customers SET national_id = (SELECT national_id FROM "
                          "customers WHERE id = 7) WHERE id = 900"))
    one = verify(world.guard)
    progress = CountingProgress()
    two = run_job(JobSpec("verify", app=world.spec, batch_size=300), workers=2,
                  progress=progress, guard=world.guard)
    assert progress.done == N
    assert two.checked == one.checked == 2 * N
    assert two.failed == one.failed == 1 and not two.ok
    assert [f.row for f in two.failures] == [f.row for f in one.failures] == ["id=900"]


def test_encrypt_existing_in_processes(tmp_path, pg_engine):
    world = JobsApp(tmp_path, pg_url_of(pg_engine), N, plain_phones=True)
    assert not verify(world.guard).ok               # plaintext left
    report = run_job(JobSpec("encrypt-existing", app=world.spec, table="customers",
                             column="phone"), workers=2, guard=world.guard)
    assert report.ok and report.updated == N
    assert verify(world.guard).ok
    with world.engine.connect() as conn:
        phones = conn.execute(select(world.module.Customer.phone)
                              .where(world.table.c.id == 42)).scalar()
    assert phones == "+905380000042"


def test_no_update_is_lost_with_two_processes_and_a_writer(tmp_path, pg_engine):
    world = JobsApp(tmp_path, pg_url_of(pg_engine), 4000)
    world.guard.keys.rotate("dek", "customers")
    t = world.table
    stop = threading.Event()
    last: dict[int, str] = {}

    def writer() -> None:
        rnd = random.Random(7)
        while not stop.is_set():
            i = rnd.randint(1, 4000)
            value = f"+90532{rnd.randint(0, 9999999):07d}"
            with world.engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == i).values(phone=value))
            last[i] = value

    th = threading.Thread(target=writer)
    th.start()
    try:
        time.sleep(0.2)
        report = run_job(JobSpec("reencrypt", app=world.spec, batch_size=100,
                                 max_passes=10), workers=2, guard=world.guard)
    finally:
        stop.set()
        th.join()
    assert report.ok and last
    assert verify(world.guard).ok
    Customer = world.module.Customer
    with world.engine.connect() as conn:
        got = dict(conn.execute(select(Customer.id, Customer.phone)
                                .where(Customer.id.in_(list(last)))).all())
    assert got == last


def test_cli_workers(world):
    world.guard.keys.rotate("dek", "customers")
    runner = CliRunner()
    res = runner.invoke(cli_app, ["--json", "--app", world.spec, "reencrypt", "--workers",
                                  "2", "--batch-size", "500"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["updated"] == N and doc["workers"] == 2
    res = runner.invoke(cli_app, ["--json", "--app", world.spec, "verify", "--workers", "2"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["checked"] == 2 * N


def test_cli_workers_need_the_app(tmp_path):
    res = CliRunner().invoke(cli_app, ["--key-file", str(tmp_path / "k"), "--database-url",
                                       f"sqlite:///{tmp_path / 'x.db'}", "verify",
                                       "--workers", "2"])
    assert res.exit_code in (1, 2)


def test_a_worker_that_cannot_load_the_guard_says_why(tmp_path):
    (tmp_path / "unbound_app_x1.py").write_text(
        "from piiguard import Guard, LocalKMS\n"
        f"guard = Guard(kms=LocalKMS.from_file({str(tmp_path / 'k')!r}, create=True))\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    from piiguard.errors import ConfigurationError
    from piiguard.guard import Guard
    from piiguard.kms.local import LocalKMS
    parent = Guard(kms=LocalKMS.generate())
    with pytest.raises(ConfigurationError, match="not bound to a database in a worker"):
        run_job(JobSpec("verify", app="unbound_app_x1:guard"), workers=2, guard=parent)
