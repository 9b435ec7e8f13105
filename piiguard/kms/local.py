"""LocalKMS: master keys in a local key file, the embedded default.

The key file is JSON, created with mode 0600, holding one or more 256-bit master keys
by id and which one is current. Data keys are wrapped with AES-256-GCM, the encryption
context bound as associated data::

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "master.key")
    >>> kms = LocalKMS.from_file(path, create=True)
    >>> oct(os.stat(path).st_mode & 0o777)
    '0o600'
    >>> pair = kms.generate_data_key({"piiguard:scope": "customers"})
    >>> kms.decrypt_data_key(pair.wrapped, pair.master_key_id,
    ...                      {"piiguard:scope": "customers"}) == pair.plaintext
    True
    >>> kms.decrypt_data_key(pair.wrapped, pair.master_key_id, {"piiguard:scope": "x"})
    Traceback (most recent call last):
    ...
    piiguard.errors.KMSAccessError: local KMS could not unwrap the data key key_id=...
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (one writer at a time is then on you)
    fcntl = None  # type: ignore[assignment]

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from piiguard.errors import (
    ConfigurationError,
    KMSAccessError,
    KMSConfigurationError,
    UnknownKeyError,
)
from piiguard.kms.base import Context, DataKeyPair, KeyProvider

_WRAP_VERSION = 1
_FILE_VERSION = 1

#: What tells one state of the key file from another: (inode, mtime_ns, size).
FileVersion = tuple[int, int, int]


class _KeyFile(NamedTuple):
    """The content of a key file as read at ``version``."""

    keys: dict[str, bytes]
    current: str
    disabled: set[str]
    version: FileVersion
    retired: set[str]


class _Wrapped(NamedTuple):
    """A wrapped data key taken apart (see :class:`LocalKMS` for the layout)."""

    key_id: str
    nonce: bytes
    body: bytes


def _context_aad(key_id: str, context: Context) -> bytes:
    out = bytearray()
    for part in (key_id, *(x for kv in sorted(context.items()) for x in kv)):
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


class LocalKMS:
    """Master keys held in memory (from a key file, or given directly for tests).

    Wrapped key layout: version byte 1, 1-byte length + master key id (ASCII),
    12-byte nonce, AES-256-GCM(ciphertext of the 32-byte DEK + tag); associated data is
    the master key id and the sorted context, each length-prefixed.
    """

    def __init__(self, keys: dict[str, bytes], current: str, *, path: Path | None = None,
                 disabled: set[str] | None = None) -> None:
        if current not in keys:
            raise ConfigurationError("current master key is not among the keys",
                                     key_id=current)
        for kid, material in keys.items():
            if not (isinstance(kid, str) and kid.isascii() and 0 < len(kid) <= 255):
                # The wrapped-key layout stores the id as 1-byte length + ASCII.
                raise ConfigurationError("a master key id must be 1 to 255 ASCII characters")
            if len(material) != 32:
                raise ConfigurationError("a master key must be 32 bytes", key_id=kid)
        self._keys = dict(keys)
        self._aeads = {kid: AESGCM(material) for kid, material in keys.items()}
        self.master_key_id = current
        self.path = path
        self.disabled: set[str] = set(disabled or ())
        #: ids of master keys removed for good (erasure epochs); never merged back
        self.retired: set[str] = set()
        self._version: FileVersion | None = None   # of the key file we know
        #: True when :meth:`from_file` created the key file (``create=True``).
        self.created = False
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        where = f" path={str(self.path)!r}" if self.path else ""
        return (f"LocalKMS(current={self.master_key_id!r}, keys={sorted(self._keys)},"
                f"{where} material=<redacted>)")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def generate(cls) -> LocalKMS:
        """A key-file-less LocalKMS with one fresh master key (tests, demos)."""
        kid = _new_key_id()
        return cls({kid: secrets.token_bytes(32)}, kid)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> LocalKMS:
        """Load a key file; with ``create=True`` make one (mode 0600) if it is missing."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise ConfigurationError(
                    f"key file {str(p)!r} does not exist (run `piiguard init` or pass "
                    "create=True)")
            kms = cls.generate()
            kms.path = p
            kms.created = True
            try:
                kms._write(exclusive=True)
            except FileExistsError:
                # Another process created it since our check: use its key, or data keys
                # wrapped under our master key would be lost when its file replaced ours.
                return cls.from_file(p)
            return kms
        doc = _read_file(p)
        kms = cls(doc.keys, doc.current, path=p, disabled=doc.disabled)
        kms.retired = set(doc.retired)
        kms._version = doc.version
        return kms

    def save(self) -> None:
        """Write the key file atomically with mode 0600 (merged with what other
        processes wrote to it since we read it: no master key is ever dropped)."""
        self._update(lambda: None)

    # -- sharing the key file between processes ------------------------------------------
    # Every change is a read-modify-write under an exclusive lock on a sidecar lock file,
    # merged with the file as it is now: two processes adding master keys at once keep
    # both (losing one would lose every data key wrapped under it). Readers notice a
    # changed file (new inode from the atomic replace) at their next KMS operation, so a
    # master key added or disabled by the CLI is seen without a restart.
    @contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"),
                     os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)              # releases the lock

    def _update(self, change: Callable[[], None]) -> None:
        if self.path is None:
            change()
            return
        with self._locked(), self._sync_lock:
            if self.path.exists():
                self._merge(_read_file(self.path, changed=True))
            change()
            self._write(exclusive=False)

    def _sync(self) -> None:
        """Take in what other processes wrote to the key file since we read it."""
        if self.path is None:
            return
        try:
            version = _file_version(self.path)
        except FileNotFoundError:
            return                    # keep the keys we hold; a write will recreate it
        if version == self._version:
            return
        with self._sync_lock:
            if version != self._version:
                self._merge(_read_file(self.path, changed=True))

    def _merge(self, doc: _KeyFile) -> None:
        # A master key retired by any process is gone for every process: never written
        # back from memory (which would undo an erasure epoch).
        self.retired |= doc.retired
        for kid in self.retired & set(self._keys):
            del self._keys[kid]
            del self._aeads[kid]
        for kid, material in doc.keys.items():
            if kid in self.retired:
                continue
            known = self._keys.get(kid)
            if known is None:
                self._keys[kid] = material
                self._aeads[kid] = AESGCM(material)
            elif known != material:
                raise ConfigurationError("the key file holds another key under a known "
                                         "master key id", key_id=kid)
        self.disabled = set(doc.disabled)  # the file says which keys are disabled
        self.master_key_id = doc.current
        self._version = doc.version

    def _write(self, *, exclusive: bool) -> None:
        # exclusive: publish with link(), which fails if the file exists (create once).
        if self.path is None:
            raise ConfigurationError("this LocalKMS has no key file path")
        doc: dict[str, object] = {
            "version": _FILE_VERSION,
            "current": self.master_key_id,
            "keys": {
                kid: {"material": base64.b64encode(m).decode(),
                      "state": "disabled" if kid in self.disabled else "enabled"}
                for kid, m in self._keys.items()
            },
        }
        if self.retired:
            doc["retired"] = sorted(self.retired)   # ids only: the material is gone
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".master.key.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
            if exclusive:
                os.link(tmp, self.path)
            else:
                os.replace(tmp, self.path)
            self._version = _file_version(self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- master key lifecycle ------------------------------------------------------------
    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def has_master_key(self, key_id: str) -> bool:
        """Whether this key file holds ``key_id`` (disabled or not); ``Guard.bind``
        refuses a key table naming a master key the file lacks."""
        self._sync()
        return key_id in self._keys

    def add_master_key(self, *, make_current: bool = False) -> str:
        """Create a new master key; returns its id (saved if the KMS has a file)."""
        kid = _new_key_id()
        material = secrets.token_bytes(32)

        def change() -> None:
            self._keys[kid] = material
            self._aeads[kid] = AESGCM(material)
            if make_current:
                self.master_key_id = kid
        self._update(change)
        return kid

    def set_current(self, key_id: str) -> None:
        def change() -> None:
            self._aead(key_id)
            self.master_key_id = key_id
        self._update(change)

    def disable(self, key_id: str) -> None:
        """Refuse every later use of ``key_id`` (like disabling a key in AWS KMS)."""
        def change() -> None:
            self._aead(key_id)
            self.disabled.add(key_id)
        self._update(change)

    def enable(self, key_id: str) -> None:
        def change() -> None:
            self._aead(key_id)
            self.disabled.discard(key_id)
        self._update(change)

    def remove_master_key(self, key_id: str) -> None:
        """Retire master key ``key_id`` for good (an erasure epoch): its material is
        removed from memory and from the key file (atomic rewrite, mode 0600), and its id
        is recorded as retired so that no process writes it back. Everything still
        wrapped under it can never be unwrapped again. The current key is refused."""
        def change() -> None:
            self._aead(key_id)
            if key_id == self.master_key_id:
                raise ConfigurationError("the current master key cannot be removed",
                                         key_id=key_id, operation="remove")
            del self._keys[key_id]
            del self._aeads[key_id]
            self.disabled.discard(key_id)
            self.retired.add(key_id)
        self._update(change)

    def _aead(self, key_id: str) -> AESGCM:
        try:
            return self._aeads[key_id]
        except KeyError:
            raise UnknownKeyError("unknown master key", key_id=key_id) from None

    def _usable(self, key_id: str, operation: str) -> AESGCM:
        aead = self._aead(key_id)
        if key_id in self.disabled:
            raise KMSAccessError("master key is disabled", key_id=key_id, operation=operation)
        return aead

    # -- KeyProvider -----------------------------------------------------------------------
    # Each operation first takes in changes other processes made to the key file: one
    # stat() per KMS operation (rare: the key cache sits in front of the KMS).
    def generate_data_key(self, context: Context) -> DataKeyPair:
        self._sync()                     # the current master key may have changed too
        plaintext = secrets.token_bytes(32)
        current = self.master_key_id
        return DataKeyPair(plaintext, self._wrap(current, plaintext, context,
                                                 "generate_data_key"), current)

    def decrypt_data_key(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes:
        self._sync()
        kid, nonce, body = self._parse(wrapped, master_key_id)
        aead = self._usable(kid, "decrypt")
        try:
            plaintext: bytes = aead.decrypt(nonce, body, _context_aad(kid, context))
            return plaintext
        except InvalidTag:
            raise KMSAccessError("local KMS could not unwrap the data key", key_id=kid,
                                 operation="decrypt") from None

    def rewrap(self, wrapped: bytes, source_key_id: str, dest_key_id: str,
               context: Context) -> bytes:
        plaintext = self.decrypt_data_key(wrapped, source_key_id, context)
        return self._wrap(dest_key_id, plaintext, context, "rewrap")

    def _wrap(self, key_id: str, plaintext: bytes, context: Context, operation: str) -> bytes:
        aead = self._usable(key_id, operation)
        nonce = os.urandom(12)
        kid = key_id.encode("ascii")
        return (bytes((_WRAP_VERSION, len(kid))) + kid + nonce
                + aead.encrypt(nonce, plaintext, _context_aad(key_id, context)))

    @staticmethod
    def _parse(wrapped: bytes, expected: str) -> _Wrapped:
        wrapped = bytes(wrapped)
        if len(wrapped) < 2 or wrapped[0] != _WRAP_VERSION:
            raise KMSAccessError("wrapped key has an unknown format", key_id=expected,
                                 operation="decrypt")
        n = wrapped[1]
        if len(wrapped) < 2 + n + 12 + 16:
            raise KMSAccessError("wrapped key is truncated", key_id=expected,
                                 operation="decrypt")
        kid = wrapped[2:2 + n].decode("ascii", "replace")
        if kid != expected:
            raise KMSAccessError("wrapped key names another master key", key_id=expected,
                                 operation="decrypt")
        return _Wrapped(kid, wrapped[2 + n:14 + n], wrapped[14 + n:])


def _file_version(path: Path) -> FileVersion:
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _check_custody(p: Path, st: os.stat_result) -> str | None:
    """Why a key file must not be used: readable or writable by group or others, or
    owned by another user than this process's (whoever controls the file chooses the
    master key new data keys are wrapped under). None if it is safe."""
    mode = st.st_mode & 0o777
    if mode & 0o077:
        return (f"key file {str(p)!r} is readable or writable by group or others (mode "
                f"{oct(mode)}); chmod 600 it")
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is not None and st.st_uid != euid:
        return (f"key file {str(p)!r} is owned by uid {st.st_uid}, not by this process's "
                f"user (uid {euid}); chown it")
    return None


def _read_file(p: Path, *, changed: bool = False) -> _KeyFile:
    """Keys, current id, disabled ids and version of a key file, refused if its mode or
    owner is unsafe (checked on the open file: no swap between the check and the read).
    ``changed``: a running process re-reading a file that changed under it."""
    try:
        with open(p, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            unsafe = _check_custody(p, st)
            if unsafe is not None:
                if changed:
                    raise KMSConfigurationError(
                        "the key file changed and is not adopted: " + unsafe,
                        operation="key file")
                raise ConfigurationError(unsafe)
            version = (st.st_ino, st.st_mtime_ns, st.st_size)
            doc = json.loads(fh.read())
        keys = {kid: base64.b64decode(entry["material"], validate=True)
                for kid, entry in doc["keys"].items()}
        disabled = {kid for kid, entry in doc["keys"].items()
                    if entry.get("state") == "disabled"}
        current = doc["current"]
        retired = set(doc.get("retired", ()))
        if doc.get("version") != _FILE_VERSION or current not in keys or retired & set(keys):
            raise ValueError("version")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigurationError(f"key file {str(p)!r} is not a valid piiguard key file") \
            from None
    return _KeyFile(keys, current, disabled, version, retired)


def _new_key_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    return f"mk-{stamp}-{secrets.token_hex(4)}"


if TYPE_CHECKING:
    def _is_a_key_provider(kms: LocalKMS) -> KeyProvider:  # mypy: LocalKMS keeps the protocol
        return kms
