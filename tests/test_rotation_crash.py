"""Crash safety: ``piiguard reencrypt`` in a real subprocess, killed with SIGKILL at 20
random points and resumed each time, over 10,000 rows x 3 PII columns (SQLite file).

After every kill the table is checked, not only at the end: no row lost, every value
decrypts (once) to its original, none is double-encrypted. At the end every value is on
the active DEK (and every blind index on the active index key). The kill points are
spread over the run: each run gets a random batch size, a random delay after start-up,
and either runs flat out (the kill lands in the decrypt/encrypt/UPDATE/COMMIT path) or
throttled with ``--max-rate`` (a longer run); the test checks that most kills did
interrupt a run half-way.

The random choices come from one seed, printed at the start (pytest shows it with the
output of a failed test). To replay a run, set it in the environment::

    PIIGUARD_CRASH_SEED=1712345678 pytest tests/test_rotation_crash.py

Without ``PIIGUARD_CRASH_SEED`` the seed is drawn from the clock. (The kill timings also
depend on the machine's speed, so a replay repeats the same choices, not necessarily
the same kill points.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from sqlalchemy import column, insert, select, table

from piiguard.crypto.blind_index import index_key_id_of
from piiguard.crypto.envelope import looks_like_envelope
from piiguard.validators import tckn

pytestmark = pytest.mark.slow

N = 10_000
KILLS = 20

APP = textwrap.dedent('''
    from sqlalchemy import Integer, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from piiguard import Guard, LocalKMS
    from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone

    guard = Guard(kms=LocalKMS.from_file({key!r}))


    class Base(DeclarativeBase):
        pass


    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard))


    engine = create_engine({url!r})
    Base.metadata.create_all(engine)
    guard.bind(engine)
''')


def tc(n: int) -> str:
    base = str(600000000 + n)
    return base + tckn.calc_check_digits(base)


def original(i: int) -> tuple[str, str, str]:
    return tc(i), f"+90536{i:07d}", f"MODA CAD. NO:{i % 97 + 1}, 34710 KADIKÖY/İSTANBUL"


RAW = table("customers", column("id"), column("national_id"), column("national_id_bidx"),
            column("phone"), column("address"))


def check_table(app, expect_keys=None):
    """Every row present, every value decrypting once to its original; returns how many
    values are on ``expect_keys`` (dek, index)."""
    cols = {c.column.name: c for c in app.guard.columns}
    with app.engine.connect() as conn:
        rows = conn.execute(select(RAW).order_by(RAW.c.id)).all()
    assert [r.id for r in rows] == list(range(1, N + 1))             # 0 lost rows
    on_new = 0
    for r in rows:
        for name, want in zip(("national_id", "phone", "address"), original(r.id),
                              strict=True):
            got = cols[name].decrypt_stored(getattr(r, name))
            assert got == want                                        # same value
            assert not looks_like_envelope(got)                       # not double-encrypted
            if expect_keys and cols[name].stored_key_id(getattr(r, name)) == expect_keys[0]:
                on_new += 1
        idx = cols["national_id"].index
        index_key = index_key_id_of(r.national_id_bidx)
        assert index_key is not None
        assert bytes(r.national_id_bidx) == idx.with_key(index_key, original(r.id)[0])
        if expect_keys and index_key == expect_keys[1]:
            on_new += 1
    return on_new


def crash_seed() -> int:
    """The seed of this run: ``PIIGUARD_CRASH_SEED`` if set, else the clock; printed so
    that a failure can be replayed."""
    seed = int(os.environ.get("PIIGUARD_CRASH_SEED") or time.time_ns() % 2**32)
    print(f"PIIGUARD_CRASH_SEED={seed}  (set it to replay this run's random choices)")
    return seed


def test_reencrypt_survives_sigkill_at_20_random_points(tmp_path, monkeypatch):
    rng = random.Random(crash_seed())
    name = f"crash_app_{uuid.uuid4().hex[:8]}"
    key = tmp_path / "master.key"
    from piiguard import LocalKMS

    LocalKMS.from_file(key, create=True)
    (tmp_path / f"{name}.py").write_text(APP.format(key=str(key),
                                                    url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    app = __import__(name)
    with app.engine.begin() as conn:
        conn.execute(insert(app.Customer.__table__), [
            dict(zip(("id", "national_id", "phone", "address"), (i, *original(i)),
                     strict=True))
            for i in range(1, N + 1)])
    new_dek = app.guard.keys.rotate("dek", "customers")
    new_idx = app.guard.keys.rotate("index", "customers")
    # reencrypt first waits until every process heard of the rotation (the change
    # bound); the kills below are timed against its work, so let that wait pass here.
    time.sleep(app.guard.keys.change_bound)
    total = 4 * N                                     # 3 ciphertexts + 1 index a row

    exe = os.path.join(os.path.dirname(sys.executable), "piiguard")
    env = dict(os.environ, PIIGUARD_APP=f"{name}:guard")
    started = time.monotonic()
    probe = subprocess.run([exe, "--json", "keys", "status"], cwd=tmp_path, env=env,
                           capture_output=True, timeout=60)
    assert probe.returncode == 0, probe.stderr.decode()
    startup = time.monotonic() - started

    # Kill runs at random points until KILLS of them were stopped half-way. When a run
    # finishes the table before its kill (a loaded machine makes the start-up time the
    # delays are drawn from a poor guide), the keys are rotated again and the killing goes
    # on against the new keys: the test never ends with fewer interrupted runs than asked.
    keys = (new_dek, new_idx)
    rounds: list[list[int]] = [[]]
    interrupted = 0
    for _ in range(4 * KILLS):
        if interrupted >= KILLS:
            break
        batch = rng.choice([25, 50, 100, 200, 400])
        if rng.random() < 0.5:      # throttled: the kill may land anywhere in a long run
            extra, delay = ["--max-rate", "600"], rng.uniform(0.6 * startup, startup + 0.8)
        else:                       # fast: the kill lands in the compute/write path
            # (a cap still, so that on a loaded machine, where the probe's start-up time
            # says little about this run's, a run cannot finish the table before the kill)
            extra, delay = ["--max-rate", "1500"], rng.uniform(0.8 * startup, startup + 0.25)
        proc = subprocess.Popen([exe, "--json", "reencrypt", "--batch-size", str(batch),
                                 *extra], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        if finished:
            assert proc.returncode == 0, proc.stderr.read().decode()
        done = check_table(app, keys)                 # consistent after every kill
        rounds[-1].append(done)
        if done < total:
            interrupted += 1
        else:                                         # finished: rotate and kill again
            keys = (app.guard.keys.rotate("dek", "customers"),
                    app.guard.keys.rotate("index", "customers"))
            time.sleep(app.guard.keys.change_bound)  # as above: reencrypt would wait it
            rounds.append([])
    print(f"interrupted runs: {interrupted}; progress per key rotation: {rounds}")
    assert interrupted >= KILLS, rounds               # every kill stopped a run half-way
    for progress in rounds:
        assert progress == sorted(progress)           # a resumed run never goes backwards
    new_dek, new_idx = keys

    final = subprocess.run([exe, "--json", "reencrypt", "--batch-size", "500"], cwd=tmp_path,
                           env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()
    assert check_table(app, (new_dek, new_idx)) == total   # every value on the new keys
    again = subprocess.run([exe, "--json", "reencrypt"], cwd=tmp_path, env=env,
                           capture_output=True, timeout=300)
    assert again.returncode == 0 and b'"updated": 0' in again.stdout
