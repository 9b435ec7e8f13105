"""LocalKMS: the key file, several master keys, disabling, rewrap and context binding."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from sqlalchemy import create_engine

from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError, KMSAccessError, KMSError, UnknownKeyError
from piiguard.kms import DataKeyPair, KeyProvider, check_key_provider

CTX = {"piiguard:kind": "dek", "piiguard:scope": "customers"}


def secrets_of(kms: LocalKMS) -> list[bytes]:
    return list(kms._keys.values())


def encodings(material: bytes) -> list[str]:
    return [material.hex(), material.hex().upper(), base64.b64encode(material).decode(),
            base64.urlsafe_b64encode(material).decode().rstrip("="), repr(material)]


# -- key file ------------------------------------------------------------------------------
def test_from_file_create_makes_a_0600_file(tmp_path):
    path = tmp_path / "sub" / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["current"] == kms.master_key_id
    assert set(doc["keys"]) == {kms.master_key_id}
    assert base64.b64decode(doc["keys"][kms.master_key_id]["material"]) == secrets_of(kms)[0]
    # No temporary file is left next to it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]


def test_file_round_trip_reads_the_same_keys(tmp_path):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    pair = kms.generate_data_key(CTX)
    again = LocalKMS.from_file(path)
    assert again.master_key_id == kms.master_key_id
    assert again.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext
    # create=True on an existing file loads it, it does not replace it.
    assert LocalKMS.from_file(path, create=True).key_ids == kms.key_ids


def test_missing_file_without_create_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        LocalKMS.from_file(tmp_path / "nope.key")
    assert "piiguard init" in str(info.value)
    assert not (tmp_path / "nope.key").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o620])
def test_group_or_other_readable_file_is_refused(tmp_path, mode):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    os.chmod(path, mode)
    with pytest.raises(ConfigurationError) as info:
        LocalKMS.from_file(path)
    msg = str(info.value)
    assert "chmod 600" in msg and oct(mode) in msg
    for enc in encodings(secrets_of(kms)[0]):
        assert enc not in msg


def test_owner_only_modes_are_accepted(tmp_path):
    path = tmp_path / "master.key"
    LocalKMS.from_file(path, create=True)
    os.chmod(path, 0o400)
    assert LocalKMS.from_file(path).key_ids


@pytest.mark.parametrize("content", ["", "not json", "[]", '{"version": 1}',
                                     '{"version": 2, "current": "a", "keys": {}}',
                                     '{"version": 1, "current": "a", "keys": {"a": '
                                     '{"material": "!!notbase64!!"}}}',
                                     '{"version": 1, "current": "a", "keys": {"a": '
                                     '{"material": "AAAA"}}}',
                                     '{"version": 1, "current": "b", "keys": {"a": '
                                     '{"material": "' + base64.b64encode(bytes(32)).decode()
                                     + '"}}}'])
def test_malformed_key_files_are_configuration_errors(tmp_path, content):
    path = tmp_path / "master.key"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError):
        LocalKMS.from_file(path)


def test_key_file_holds_master_keys_only_never_data_keys(tmp_path, monkeypatch):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    made: list[DataKeyPair] = []
    original = kms.generate_data_key

    def recording(context):
        made.append(original(context))
        return made[-1]

    monkeypatch.setattr(kms, "generate_data_key", recording)
    guard = Guard(kms=kms).bind(create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    guard.field("customers", "phone").encrypt(b"+905321234567")
    guard.field("orders", "note").encrypt(b"x")
    kms.add_master_key(make_current=True)  # the file is written again after DEKs exist
    assert len(made) == 1   # the KEK; data keys are wrapped locally under it
    text = path.read_text()
    doc = json.loads(text)
    assert set(doc) == {"version", "current", "keys"}
    assert set(doc["keys"]) == set(kms.key_ids)
    assert all(set(entry) == {"material", "state"} for entry in doc["keys"].values())
    for pair in made:
        for enc in encodings(pair.plaintext) + encodings(pair.wrapped):
            assert enc not in text
    assert "+905321234567" not in text


# -- several master keys ----------------------------------------------------------------------
def test_several_master_keys_each_unwrap_their_own(tmp_path):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    first = kms.master_key_id
    pair1 = kms.generate_data_key(CTX)
    second = kms.add_master_key(make_current=True)
    assert second != first and kms.master_key_id == second
    pair2 = kms.generate_data_key(CTX)
    assert (pair1.master_key_id, pair2.master_key_id) == (first, second)
    reloaded = LocalKMS.from_file(path)  # add_master_key saved the file
    assert reloaded.key_ids == sorted([first, second]) and reloaded.master_key_id == second
    assert reloaded.decrypt_data_key(pair1.wrapped, first, CTX) == pair1.plaintext
    assert reloaded.decrypt_data_key(pair2.wrapped, second, CTX) == pair2.plaintext
    # A wrapped key names its master key: asking with the other id is refused.
    with pytest.raises(KMSAccessError):
        reloaded.decrypt_data_key(pair1.wrapped, second, CTX)
    third = kms.add_master_key()
    assert kms.master_key_id == second and third in kms.key_ids
    kms.set_current(third)
    assert LocalKMS.from_file(path).master_key_id == third


def test_unknown_master_key_ids(local_kms):
    pair = local_kms.generate_data_key(CTX)
    with pytest.raises(UnknownKeyError):
        local_kms.set_current("mk-nope")
    with pytest.raises((KMSAccessError, UnknownKeyError)):
        local_kms.decrypt_data_key(pair.wrapped, "mk-nope", CTX)
    with pytest.raises(ConfigurationError):
        LocalKMS({"a": bytes(32)}, "b")
    with pytest.raises(ConfigurationError):
        LocalKMS({"a": bytes(16)}, "a")
    for bad_id in ("", "é-key", "k" * 256):
        with pytest.raises(ConfigurationError):
            LocalKMS({bad_id: bytes(32)}, bad_id)
    assert LocalKMS({"k" * 255: bytes(32)}, "k" * 255).generate_data_key(CTX).wrapped[1] == 255


# -- disable / enable ------------------------------------------------------------------------
def test_disabled_master_key_refuses_every_use_and_persists(tmp_path):
    path = tmp_path / "master.key"
    kms = LocalKMS.from_file(path, create=True)
    mk = kms.master_key_id
    pair = kms.generate_data_key(CTX)
    kms.disable(mk)
    for call in (lambda k: k.decrypt_data_key(pair.wrapped, mk, CTX),
                 lambda k: k.generate_data_key(CTX),
                 lambda k: k.rewrap(pair.wrapped, mk, mk, CTX)):
        with pytest.raises(KMSAccessError) as info:
            call(kms)
        assert mk in str(info.value)
    reloaded = LocalKMS.from_file(path)
    assert reloaded.disabled == {mk}
    with pytest.raises(KMSAccessError):
        reloaded.decrypt_data_key(pair.wrapped, mk, CTX)
    reloaded.enable(mk)
    assert LocalKMS.from_file(path).decrypt_data_key(pair.wrapped, mk, CTX) == pair.plaintext


# -- rewrap ------------------------------------------------------------------------------------
def test_rewrap_moves_a_key_to_another_master_key(local_kms):
    old = local_kms.master_key_id
    pair = local_kms.generate_data_key(CTX)
    new = local_kms.add_master_key(make_current=True)
    wrapped = local_kms.rewrap(pair.wrapped, old, new, CTX)
    assert wrapped != pair.wrapped
    assert local_kms.decrypt_data_key(wrapped, new, CTX) == pair.plaintext
    local_kms.disable(old)  # the rewrapped key no longer needs the old master key
    assert local_kms.decrypt_data_key(wrapped, new, CTX) == pair.plaintext
    with pytest.raises(KMSAccessError):
        local_kms.rewrap(pair.wrapped, old, new, CTX)
    # Rewrap keeps the context binding.
    with pytest.raises(KMSAccessError):
        local_kms.decrypt_data_key(wrapped, new, {**CTX, "piiguard:scope": "orders"})


# -- context binding and wrapped layout -------------------------------------------------------
@pytest.mark.parametrize("ctx", [{}, {"piiguard:kind": "dek"},
                                 {"piiguard:kind": "index", "piiguard:scope": "customers"},
                                 {"piiguard:kind": "dek", "piiguard:scope": "Customers"},
                                 {**CTX, "extra": "1"}])
def test_wrong_context_is_refused(local_kms, ctx):
    pair = local_kms.generate_data_key(CTX)
    with pytest.raises(KMSAccessError) as info:
        local_kms.decrypt_data_key(pair.wrapped, pair.master_key_id, ctx)
    assert info.value.operation == "decrypt" and info.value.key_id == pair.master_key_id


def test_context_parts_are_length_prefixed(local_kms):
    pair = local_kms.generate_data_key({"ab": "c"})
    with pytest.raises(KMSAccessError):
        local_kms.decrypt_data_key(pair.wrapped, pair.master_key_id, {"a": "bc"})
    assert local_kms.decrypt_data_key(pair.wrapped, pair.master_key_id,
                                      {"ab": "c"}) == pair.plaintext


def test_context_order_does_not_matter(local_kms):
    pair = local_kms.generate_data_key({"a": "1", "b": "2"})
    assert local_kms.decrypt_data_key(pair.wrapped, pair.master_key_id,
                                      {"b": "2", "a": "1"}) == pair.plaintext


def test_wrapped_key_layout(local_kms):
    pair = local_kms.generate_data_key(CTX)
    kid = local_kms.master_key_id.encode()
    w = pair.wrapped
    assert w[0] == 1 and w[1] == len(kid) and w[2:2 + len(kid)] == kid
    assert len(w) == 2 + len(kid) + 12 + 32 + 16
    assert len(pair.plaintext) == 32 and pair.plaintext not in w
    assert local_kms.generate_data_key(CTX).plaintext != pair.plaintext


def test_every_tampered_wrapped_key_is_refused(local_kms):
    pair = local_kms.generate_data_key(CTX)
    mk = pair.master_key_id
    for pos in range(len(pair.wrapped)):
        bad = bytearray(pair.wrapped)
        bad[pos] ^= 0x01
        with pytest.raises(KMSError):
            local_kms.decrypt_data_key(bytes(bad), mk, CTX)
    for n in range(len(pair.wrapped)):
        with pytest.raises(KMSError):
            local_kms.decrypt_data_key(pair.wrapped[:n], mk, CTX)
    with pytest.raises(KMSError):
        local_kms.decrypt_data_key(pair.wrapped + b"\x00", mk, CTX)


# -- protocol and repr -------------------------------------------------------------------------
def test_local_kms_is_a_key_provider(local_kms):
    assert isinstance(local_kms, KeyProvider)
    check_key_provider(local_kms)


class _NoRewrap:
    master_key_id = "mk-test"

    def generate_data_key(self, context):
        raise AssertionError("never called")

    def decrypt_data_key(self, wrapped, master_key_id, context):
        raise AssertionError("never called")

    rewrap = None  # present, but not a method


@pytest.mark.parametrize("kms", [object(), _NoRewrap()])
def test_guard_refuses_what_is_not_a_key_provider(kms):
    missing = "generate_data_key" if type(kms) is object else "rewrap"
    with pytest.raises(ConfigurationError, match=rf"missing {missing}\(\)"):
        Guard(kms=kms)


def test_repr_never_shows_key_material(tmp_path):
    kms = LocalKMS.from_file(tmp_path / "master.key", create=True)
    kms.add_master_key()
    pair = kms.generate_data_key(CTX)
    shown = repr(kms) + str(kms) + repr(pair) + str(pair)
    for material in [*secrets_of(kms), pair.plaintext, pair.wrapped]:
        for enc in encodings(material):
            assert enc not in shown
    assert kms.master_key_id in repr(kms) and "redacted" in repr(kms)
    assert isinstance(pair, DataKeyPair) and "redacted" in repr(pair)


# -- concurrent creation --------------------------------------------------------------------------
CREATE_SCRIPT = """
import json, sys, time
from piiguard import LocalKMS
folder, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
while time.time() < start:
    pass
out = []
for i in range(n):  # every process races for the same files in the same order
    kms = LocalKMS.from_file(f"{folder}/master{i}.key", create=True)
    pair = kms.generate_data_key({"piiguard:scope": "customers"})
    out.append({"mk": pair.master_key_id, "wrapped": pair.wrapped.hex(),
                "plaintext": pair.plaintext.hex()})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_processes_creating_the_key_file_at_once_share_one_master_key(tmp_path):
    import subprocess
    import sys
    import time

    n, procs_n = 30, 5
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_SCRIPT, str(tmp_path), str(start),
                               str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(procs_n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    for i in range(n):
        path = tmp_path / f"master{i}.key"
        final = LocalKMS.from_file(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        # Every process's data key can still be unwrapped: no master key was lost.
        for r in results:
            o = r[i]
            assert o["mk"] == final.master_key_id
            assert final.decrypt_data_key(bytes.fromhex(o["wrapped"]), o["mk"],
                                          {"piiguard:scope": "customers"}).hex() == o["plaintext"]
    assert not list(tmp_path.glob(".master.key.*"))  # no temporary files left behind
