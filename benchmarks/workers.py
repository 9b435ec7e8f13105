"""Re-encryption across processes and machines, measured on PostgreSQL (not part of
``make test``: a 1,000,000-row run takes minutes, a 10,000,000-row run most of an hour).

    .venv/bin/python -m benchmarks.workers --rows 1000000            # 1 vs 2 processes, queue
    .venv/bin/python -m benchmarks.workers --rows 10000000 --cases processes-2

Cases, run one after another on the same table (a DEK rotation before each makes every
row need work again), so a noisy neighbour on a shared machine shows in all of them:

- ``inprocess-1``: ``reencrypt`` in this process (no worker process: the baseline);
- ``processes-1`` / ``processes-2``: ``reencrypt --workers 1|2`` (worker processes);
- ``queue-2``: the same job through Celery (RabbitMQ broker, Redis results), one
  ``celery worker --concurrency 2`` started by this script;
- ``verify-1`` / ``verify-2``: ``verify --workers 1|2``.

Each case reports rows/s, wall time, KMS calls (total and by process: the app's KMS
logs every call with its process id) and the peak memory (VmHWM) of every worker
process. The table is built from 1,000 encrypted seed rows copied by SQL (the column
types are not row-bound, so copies are valid values), in chunks of 1,000,000 rows.
Results go to ``benchmarks/results/workers-<rows>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

PG_URL = os.environ.get("PIIGUARD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKER = os.environ.get("PIIGUARD_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("PIIGUARD_CELERY_BACKEND", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).parent / "results"
SEED = 1000

APP = textwrap.dedent('''
    import logging
    import os

    from sqlalchemy import Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from piiguard import Guard, LocalKMS
    from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone


    class LoggingKMS:
        def __init__(self, inner, log):
            self.inner, self.log = inner, log

        @property
        def master_key_id(self):
            return self.inner.master_key_id

        def _note(self, kind):
            with open(self.log, "a") as f:
                f.write(f"{{os.getpid()}} {{kind}}\\n")

        def generate_data_key(self, context):
            self._note("generate")
            return self.inner.generate_data_key(context)

        def decrypt_data_key(self, wrapped, master_key_id, context):
            self._note("decrypt")
            return self.inner.decrypt_data_key(wrapped, master_key_id, context)

        def rewrap(self, wrapped, source, dest, context):
            self._note("rewrap")
            return self.inner.rewrap(wrapped, source, dest, context)


    guard = Guard(kms=LoggingKMS(LocalKMS.from_file({key!r}, create=True), {log!r}))


    class Base(DeclarativeBase):
        pass


    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard))
        note: Mapped[str] = mapped_column(String(40), default="")


    logging.getLogger("piiguard.audit").addHandler(logging.NullHandler())
    logging.getLogger("piiguard.audit").setLevel(logging.INFO)
    engine = create_engine({url!r}, pool_size=4)
    Base.metadata.create_all(engine)
    guard.bind(engine)
''')


def tc(n: int) -> str:
    from piiguard.validators import tckn

    base = str(500000000 + n)
    return base + tckn.calc_check_digits(base)


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident memory of a process (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


class _Reporter:
    """Progress printed every 30 s (a long run shows its rate, KMS calls and memory
    before it ends)."""

    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.done = 0
        self.started = time.perf_counter()
        self.last = self.started

    def start(self, description: str, total: int | None) -> None:
        print(f"    {description}: {total:,} rows", flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= 30:
            self.last = now
            memory = [vm_hwm_mib(p.pid) for p in multiprocessing.active_children()
                      if p.pid is not None]
            calls = self.bench.kms_calls()
            print(f"    {self.done:,} rows in {now - self.started:.0f} s "
                  f"({self.done / (now - self.started):,.0f} rows/s), KMS calls "
                  f"{sorted(calls.values())}, memory {memory}, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)


class Bench:
    def __init__(self, rows: int, workdir: Path) -> None:
        self.rows = rows
        self.dir = workdir
        self.schema = f"bench_workers_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(PG_URL)
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.url = f"{PG_URL}?options=-csearch_path%3D{self.schema}"
        self.name = f"bench_app_{uuid.uuid4().hex[:8]}"
        self.log = workdir / "kms.log"
        (workdir / f"{self.name}.py").write_text(
            APP.format(key=str(workdir / "master.key"), log=str(self.log), url=self.url))
        sys.path.insert(0, str(workdir))
        os.chdir(workdir)
        self.module = __import__(self.name)
        self.guard = self.module.guard
        self.engine = self.guard.engine
        self.spec = f"{self.name}:guard"

    def close(self) -> None:
        self.engine.dispose()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()

    def fill(self) -> float:
        started = time.perf_counter()
        t = self.module.Customer.__table__
        with self.engine.begin() as conn:
            conn.execute(insert(t), [dict(id=i, national_id=tc(i), phone=f"+90536{i:07d}",
                                          note="") for i in range(1, SEED + 1)])
        cols = ", ".join(c.name for c in t.columns if c.name != "id")
        scols = ", ".join(f"s.{c.name}" for c in t.columns if c.name != "id")
        lo = SEED + 1
        while lo <= self.rows:
            hi = min(self.rows, lo + 1_000_000 - 1)
            with self.engine.begin() as conn:
                conn.execute(text(
                    f"INSERT INTO customers (id, {cols}) SELECT g, {scols} FROM "
                    f"generate_series({lo}, {hi}) g JOIN customers s ON "
                    f"s.id = ((g - 1) % {SEED}) + 1"))
            lo = hi + 1
            print(f"  filled {hi:,} rows", flush=True)
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE customers"))
        return time.perf_counter() - started

    def kms_calls(self) -> dict[int, int]:
        out: dict[int, int] = {}
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                pid = int(line.split()[0])
                out[pid] = out.get(pid, 0) + 1
        return out

    def _case(self, name: str, run: Any) -> dict[str, Any]:
        if not name.startswith("verify"):
            self.guard.keys.rotate("dek", "customers")
        if self.log.exists():
            self.log.unlink()
        started = time.perf_counter()
        doc, memory = run()
        wall = time.perf_counter() - started
        calls = self.kms_calls()
        rows = doc.get("updated", doc.get("checked", 0))
        if name.startswith("verify"):
            rows = self.rows
        out = {"case": name, "rows": rows, "wall_s": round(wall, 2),
               "load_avg_1m_after": round(os.getloadavg()[0], 1),
               "rows_per_s": round(rows / wall), "kms_calls": sum(calls.values()),
               "kms_calls_by_process": sorted(calls.values()),
               "worker_memory_mib": memory, "ok": doc.get("ok"),
               "remaining": doc.get("remaining")}
        print(f"  {name}: {out['rows_per_s']:,} rows/s, {wall:.1f} s, KMS calls "
              f"{out['kms_calls']} {out['kms_calls_by_process']}, memory {memory}",
              flush=True)
        return out

    def inprocess(self) -> tuple[dict[str, Any], list[Any]]:
        from piiguard.rotation import reencrypt

        return reencrypt(self.guard, batch_size=1000).to_dict(), [vm_hwm_mib(os.getpid())]

    def processes(self, kind: str, workers: int) -> tuple[dict[str, Any], list[Any]]:
        from piiguard.rotation import reencrypt, verify
        from piiguard.rotation.jobs import JobSpec
        from piiguard.rotation.workers import WorkerPool

        spec = JobSpec(kind, app=self.spec, batch_size=1000)
        with WorkerPool(spec, workers, _Reporter(self)) as pool:
            if kind == "verify":
                rep = verify(self.guard, workers=workers, runner=pool.verify_runner)
            else:
                rep = reencrypt(self.guard, batch_size=1000, workers=workers,
                                runner=pool.batch_runner)
            memory = [vm_hwm_mib(p.pid) for p in multiprocessing.active_children()
                      if p.pid is not None]
        return rep.to_dict(), sorted(m for m in memory if m is not None)

    def queue(self, concurrency: int) -> tuple[dict[str, Any], list[Any]]:
        from piiguard.rotation.celery import make_app, submit, wait
        from piiguard.rotation.jobs import JobSpec

        queue = f"piiguard-bench-{uuid.uuid4().hex[:6]}"
        env = dict(os.environ, PIIGUARD_APP=self.spec, PIIGUARD_CELERY_BROKER=BROKER,
                   PIIGUARD_CELERY_BACKEND=BACKEND, PIIGUARD_CELERY_QUEUE=queue,
                   PYTHONPATH=os.pathsep.join([str(self.dir), *sys.path]))
        log = open(self.dir / "celery.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "piiguard.rotation.celery", "worker",
             "-Q", queue, "--concurrency", str(concurrency), "--pool", "prefork",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
             "-n", f"bench-{queue}@%h"], cwd=self.dir, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while len(children_of(proc.pid)) < concurrency:
                if time.monotonic() > deadline:
                    raise RuntimeError("celery worker did not start")
                time.sleep(0.2)
            time.sleep(1)
            job = submit(JobSpec("reencrypt", app=self.spec, batch_size=1000), self.guard,
                         capp=make_app(BROKER, BACKEND, queue))
            st = wait(self.guard, job)
            memory = [vm_hwm_mib(p) for p in children_of(proc.pid)]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        doc = dict(st["report"] or {})
        return doc, sorted(m for m in memory if m is not None)

    def run(self, cases: list[str]) -> list[dict[str, Any]]:
        out = []
        for name in cases:
            kind, _, n = name.partition("-")
            workers = int(n)
            if kind == "inprocess":
                out.append(self._case(name, self.inprocess))
            elif kind == "processes":
                out.append(self._case(name, lambda w=workers: self.processes("reencrypt", w)))
            elif kind == "verify":
                out.append(self._case(name, lambda w=workers: self.processes("verify", w)))
            elif kind == "queue":
                out.append(self._case(name, lambda w=workers: self.queue(w)))
            else:
                raise SystemExit(f"unknown case {name}")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cases", default="inprocess-1,processes-1,processes-2,queue-2,"
                                       "verify-1,verify-2")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="piiguard-bench-") as tmp:
        bench = Bench(args.rows, Path(tmp))
        try:
            print(f"filling {args.rows:,} rows ...", flush=True)
            fill = bench.fill()
            results = bench.run(cases)
        finally:
            os.chdir(Path(__file__).parent.parent)
            bench.close()
    doc = {"rows": args.rows, "fill_s": round(fill, 1), "cases": results,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    by = {r["case"]: r for r in results}
    if "processes-1" in by and "processes-2" in by:
        doc["speedup_2_processes"] = round(by["processes-2"]["rows_per_s"]
                                           / by["processes-1"]["rows_per_s"], 2)
    if "processes-1" in by and "queue-2" in by:
        doc["speedup_queue_2"] = round(by["queue-2"]["rows_per_s"]
                                       / by["processes-1"]["rows_per_s"], 2)
    if "verify-1" in by and "verify-2" in by:
        doc["speedup_verify_2"] = round(by["verify-2"]["rows_per_s"]
                                        / by["verify-1"]["rows_per_s"], 2)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"workers-{args.rows}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Re-encryption by workers, PostgreSQL, {args.rows:,} rows", "",
             f"{doc['time']}, {os.cpu_count()} CPUs; table filled in {doc['fill_s']} s.", "",
             "| case | rows | wall s | rows/s | KMS calls (by process) | worker memory "
             "MiB (VmHWM) | load avg |", "|---|---:|---:|---:|---|---|---:|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['rows']:,} | {r['wall_s']} | {r['rows_per_s']:,} "
                     f"| {r['kms_calls']} {r['kms_calls_by_process']} | "
                     f"{r['worker_memory_mib']} | {r.get('load_avg_1m_after', '')} |")
    lines.append("")
    for k in ("speedup_2_processes", "speedup_queue_2", "speedup_verify_2"):
        if k in doc:
            lines.append(f"- {k.replace('_', ' ')}: {doc[k]}x")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
