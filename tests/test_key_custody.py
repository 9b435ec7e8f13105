"""Key-file custody: ``bind`` refuses a key table naming master keys the key file lacks
(the README's relative key path run from another directory made a second master key,
silently); a running process never adopts a key file that became group/world readable
or writable or changed owner (a fresh load refuses those too)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from sqlalchemy import create_engine, func, select

from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError, KMSConfigurationError, KMSError

REL = ".piiguard/master.key"


def _key_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(
            Guard(kms=LocalKMS.generate()).keys.table)).scalar_one()


def test_a_relative_key_path_from_another_directory_is_refused_at_bind(tmp_path,
                                                                       monkeypatch):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = Guard(kms=LocalKMS.from_file(REL, create=True))
    first.register_scope("dek", "customers")
    first.bind(create_engine(url))
    original = first.kms.master_key_id
    rows = _key_rows(first.engine)
    # the same line, run from another working directory: a new key file appears there
    monkeypatch.chdir(tmp_path / "b")
    second = Guard(kms=LocalKMS.from_file(REL, create=True))
    second.register_scope("dek", "customers")
    engine = create_engine(url)
    with pytest.raises(ConfigurationError) as err:
        second.bind(engine)
    msg = str(err.value)
    assert original in msg and second.kms.master_key_id in msg
    assert str((tmp_path / "b" / REL).resolve()) in msg
    assert "just created" in msg and str(tmp_path / "b") in msg
    assert "absolute path" in msg and "operation=bind" in msg
    assert _key_rows(engine) == rows           # no key made under the stray master key
    # with the right file (an absolute path) it binds
    Guard(kms=LocalKMS.from_file(tmp_path / "a" / REL)).bind(engine)


def test_a_key_file_that_lacks_a_master_key_named_by_the_table_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    g = Guard(kms=kms)
    g.register_scope("dek", "customers")
    g.bind(create_engine(url))
    old = kms.master_key_id
    kms.add_master_key(make_current=True)
    g.keys.hierarchy.rotate_kek()              # a KEK under each master key
    # an old backup of the key file (before the new master key) is restored
    doc = json.loads(path.read_text())
    new = kms.master_key_id
    del doc["keys"][new]
    doc["current"] = old
    backup = tmp_path / "backup.key"
    backup.write_text(json.dumps(doc))
    os.chmod(backup, 0o600)
    with pytest.raises(ConfigurationError) as err:
        Guard(kms=LocalKMS.from_file(backup)).bind(create_engine(url))
    assert new in str(err.value) and "just created" not in str(err.value)


def _replace_with_foreign_file(path, mode=0o600, owner=None) -> str:
    """Replace the key file (atomically, as an attacker with write access to the
    directory would) by one naming another current master key."""
    other = LocalKMS.from_file(path.with_name("other.key"), create=True)
    doc = json.loads(path.read_text())
    foreign = json.loads(path.with_name("other.key").read_text())
    doc["keys"].update(foreign["keys"])
    doc["current"] = other.master_key_id
    tmp = path.with_name("replacement")
    tmp.write_text(json.dumps(doc))
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, owner, -1)
    os.replace(tmp, path)
    return other.master_key_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_a_running_process_never_adopts_an_unsafe_key_file(tmp_path, mode):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    g = Guard(kms=kms)
    g.register_scope("dek", "customers")
    g.bind(create_engine(f"sqlite:///{tmp_path / 'app.db'}"))
    mine = kms.master_key_id
    foreign = _replace_with_foreign_file(path, mode=mode)
    with pytest.raises(KMSConfigurationError) as err:
        kms.generate_data_key({"piiguard:scope": "customers"})
    assert "not adopted" in str(err.value) and oct(mode) in str(err.value)
    assert isinstance(err.value, KMSError)           # jobs stop instead of failing rows
    assert kms.master_key_id == mine and foreign not in kms.key_ids
    with pytest.raises(KMSError):                    # no KEK under the foreign master key
        g.keys.hierarchy.rotate_kek()
    with pytest.raises(ConfigurationError):
        LocalKMS.from_file(path)                      # a fresh load refuses it too


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="chown to another user needs root")
def test_a_running_process_never_adopts_a_key_file_of_another_owner(tmp_path):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    mine = kms.master_key_id
    _replace_with_foreign_file(path, owner=4242)
    with pytest.raises(KMSConfigurationError) as err:
        kms.generate_data_key({"piiguard:scope": "customers"})
    assert "uid 4242" in str(err.value) and "chown" in str(err.value)
    assert kms.master_key_id == mine
    with pytest.raises(ConfigurationError, match="uid 4242"):
        LocalKMS.from_file(path)


def test_a_safe_change_is_still_taken_in(tmp_path):
    """The CLI's rotate-master (same owner, 0600) keeps working without a restart."""
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    added = LocalKMS.from_file(path).add_master_key(make_current=True)
    assert kms.generate_data_key({"a": "b"}).master_key_id == added


def test_restoring_a_backup_copy_keeps_every_key(tmp_path):
    """The docs' backup recipe: a copy (cp -p) of the key file is a working key file."""
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    pair = kms.generate_data_key({"piiguard:scope": "customers"})
    backup = tmp_path / "backup" / "master.key"
    backup.parent.mkdir(mode=0o700)
    shutil.copy2(path, backup)
    path.unlink()
    shutil.copy2(backup, path)
    restored = LocalKMS.from_file(path)
    assert restored.decrypt_data_key(pair.wrapped, pair.master_key_id,
                                     {"piiguard:scope": "customers"}) == pair.plaintext
