"""Scenario 4: KMS calls and KMS time for writing and reading the table, on a moto server.

KMS is a real ``moto_server`` process on 127.0.0.1 (:class:`piiguard.testing.MotoServer`)
reached over HTTP through boto3 (``--quick`` uses moto in-process instead, to stay
fast: a smoke run's figures mean nothing anyway); calls are counted with a botocore event hook
(:class:`piiguard.testing.KMSCallCounter`) and timed between the ``before-call`` and
``after-call`` events of the client.

piiguard (``AwsKMS``), table with the three PII columns, national ID searchable (so a
blind-index key is needed too):

- ``write (cold)``: a fresh Guard (empty key cache, as in a new process) binds and
  inserts every row (Core executemany);
- ``read (cold)``: another fresh Guard binds and reads every row (ORM, every attribute);
- ``write+read (fresh processes)``: the sum — the acceptance figure;
- ``read (warm)``: the reading Guard reads every row again (keys cached).

aws-encryption-sdk with a KMS master key on the same server (three values per row, one
message each), in the same phases: with a caching materials manager (piiguard's cache
limits) over up to 20,000 rows (its CPU cost, ~0.4 ms a value, would otherwise dominate
the run; with one cached data key the call count does not grow with rows), and without
caching on 100 rows, extrapolated linearly (one ``GenerateDataKey`` per encrypted value
and one ``Decrypt`` per decrypted value); the notes say so.
"""

from __future__ import annotations

import time

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from benchmarks.data import make_rows
from benchmarks.harness import Context, find, metric, target
from benchmarks.scenarios import peers, schema

NAME = "kms"
TITLE = "KMS calls and KMS time per table written and read (moto server)"
BASELINES = ()
NO_CACHE_SAMPLE_ROWS = 100
CACHING_MAX_ROWS = 20_000


def available() -> str | None:
    reason = schema.piiguard_available()
    if reason:
        return reason
    try:
        import moto  # noqa: F401
        import boto3  # noqa: F401
    except ImportError as exc:
        return f"moto[server] / boto3 not installed: {exc}"
    return None


class KMSTimer:
    """Calls and seconds spent in KMS calls made through one boto3 client."""

    def __init__(self, client) -> None:
        from piiguard.testing import KMSCallCounter

        self.counter = KMSCallCounter(client)
        self.seconds = 0.0
        self._t0: float | None = None
        client.meta.events.register("before-call.kms", self._before)
        client.meta.events.register("after-call.kms", self._after)

    def _before(self, **_) -> None:
        self._t0 = time.perf_counter()

    def _after(self, **_) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    def snapshot(self) -> tuple[int, float]:
        return self.counter.total, self.seconds

    def since(self, snap: tuple[int, float]) -> tuple[int, float, dict]:
        return (self.counter.total - snap[0], self.seconds - snap[1],
                dict(self.counter.calls))


def _phase(records: list[dict], system: str, case: str, calls: int, seconds: float,
           wall: float, rows: int, note: str | None = None, extrapolated_from: int | None = None):
    records.append(metric(NAME, f"{case}: KMS calls", system, value=calls, unit="calls",
                          rows=rows, note=note, extrapolated_from=extrapolated_from))
    records.append(metric(NAME, f"{case}: KMS time", system, value=seconds * 1000,
                          unit="ms", rows=rows, note=note, wall_seconds=wall,
                          extrapolated_from=extrapolated_from))


def _piiguard(ctx: Context, server, n: int, rows: list[dict], records: list[dict]) -> None:
    from piiguard import Guard
    from piiguard.kms.aws import AwsKMS

    admin = server.client()
    key_arn = admin.create_key(Description="piiguard bench")["KeyMetadata"]["Arn"]
    engine = ctx.engine("kms")

    # Writer: a fresh Guard, as in a new process.
    client = server.client()
    timer = KMSTimer(client)
    guard = Guard(kms=AwsKMS(key_id=key_arn, client=client))
    model = schema.piiguard_model(guard, "customers_kms", searchable=True)
    t0 = time.perf_counter()
    guard.bind(engine)
    model.__table__.create(engine)
    with engine.begin() as conn:
        for i in range(0, n, 10_000):
            conn.execute(insert(model.__table__), rows[i:i + 10_000])
    guard.close()
    wall_w = time.perf_counter() - t0
    w_calls, w_secs, w_ops = timer.since((0, 0.0))

    # Reader: another fresh Guard (new client, empty cache).
    client2 = server.client()
    timer2 = KMSTimer(client2)
    guard2 = Guard(kms=AwsKMS(key_id=key_arn, client=client2))
    model2 = schema.piiguard_model(guard2, "customers_kms", searchable=True)

    def read_all() -> int:
        count = 0
        with Session(engine) as session:
            for obj in session.scalars(select(model2).execution_options(yield_per=10_000)):
                _ = (obj.national_id, obj.phone, obj.address)  # read: decrypts
                count += 1
        if count != n:
            raise AssertionError(f"read {count} rows, not {n}")
        return count

    t0 = time.perf_counter()
    guard2.bind(engine)
    read_all()
    wall_r = time.perf_counter() - t0
    r_calls, r_secs, r_ops = timer2.since((0, 0.0))
    snap = timer2.snapshot()
    t0 = time.perf_counter()
    read_all()
    wall_rw = time.perf_counter() - t0
    rw_calls, rw_secs, _ = timer2.since(snap)
    guard2.close()

    _phase(records, "piiguard", "write (cold)", w_calls, w_secs, wall_w, n,
           note="calls: " + ", ".join(f"{k} {v}" for k, v in sorted(w_ops.items())))
    _phase(records, "piiguard", "read (cold)", r_calls, r_secs, wall_r, n,
           note="calls: " + ", ".join(f"{k} {v}" for k, v in sorted(r_ops.items())))
    _phase(records, "piiguard", "write+read (fresh processes)", w_calls + r_calls,
           w_secs + r_secs, wall_w + wall_r, n)
    _phase(records, "piiguard", "read (warm)", rw_calls, rw_secs, wall_rw, n)


def _aws_sdk(server, n: int, rows: list[dict], records: list[dict], *, caching: bool,
             sample: int) -> None:
    from aws_encryption_sdk.key_providers.kms import KMSMasterKey

    admin = server.client()
    key_arn = admin.create_key(Description="aws-sdk bench")["KeyMetadata"]["Arn"]
    m = min(n, CACHING_MAX_ROWS) if caching else min(n, sample)
    part = rows[:m]
    values = [(r["national_id"].encode(), r["phone"].encode(), r["address"].encode())
              for r in part]

    def sdk():
        client = server.client()
        timer = KMSTimer(client)
        return peers.AwsSdk(KMSMasterKey(key_id=key_arn, client=client), caching=caching), timer

    w, tw = sdk()
    t0 = time.perf_counter()
    messages = [tuple(w.encrypt(v) for v in row) for row in values]
    wall_w = time.perf_counter() - t0
    r, tr = sdk()
    t0 = time.perf_counter()
    out = [tuple(r.decrypt(c) for c in row) for row in messages]
    wall_r = time.perf_counter() - t0
    if out != values:
        raise AssertionError("aws-encryption-sdk did not round-trip")
    w_calls, w_secs, _ = tw.since((0, 0.0))
    r_calls, r_secs, _ = tr.since((0, 0.0))
    snap = tr.snapshot()
    t0 = time.perf_counter()
    for row in messages:
        for c in row:
            r.decrypt(c)
    wall_rw = time.perf_counter() - t0
    rw_calls, rw_secs, _ = tr.since(snap)
    system = "aws-encryption-sdk (caching)" if caching else "aws-encryption-sdk (no cache)"
    if caching:
        # One cached data key serves every message within the limits (2**30 messages,
        # an hour): the count does not grow with rows, so it is reported as measured.
        scale = 1.0
        note = None if m == n else (f"measured on {m:,} rows (the SDK costs ~0.4 ms a "
                                    "value); calls do not grow with rows under the cache "
                                    "limits")
        ex = None if m == n else m
    else:
        scale = n / m
        note = None if scale == 1 else (f"measured on {m:,} rows, scaled ×{scale:,.0f} "
                                        "(one KMS call per value)")
        ex = None if scale == 1 else m
    _phase(records, system, "write (cold)", round(w_calls * scale), w_secs * scale,
           wall_w * scale, n, note, ex)
    _phase(records, system, "read (cold)", round(r_calls * scale), r_secs * scale,
           wall_r * scale, n, note, ex)
    _phase(records, system, "write+read (fresh processes)", round((w_calls + r_calls) * scale),
           (w_secs + r_secs) * scale, (wall_w + wall_r) * scale, n, note, ex)
    _phase(records, system, "read (warm)", round(rw_calls * scale), rw_secs * scale,
           wall_rw * scale, n, note, ex)


class InProcessMoto:
    """moto in-process (``mock_aws``) with MotoServer's interface: used by ``--quick``
    only, where starting a server process (~3 s) would be most of the smoke run."""

    url = "in-process"

    def start(self) -> "InProcessMoto":
        import moto

        from piiguard.testing import _fake_credentials

        _fake_credentials()
        self._mock = moto.mock_aws()
        self._mock.start()
        return self

    def client(self):
        import boto3

        from piiguard.testing import TEST_REGION

        return boto3.client("kms", region_name=TEST_REGION)

    def stop(self) -> None:
        if getattr(self, "_mock", None) is not None:
            self._mock.stop()
            self._mock = None


def run(ctx: Context) -> list[dict]:
    from piiguard.testing import MotoServer

    n = ctx.rows
    rows = make_rows(n, seed=4, input="canonical")  # values compared as stored
    server = (InProcessMoto() if ctx.quick else MotoServer()).start()
    ctx.defer(server.stop)
    records: list[dict] = []
    try:
        _piiguard(ctx, server, n, rows, records)
        if peers.aws_sdk_available() is None:
            sample = 3 if ctx.quick else NO_CACHE_SAMPLE_ROWS
            _aws_sdk(server, n, rows, records, caching=True, sample=sample)
            _aws_sdk(server, n, rows, records, caching=False, sample=sample)
    finally:
        server.stop()
    calls = find(records, case="write+read (fresh processes): KMS calls", system="piiguard")
    ms = find(records, case="write+read (fresh processes): KMS time", system="piiguard")
    if calls and calls["value"]:
        records.append(metric(NAME, "moto server latency per KMS call", "piiguard",
                              value=ms["value"] / calls["value"], unit="ms"))
    return records


def targets(records: list[dict], ctx: Context) -> list[dict]:
    r = find(records, case="write+read (fresh processes): KMS calls", system="piiguard")
    if r is None:
        return []
    return [target(NAME, f"KMS calls for {r['rows']:,} rows written and read by fresh "
                         "processes", expected="<= 3 calls", measured=r["value"],
                   unit=" calls", met=r["value"] <= 3,
                   detail="write: " + (find(records, case="write (cold): KMS calls",
                                            system="piiguard")["note"] or "") +
                          "; read: " + (find(records, case="read (cold): KMS calls",
                                             system="piiguard")["note"] or ""))]
