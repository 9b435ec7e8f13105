"""One key file shared by several processes (the application and the CLI): changes are
merged under a lock so no master key is ever lost, and a running process sees master
keys added, made current or disabled elsewhere at its next KMS operation."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from piiguard import LocalKMS
from piiguard.errors import KMSAccessError

CTX = {"piiguard:scope": "customers"}


def test_two_instances_adding_master_keys_keep_every_key(tmp_path):
    path = tmp_path / "master.key"
    first = LocalKMS.from_file(path, create=True).master_key_id
    a = LocalKMS.from_file(path)
    b = LocalKMS.from_file(path)             # loaded before a's change
    ka = a.add_master_key(make_current=True)
    kb = b.add_master_key()                  # used to write {first, kb}: ka was lost
    on_disk = LocalKMS.from_file(path)
    assert set(on_disk.key_ids) == {first, ka, kb}
    assert on_disk.master_key_id == ka       # b did not change the current key
    assert b.master_key_id == ka


def _add_keys(path, n, barrier):
    kms = LocalKMS.from_file(path)
    barrier.wait()
    for _ in range(n):
        kms.add_master_key()


def test_processes_adding_master_keys_at_once_lose_none(tmp_path):
    path = tmp_path / "master.key"
    LocalKMS.from_file(path, create=True)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_add_keys, args=(path, 5, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(LocalKMS.from_file(path).key_ids) == 1 + 4 * 5
    lock = path.with_name(path.name + ".lock")
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


def test_a_running_process_sees_a_master_key_added_elsewhere(tmp_path):
    path = tmp_path / "master.key"
    app = LocalKMS.from_file(path, create=True)
    old = app.generate_data_key(CTX)
    cli = LocalKMS.from_file(path)
    new_id = cli.add_master_key(make_current=True)
    moved = cli.rewrap(old.wrapped, old.master_key_id, new_id, CTX)
    # the application never restarted: it unwraps under the new key and writes with it
    assert app.decrypt_data_key(moved, new_id, CTX) == old.plaintext
    assert app.generate_data_key(CTX).master_key_id == new_id


def test_a_master_key_disabled_elsewhere_is_refused(tmp_path):
    path = tmp_path / "master.key"
    app = LocalKMS.from_file(path, create=True)
    pair = app.generate_data_key(CTX)
    cli = LocalKMS.from_file(path)
    cli.add_master_key(make_current=True)
    cli.disable(pair.master_key_id)
    with pytest.raises(KMSAccessError):
        app.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX)
    cli.enable(pair.master_key_id)
    assert app.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext


def test_a_deleted_key_file_does_not_stop_a_running_process(tmp_path):
    path = tmp_path / "master.key"
    app = LocalKMS.from_file(path, create=True)
    pair = app.generate_data_key(CTX)
    path.unlink()
    assert app.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext
