"""The key table on SQLite, PostgreSQL and MariaDB: schema, lifecycle, one active key per
scope, and concurrency (threads and separate processes binding and creating keys for the
same scopes at once must end with exactly one active key per scope and lose no key)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from piiguard import CacheLimits, Guard, LocalKMS
from piiguard.errors import (
    ConfigurationError,
    DecryptionError,
    KeyDestroyedError,
    KeyInUseError,
    UnknownKeyError,
)
from piiguard.keys import ACTIVE, DECRYPT_ONLY, DESTROYED, RETIRED

COLUMNS = {"id", "kind", "scope", "state", "active_slot", "wrapped_key", "master_key_id",
           "created_at", "state_changed_at", "destroyed_at", "encryption_count"}


def test_bind_creates_the_key_table(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    insp = inspect(any_engine)
    assert "piiguard_data_keys" in insp.get_table_names()
    assert {c["name"] for c in insp.get_columns("piiguard_data_keys")} == COLUMNS
    # Binding again (this Guard or another) uses the existing table.
    guard.bind(any_engine)
    Guard(kms=local_kms).bind(any_engine)
    cipher = guard.field("customers", "national_id")
    blob = cipher.encrypt_str("10000000146")
    assert cipher.decrypt_str(blob) == "10000000146"
    (row,) = guard.keys.keys()
    assert (row.kind, row.scope, row.state) == ("dek", "customers", ACTIVE)
    # Key-table format 2: the DEK is wrapped locally under the KEK, the KEK by the KMS.
    (kek,) = guard.keys.keys(kind="kek")
    assert row.master_key_id == f"kek:{kek.id}" and row.created_at is not None
    assert kek.master_key_id == local_kms.master_key_id
    with any_engine.connect() as conn:
        stored = conn.execute(text("SELECT wrapped_key FROM piiguard_data_keys "
                                   "WHERE kind = 'kek'")).scalar()
    assert len(bytes(stored)) > 32 and local_kms.decrypt_data_key(
        bytes(stored), kek.master_key_id,
        {"piiguard:kind": "kek", "piiguard:scope": "piiguard:keyring"}) is not None


def test_custom_key_table_name(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms, key_table="app_keys").bind(sqlite_engine)
    guard.field("t", "c").encrypt(b"x")
    assert "app_keys" in inspect(sqlite_engine).get_table_names()
    assert "piiguard_data_keys" not in inspect(sqlite_engine).get_table_names()


def test_database_refuses_a_second_active_key_per_scope(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    guard.register_scope("dek", "customers")
    row = guard.keys.keys()[0]
    t = guard.keys.table
    with pytest.raises(IntegrityError):
        with any_engine.begin() as conn:
            conn.execute(t.insert().values(
                kind="dek", scope="customers", state=ACTIVE, active_slot="dek:customers",
                wrapped_key=b"x" * 60, master_key_id=row.master_key_id,
                created_at=row.created_at, encryption_count=0))
    assert len(guard.keys.keys()) == 1


def test_kinds_and_scopes_have_their_own_active_keys(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    guard.register_scope("dek", "customers")
    guard.register_scope("index", "customers")
    guard.register_scope("pseudonym", "customers")
    guard.register_scope("dek", "orders")
    got = sorted((k.kind, k.scope, k.state) for k in guard.keys.keys())
    assert got == [("dek", "customers", ACTIVE), ("dek", "orders", ACTIVE),
                   ("index", "customers", ACTIVE), ("pseudonym", "customers", ACTIVE)]
    with pytest.raises(ConfigurationError):
        guard.register_scope("nonsense", "customers")


def test_lifecycle_rotate_retire_destroy(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    cipher = guard.field("customers", "phone")
    old = cipher.encrypt_str("+905321234567")
    old_id = cipher.key_id_of(old)
    new_id = guard.keys.rotate("dek", "customers")
    new = cipher.encrypt_str("+905321234568")
    assert cipher.key_id_of(new) == new_id != old_id
    states = {k.id: k.state for k in guard.keys.keys()}
    assert states == {old_id: DECRYPT_ONLY, new_id: ACTIVE}
    assert cipher.decrypt_str(old) == "+905321234567"

    with pytest.raises(KeyInUseError):
        guard.keys.retire(new_id)  # the active key cannot be retired
    with pytest.raises(UnknownKeyError):
        guard.keys.retire(99999)
    guard.keys.retire(old_id)
    assert {k.id: k.state for k in guard.keys.keys()}[old_id] == RETIRED

    guard.keys.destroy(old_id)
    info = {k.id: k for k in guard.keys.keys()}[old_id]
    assert info.state == DESTROYED and info.destroyed_at is not None
    with any_engine.connect() as conn:
        t = guard.keys.table
        assert conn.execute(select(t.c.wrapped_key).where(t.c.id == old_id)).scalar() is None
    with pytest.raises(KeyDestroyedError) as err:
        cipher.decrypt_str(old)
    assert "customers.phone" in str(err.value) and str(old_id) in str(err.value)
    # A fresh Guard cannot read it either: the wrapped key is gone for good.
    other = Guard(kms=local_kms).bind(any_engine).field("customers", "phone")
    with pytest.raises(KeyDestroyedError):
        other.decrypt_str(old)
    assert other.decrypt_str(new) == "+905321234568"


def test_master_key_rewrap_keeps_every_value_readable(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    blobs = {s: guard.field(s, "c").encrypt_str(f"value of {s}") for s in ("a", "b", "c")}
    guard.keys.rotate("dek", "a")
    blobs["a2"] = guard.field("a", "c").encrypt_str("value of a2")
    old_mk = local_kms.master_key_id
    new_mk = local_kms.add_master_key(make_current=True)
    # Only the KEK is wrapped by the KMS: one key to rewrap, not one per data key.
    assert guard.keys.rewrap(new_mk) == 1
    assert guard.keys.rewrap(new_mk) == 0  # resumable: nothing left to do
    assert {k.master_key_id for k in guard.keys.keys(kind="kek")} == {new_mk}
    local_kms.disable(old_mk)  # the old master key is no longer needed
    fresh = Guard(kms=local_kms).bind(any_engine)
    for s, blob in blobs.items():
        assert fresh.field(s[0], "c").decrypt_str(blob) == f"value of {s}"


def test_unbound_guard_refuses_clearly(local_kms):
    guard = Guard(kms=local_kms)
    with pytest.raises(ConfigurationError) as info:
        guard.field("customers", "phone").encrypt_str("+905321234567")
    assert "bind" in str(info.value) and "customers.phone" in str(info.value)
    assert "+905321234567" not in str(info.value)


# -- concurrency ------------------------------------------------------------------------------
SCOPES = [f"s{i}" for i in range(6)]


def _schema_engine_url(engine) -> tuple[str, dict]:
    """URL and connect_args that reach the same isolated schema/database as ``engine``."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar()
        return url, {"options": f"-csearch_path={schema}"}
    return url, {}


def _worker(url, connect_args, kms, barrier, seed, out, errors, max_uses):
    try:
        engine = create_engine(url, connect_args=connect_args)
        guard = Guard(kms=kms, cache=CacheLimits(max_uses=max_uses))
        barrier.wait()
        guard.bind(engine)
        rnd = random.Random(seed)
        for _ in range(4):
            for scope in rnd.sample(SCOPES, len(SCOPES)):
                value = f"{scope}-{seed}-{rnd.random()}"
                out.append((scope, value, guard.field(scope, "v").encrypt_str(value)))
        guard.close()
        engine.dispose()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _check_table(engine, kms, results) -> None:
    guard = Guard(kms=kms).bind(engine)
    t = guard.keys.table
    with engine.connect() as conn:
        active = conn.execute(select(t.c.scope, func.count())
                              .where(t.c.state == ACTIVE, t.c.kind != "kek")
                              .group_by(t.c.scope)).all()
    assert sorted(active) == [(s, 1) for s in SCOPES]
    # No lost key: every value, whichever Guard/process wrote it, decrypts.
    for scope, value, blob in results:
        assert guard.field(scope, "v").decrypt_str(blob) == value
    used = {guard.field(s, "v").key_id_of(b) for s, _, b in results}
    assert used <= {k.id for k in guard.keys.keys()}


@pytest.mark.parametrize("db", ["postgresql", "mariadb"])
@pytest.mark.parametrize("max_uses", [2**30, 3], ids=["create", "create+rotate"])
def test_threads_bind_and_create_keys_at_once(request, db, max_uses):
    engine = request.getfixturevalue({"postgresql": "pg_engine", "mariadb": "mariadb_engine"}[db])
    kms = LocalKMS.generate()
    url, args = _schema_engine_url(engine)
    n = 8
    barrier = threading.Barrier(n)
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=_worker,
                                args=(url, args, kms, barrier, i, results, errors, max_uses))
               for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert len(results) == n * 4 * len(SCOPES)
    _check_table(engine, kms, results)
    if max_uses == 3:  # rotations really happened concurrently
        guard = Guard(kms=kms).bind(engine)
        assert len(guard.keys.keys(kind="dek")) > len(SCOPES)


PROCESS_SCRIPT = textwrap.dedent("""
    import json, random, sys, threading, time
    from sqlalchemy import create_engine
    from piiguard import CacheLimits, Guard, LocalKMS

    url, schema, keyfile, start, seed, max_uses = sys.argv[1:7]
    scopes = json.loads(sys.argv[7])
    kms = LocalKMS.from_file(keyfile)
    out, errors = [], []

    def work(k):
        try:
            engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
            guard = Guard(kms=kms, cache=CacheLimits(max_uses=int(max_uses)))
            while time.time() < float(start):
                time.sleep(0.001)
            guard.bind(engine)
            rnd = random.Random(f"{seed}-{k}")
            for _ in range(4):
                for scope in rnd.sample(scopes, len(scopes)):
                    value = f"{scope}-{seed}-{k}-{rnd.random()}"
                    out.append((scope, value, guard.field(scope, "v").encrypt_str(value).hex()))
            guard.close()
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps({"out": out, "errors": errors}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("max_uses", [2**30, 3], ids=["create", "create+rotate"])
def test_two_processes_bind_and_create_keys_at_once(pg_engine, tmp_path, max_uses):
    keyfile = tmp_path / "master.key"
    kms = LocalKMS.from_file(keyfile, create=True)
    url, args = _schema_engine_url(pg_engine)
    schema = args["options"].split("=", 1)[1]
    start = time.time() + 3.0  # both processes start binding at the same moment
    procs = [subprocess.Popen(
        [sys.executable, "-c", PROCESS_SCRIPT, url, schema, str(keyfile), str(start),
         f"p{i}", str(max_uses), json.dumps(SCOPES)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()}) for i in range(2)]
    results = []
    pids = set()
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        doc = json.loads(stdout)
        assert doc["errors"] == []
        results += [(s, v, bytes.fromhex(b)) for s, v, b in doc["out"]]
        pids.add(p.pid)
    assert len(pids) == 2
    assert len(results) == 2 * 3 * 4 * len(SCOPES)
    _check_table(pg_engine, kms, results)


def test_values_from_another_database_are_refused(sqlite_engine, tmp_path, local_kms):
    one = Guard(kms=local_kms).bind(sqlite_engine)
    other = Guard(kms=local_kms).bind(create_engine(f"sqlite:///{tmp_path / 'two.db'}"))
    blob = one.field("customers", "phone").encrypt_str("+905321234567")
    other.field("orders", "x").encrypt(b"x")  # key id 1 there belongs to another scope
    with pytest.raises(DecryptionError):
        other.field("customers", "phone").decrypt_str(blob)
