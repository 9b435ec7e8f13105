"""Guard as a whole: independence of two Guards, no key bytes in repr or logs, the public
``__all__`` lists and the exception tree."""

from __future__ import annotations

import ast
import base64
import importlib
import inspect
import logging
import pkgutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

import piiguard
from piiguard import CacheLimits, Guard, LocalKMS, errors
from piiguard.crypto.aead import DataKey
from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.errors import (
    ConfigurationError,
    DecryptionError,
    KMSAccessError,
    PIIGuardError,
    UnknownKeyError,
)
from piiguard.guard import FieldCipher, FieldIndex
from piiguard.keys.cache import Entry
from piiguard.keys.manager import KeyManager
from piiguard.keys.store import KeyRow
from piiguard.kms.base import DataKeyPair

PACKAGE_DIR = Path(piiguard.__file__).parent


class RecordingKMS:
    """A real LocalKMS that remembers every plaintext data key it handed out."""

    def __init__(self, inner: LocalKMS) -> None:
        self.inner = inner
        self.master_key_id = inner.master_key_id
        self.plaintexts: list[bytes] = []
        self.pairs: list[DataKeyPair] = []

    def generate_data_key(self, context):
        pair = self.inner.generate_data_key(context)
        self.pairs.append(pair)
        self.plaintexts.append(pair.plaintext)
        return pair

    def decrypt_data_key(self, wrapped, master_key_id, context):
        out = self.inner.decrypt_data_key(wrapped, master_key_id, context)
        self.plaintexts.append(out)
        return out

    def rewrap(self, wrapped, source_key_id, dest_key_id, context):
        return self.inner.rewrap(wrapped, source_key_id, dest_key_id, context)

    def __repr__(self) -> str:
        return f"RecordingKMS({self.inner!r})"


def encodings(material: bytes) -> list[str]:
    return [material.hex(), material.hex().upper(), base64.b64encode(material).decode(),
            base64.urlsafe_b64encode(material).decode().rstrip("="), repr(material)[2:-1],
            material[:12].hex(), base64.b64encode(material[:12]).decode()]


# -- two Guards share nothing -----------------------------------------------------------------
def test_two_guards_with_different_kms_cannot_read_each_other(tmp_path):
    a = Guard(kms=LocalKMS.generate()).bind(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    b = Guard(kms=LocalKMS.generate()).bind(create_engine(f"sqlite:///{tmp_path / 'b.db'}"))
    blob_a = a.field("customers", "national_id").encrypt_str("10000000146")
    blob_b = b.field("customers", "national_id").encrypt_str("10000000146")
    # Same key id (2: the KEK is 1) in each database, different key material.
    assert a.field("customers", "national_id").key_id_of(blob_a) == 2
    assert b.field("customers", "national_id").key_id_of(blob_b) == 2
    with pytest.raises(DecryptionError):
        b.field("customers", "national_id").decrypt_str(blob_a)
    with pytest.raises(DecryptionError):
        a.field("customers", "national_id").decrypt_str(blob_b)
    assert a.field("customers", "national_id").decrypt_str(blob_a) == "10000000146"
    assert b.field("customers", "national_id").decrypt_str(blob_b) == "10000000146"


def test_guard_with_another_kms_on_the_same_key_table_is_refused(sqlite_engine):
    a_kms, b_kms = LocalKMS.generate(), LocalKMS.generate()
    a = Guard(kms=a_kms).bind(sqlite_engine)
    b = Guard(kms=b_kms).bind(sqlite_engine)
    blob = a.field("customers", "phone").encrypt_str("+905321234567")
    with pytest.raises((KMSAccessError, UnknownKeyError)) as info:
        b.field("customers", "phone").decrypt_str(blob)
    assert "customers.phone" in str(info.value)
    assert a_kms.master_key_id in str(info.value)
    assert "+905321234567" not in str(info.value)


def test_guards_sharing_a_database_and_kms_have_separate_caches(sqlite_engine, local_kms):
    a = Guard(kms=local_kms).bind(sqlite_engine)
    b = Guard(kms=local_kms).bind(sqlite_engine)
    blob = a.field("customers", "phone").encrypt_str("+905321234567")
    assert b.keys.cache.by_id == {}
    assert b.field("customers", "phone").decrypt_str(blob) == "+905321234567"
    a.close()
    assert a.keys.cache.by_id == {} and len(b.keys.cache.by_id) == 1
    assert a.field("customers", "phone") is a.field("customers", "phone")
    assert a.field("customers", "phone") is not b.field("customers", "phone")


def test_no_module_level_key_state(sqlite_engine):
    kms = RecordingKMS(LocalKMS.generate())
    guard = Guard(kms=kms).bind(sqlite_engine)
    guard.field("customers", "national_id").encrypt_str("10000000146")
    guard.blind_index("customers", "national_id").compute("10000000146")
    secrets = set(kms.plaintexts) | set(kms.inner._keys.values())
    forbidden = (DataKey, BlindIndexKey, Entry, KeyManager, Guard, LocalKMS, FieldCipher)

    def holds_keys(value, depth=0) -> bool:
        if isinstance(value, forbidden):
            return True
        if isinstance(value, (bytes, bytearray)):
            return bytes(value) in secrets
        if depth < 2 and isinstance(value, dict):
            return any(holds_keys(v, depth + 1) for v in value.values())
        if depth < 2 and isinstance(value, (list, tuple, set, frozenset)):
            return any(holds_keys(v, depth + 1) for v in value)
        return False

    modules = [m for name, m in sys.modules.items()
               if name == "piiguard" or name.startswith("piiguard.")]
    assert len(modules) > 10
    for module in modules:
        for name, value in vars(module).items():
            assert not holds_keys(value), f"{module.__name__}.{name} holds key state"


# -- no key bytes in repr / str / logs --------------------------------------------------------
def test_reprs_never_contain_key_material(sqlite_engine, caplog):
    caplog.set_level(logging.DEBUG)
    kms = RecordingKMS(LocalKMS.generate())
    guard = Guard(kms=kms, cache=CacheLimits(max_uses=2)).bind(sqlite_engine)
    cipher = guard.field("customers", "national_id")
    index = guard.blind_index("customers", "national_id")
    for _ in range(3):
        cipher.decrypt(cipher.encrypt(b"10000000146"))
    index.compute("10000000146")
    guard.keys.rotate("dek", "customers")
    guard.close()
    cipher.decrypt(cipher.encrypt(b"10000000146"))  # unwraps again through the KMS
    index.compute("10000000146")
    entries = list(guard.keys.cache.by_id.values())
    objects = [guard, guard.keys, kms.inner, cipher, index, *kms.pairs, *entries,
               *(e.key for e in entries)]
    assert isinstance(index, FieldIndex) and isinstance(cipher, FieldCipher)
    assert any(isinstance(o, DataKey) for o in objects)
    assert any(isinstance(o, BlindIndexKey) for o in objects)
    assert any(isinstance(o, DataKeyPair) for o in objects)
    shown = "\n".join(repr(o) + "\n" + str(o) for o in objects)
    shown += "\n" + caplog.text
    secrets = set(kms.plaintexts) | set(kms.inner._keys.values())
    # data and index keys are wrapped locally under the KEK: their plaintexts too
    with sqlite_engine.connect() as conn:
        rows = [KeyRow.of(r) for r in conn.execute(select(guard.keys.table))]
    secrets |= {guard.keys.hierarchy.unwrap(r) for r in rows if r.wrapped_key}
    assert len(secrets) >= 4
    for material in secrets:
        for enc in encodings(material):
            assert enc not in shown, f"key material shown ({enc[:6]}...)"
    for pair in kms.pairs:
        assert pair.wrapped.hex() not in shown
    assert "10000000146" not in shown
    assert "redacted" in repr(kms.inner) and "redacted" in repr(entries[0].key)


def test_data_key_refuses_bad_material_without_echoing_it():
    with pytest.raises(ConfigurationError) as info:
        DataKey(1, b"\x01" * 31)
    assert "0101" not in str(info.value)
    with pytest.raises(ConfigurationError):
        DataKey(2**32, bytes(32))


# -- configuration checked when built ---------------------------------------------------------
def test_guard_checks_its_configuration_when_built(local_kms):
    with pytest.raises(ConfigurationError):
        Guard(kms=object())
    with pytest.raises(ConfigurationError):
        Guard(kms=local_kms, policy="reveal everything")
    with pytest.raises(ConfigurationError):
        Guard(kms=local_kms).bind("sqlite://")
    with pytest.raises(ConfigurationError):
        Guard(kms=local_kms).blind_index("customers", "national_id", bits=4)


# -- __all__ and the exception tree -----------------------------------------------------------
def test_piiguard_all_is_importable():
    assert set(piiguard.__all__) >= {"Guard", "LocalKMS", "AwsKMS", "MaskingPolicy",
                                     "acting_as", "errors"}
    assert len(piiguard.__all__) == len(set(piiguard.__all__))
    for name in piiguard.__all__:
        assert getattr(piiguard, name) is not None, name
    namespace: dict = {}
    exec("from piiguard import *", namespace)
    assert set(piiguard.__all__) <= set(namespace)
    from piiguard.kms.aws import AwsKMS
    from piiguard.masking.policy import MaskingPolicy
    assert piiguard.AwsKMS is AwsKMS and piiguard.MaskingPolicy is MaskingPolicy
    with pytest.raises(AttributeError):
        piiguard.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("module", ["piiguard.guard", "piiguard.crypto", "piiguard.kms",
                                    "piiguard.keys", "piiguard.errors"])
def test_subpackage_all_is_importable(module):
    mod = importlib.import_module(module)
    assert mod.__all__
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_errors_all_lists_the_whole_tree():
    classes = {name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException)
               and obj.__module__ == "piiguard.errors"}
    exported = {n for n in errors.__all__ if inspect.isclass(getattr(errors, n))}
    assert classes == exported
    # besides the tree, only functions (scrub_frames)
    assert all(inspect.isfunction(getattr(errors, n)) for n in set(errors.__all__) - exported)
    for name in exported:
        cls = getattr(errors, name)
        assert issubclass(cls, PIIGuardError), name
        assert name in errors.__doc__, f"{name} missing from the tree in the docstring"


def test_validation_errors_are_value_errors():
    invalid = [getattr(errors, n) for n in errors.__all__
               if inspect.isclass(getattr(errors, n))
               and issubclass(getattr(errors, n), errors.InvalidInputError)]
    assert len(invalid) >= 6
    for cls in invalid:
        assert issubclass(cls, ValueError), cls.__name__
        err = cls("checksum", column="customers.national_id")
        assert "customers.national_id" in str(err) and "checksum" in str(err)
    for cls in (errors.EnvelopeFormatError, errors.AlreadyEncryptedError, errors.PolicyError):
        assert issubclass(cls, ValueError)
    # Key, KMS and decryption failures are not input errors.
    for cls in (errors.DecryptionError, errors.KMSUnavailableError, errors.KeyDestroyedError):
        assert not issubclass(cls, ValueError)


def test_error_messages_carry_context_not_values():
    err = errors.KMSUnavailableError("KMS is unavailable", column="customers.phone",
                                     key_id="alias/app", operation="decrypt")
    assert str(err) == ("KMS is unavailable column=customers.phone key_id=alias/app "
                        "operation=decrypt")
    assert (err.column, err.key_id, err.operation) == ("customers.phone", "alias/app",
                                                       "decrypt")


def _all_modules() -> list[str]:
    names = ["piiguard"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="piiguard."):
        names.append(info.name)
    return names


def test_no_class_named_validation_error_anywhere_in_piiguard():
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 15
    for path in files:
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.name != "ValidationError", f"{path}:{node.lineno}"
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    assert not (isinstance(target, ast.Name)
                                and target.id == "ValidationError"), f"{path}:{node.lineno}"
    # And no imported piiguard module exposes one of its own.
    for name in _all_modules():
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue  # optional integration missing: the AST scan above covered it
        obj = getattr(mod, "ValidationError", None)
        assert obj is None or not getattr(obj, "__module__", "").startswith("piiguard"), name
