"""Key changes with separate OS processes: the runbook's steps under live application
processes (tests/notify_app.py.txt), on PostgreSQL, MariaDB and SQLite.

- index rotation exactly as docs/operations.md says (``keys rotate --kind index``,
  ``reencrypt``, ``keys retire``), two processes searching all along: no search misses;
- ``keys rotate`` immediately followed by ``reencrypt`` while a process writes:
  ``reencrypt`` exits 0 with ``remaining`` 0 on its first run;
- ``shred``: processes that had the key cached refuse the erased value within the
  change bound (1 s on PostgreSQL, 2 s elsewhere), and their next write in that scope
  is refused (``ScopeErasedError``), never made under the destroyed key.

Counts are small by default so that ``make test`` stays short; the figures in the
closing note come from larger runs::

    PIIGUARD_NOTIFY_SEARCHES=10000 PIIGUARD_NOTIFY_TRIALS=20 \\
        pytest -s tests/test_keys_notify_processes.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from piiguard import LocalKMS

pytestmark = pytest.mark.slow

#: The application (tests/notify_app.py would be imported by --doctest-modules): written
#: to tmp_path, importable there as the CLI's app.
APP = Path(__file__).with_name("notify_app.py.txt").read_text()
SEARCHES = int(os.environ.get("PIIGUARD_NOTIFY_SEARCHES", "1500"))
TRIALS = int(os.environ.get("PIIGUARD_NOTIFY_TRIALS", "4"))
ROWS = 300
BOUND = {"postgresql": 1.0, "mysql": 2.0, "sqlite": 2.0}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def env(request, tmp_path):
    """The environment of an application process on a fresh database."""
    key = tmp_path / "master.key"
    LocalKMS.from_file(key, create=True)
    (tmp_path / "notify_app.py").write_text(APP)
    out = {"NOTIFY_KEY": str(key), "PYTHONPATH": str(tmp_path), "NOTIFY_DIR": str(tmp_path)}
    if request.param == "sqlite":
        out["NOTIFY_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        engine = request.getfixturevalue("pg_engine" if request.param == "postgresql"
                                         else "mariadb_engine")
        out["NOTIFY_URL"] = engine.url.render_as_string(hide_password=False)
        if request.param == "postgresql":
            with engine.connect() as conn:
                out["NOTIFY_SCHEMA"] = conn.execute(text("SELECT current_schema()")).scalar()
    return {**os.environ, **out}


def app(env):
    """notify_app imported in this process too (the main process: the operator)."""
    saved = dict(os.environ)
    os.environ.update(env)
    sys.path.insert(0, env["NOTIFY_DIR"])
    try:
        sys.modules.pop("notify_app", None)
        import notify_app
    finally:
        sys.path.remove(env["NOTIFY_DIR"])
        os.environ.clear()
        os.environ.update(saved)
    return notify_app


def worker(env, *args):
    return subprocess.Popen([sys.executable, str(Path(env["NOTIFY_DIR"]) / "notify_app.py"),
                             *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def cli(env, *args):
    exe = Path(sys.executable).parent / "piiguard"
    return subprocess.run([str(exe), "--json", *args], env={**env,
                          "PIIGUARD_APP": "notify_app:guard"}, cwd=env["NOTIFY_DIR"],
                          capture_output=True, text=True, timeout=300)


def expect(proc, word):
    line = proc.stdout.readline().strip()
    assert line == word, f"worker said {line!r}"


def fill(mod, n=ROWS):
    with Session(mod.engine) as s:
        s.add_all(mod.person(i) for i in range(1, n + 1))
        s.commit()


def test_index_rotation_as_the_runbook_says_misses_no_search(env, capsys):
    mod = app(env)
    fill(mod)
    searchers = [worker(env, "search", str(SEARCHES)) for _ in range(2)]
    for p in searchers:
        expect(p, "ready")
    old = mod.guard.keys.keys(kind="index", states=["active"])[0].id
    steps = [cli(env, "keys", "rotate", "--kind", "index", "--scope", "customers"),
             cli(env, "reencrypt"),
             cli(env, "keys", "retire", str(old))]
    for p in searchers:
        p.stdin.write("stop\n")
        p.stdin.flush()
    results = [tuple(map(int, p.stdout.readline().split())) for p in searchers]
    for p in searchers:
        p.wait(60)
    for step in steps:
        assert step.returncode == 0, step.stderr
    with capsys.disabled():
        print(f"\n[index rotation, {mod.engine.dialect.name}] searches, misses per "
              f"process: {results}")
    assert all(n >= SEARCHES and misses == 0 for n, misses in results)
    mod.guard.close()


def test_negative_control_without_notifications_searches_miss(tmp_path, capsys):
    """The same steps with notifications off in the searching processes (soft TTL only,
    as before): searches miss, so the test above can fail."""
    env = {**os.environ, "NOTIFY_KEY": str(tmp_path / "master.key"),
           "PYTHONPATH": str(tmp_path), "NOTIFY_DIR": str(tmp_path),
           "NOTIFY_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    LocalKMS.from_file(tmp_path / "master.key", create=True)
    (tmp_path / "notify_app.py").write_text(APP)
    mod = app(env)
    fill(mod)
    deaf = {**env, "NOTIFY_WATCH": "0"}
    searcher = worker(deaf, "search", "300")
    expect(searcher, "ready")
    old = mod.guard.keys.keys(kind="index", states=["active"])[0].id
    for step in (["keys", "rotate", "--kind", "index", "--scope", "customers"],
                 ["reencrypt"], ["keys", "retire", str(old)]):
        assert cli(env, *step).returncode == 0
    searcher.stdin.write("stop\n")
    searcher.stdin.flush()
    n, misses = map(int, searcher.stdout.readline().split())
    searcher.wait(60)
    with capsys.disabled():
        print(f"\n[negative control, notifications off] {n} searches, {misses} misses")
    assert misses > 0
    mod.guard.close()


def test_rotate_then_reencrypt_at_once_under_a_writer(env, capsys):
    mod = app(env)
    fill(mod)
    writer = worker(env, "write")
    expect(writer, "ready")
    rotated = cli(env, "keys", "rotate", "--scope", "customers")
    run = cli(env, "reencrypt")
    writer.stdin.write("stop\n")
    writer.stdin.flush()
    written = int(writer.stdout.readline())
    writer.wait(60)
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(run.stdout)
    with capsys.disabled():
        print(f"\n[rotate + reencrypt at once, {mod.engine.dialect.name}] exit "
              f"{run.returncode}, updated {report.get('updated')}, remaining "
              f"{report.get('remaining')}, rows written meanwhile {written}")
    assert run.returncode == 0 and report["remaining"] == 0, run.stdout + run.stderr
    # and nothing the writer wrote after reencrypt is under the old key
    active = mod.guard.keys.keys(kind="dek", states=["active"])[0].id
    with mod.engine.connect() as conn:
        ids = {mod.guard.field("customers", "phone").key_id_of(bytes(b))
               for (b,) in conn.execute(text("SELECT phone FROM customers"))}
    assert ids == {active}
    mod.guard.close()


def test_shred_reaches_processes_that_cached_the_key(env, capsys):
    from piiguard.rotation.shred import shred_scope

    mod = app(env)
    bound = BOUND[mod.engine.dialect.name]
    holders = [worker(env, "hold") for _ in range(2)]
    cipher = mod.guard.field("customers", "phone")
    worst = 0.0
    for t in range(TRIALS):
        scope = f"subject-{t}"
        blob = cipher.encrypt(b"+905361234567", scope=scope)
        for p in holders:
            p.stdin.write(f"{scope} {blob.hex()}\n")
            p.stdin.flush()
        for p in holders:
            expect(p, "ready")
        destroyed = set(shred_scope(mod.guard, scope).keys)
        done = time.time()
        for p in holders:
            word, when, after = p.stdout.readline().split()
            assert word == "refused"
            worst = max(worst, float(when) - done)
            # the erased scope is a tombstone: the write is refused, never made under
            # the destroyed key (nor under a fresh one that would match old indexes)
            assert after == "ScopeErasedError" and str(destroyed) not in after, after
    for p in holders:
        p.stdin.close()
        p.wait(60)
    with capsys.disabled():
        print(f"\n[shred, {mod.engine.dialect.name}] {TRIALS} trials x 2 processes: "
              f"refused within {max(worst, 0) * 1000:.0f} ms at worst (bound {bound} s)")
    assert worst < bound
    mod.guard.close()
