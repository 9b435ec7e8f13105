"""The benchmark harness: runs scenarios, repeats them, keeps the samples, writes reports.

A scenario is a small module in :mod:`benchmarks.scenarios` with

- ``NAME`` (used by ``--only``), ``TITLE`` and ``BASELINES`` (system names every other
  system of the same case is compared with, e.g. ``("plaintext",)`` or ``("aesgcm",)``);
- ``available() -> str | None``: ``None`` when it can run, else why not (a dependency
  that has not landed yet); the report then says ``skipped: <reason>``;
- ``run(ctx) -> list[dict]``: records made with :func:`timing` or :func:`metric`;
- ``targets(records, ctx) -> list[dict]``: acceptance checks made with :func:`target`,
  computed from the measured records only.

Timed records keep every sample (seconds per repeat); the report gives the median with
min and max, microseconds per row (or per value / per lookup: ``rows`` is the number of
operations a sample covers), and ratios to the baselines computed from the medians.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"

DEFAULT_ROWS = 100_000
DEFAULT_REPEAT = 5
DEFAULT_OPS = 20_000          # per-value micro-benchmarks: operations per sample
QUICK_ROWS = 200
QUICK_OPS = 300
SCALING_ROWS = (10_000, 100_000, 1_000_000)
QUICK_SCALING_ROWS = (100, 300)

PG_URL = os.environ.get("PIIGUARD_BENCH_PG",
                        os.environ.get("PIIGUARD_TEST_PG",
                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
MARIADB_URL = os.environ.get("PIIGUARD_BENCH_MARIADB",
                             os.environ.get("PIIGUARD_TEST_MARIADB",
                                            "mysql+pymysql://root@127.0.0.1:3306/test"
                                            "?charset=utf8mb4"))
DATABASES = ("sqlite", "postgresql", "mariadb")

#: Scenario modules in report order.
SCENARIOS = ("field_crypto", "sql_ops", "blind_index", "kms", "storage", "masking",
             "reencrypt", "validators")

LIBRARIES = ("piiguard", "cryptography", "SQLAlchemy", "SQLAlchemy-Utils",
             "aws-encryption-sdk", "boto3", "botocore", "moto", "phonenumbers",
             "python-stdnum", "psycopg", "PyMySQL", "matplotlib", "pydantic")


# -- configuration ---------------------------------------------------------------------------
@dataclass
class Config:
    rows: int = DEFAULT_ROWS
    db: str = "sqlite"
    repeat: int = DEFAULT_REPEAT
    ops: int = DEFAULT_OPS
    quick: bool = False
    only: tuple[str, ...] = ()
    scaling: bool = False
    scaling_rows: tuple[int, ...] = SCALING_ROWS
    results_dir: Path = RESULTS_DIR
    name: str | None = None
    chart: bool = True
    update_readme: bool = True
    verbose: bool = True

    def output_name(self) -> str:
        """``latest`` for the default full run; other runs never overwrite it."""
        if self.name:
            return self.name
        if self.quick:
            return "quick"
        if self.scaling:
            return "scaling"
        parts = []
        if self.db != "sqlite":
            parts.append(self.db)
        if self.only:
            parts.append("+".join(self.only))
        if self.rows != DEFAULT_ROWS:
            parts.append(f"{self.rows}rows")
        return "-".join(["latest", *parts])


# -- records ---------------------------------------------------------------------------------
def timing(scenario: str, case: str, system: str, *, rows: int, samples: Iterable[float],
           db: str | None = None, note: str | None = None, **extra: Any) -> dict:
    """A timed record: ``samples`` are seconds for ``rows`` operations, one per repeat."""
    samples = [float(s) for s in samples]
    if not samples:
        raise ValueError("a timing needs at least one sample")
    if rows <= 0:
        raise ValueError("rows must be positive")
    med = statistics.median(samples)
    rec = {
        "scenario": scenario, "case": case, "system": system, "db": db, "kind": "time",
        "rows": int(rows), "repeats": len(samples), "samples": samples,
        "seconds": med, "seconds_min": min(samples), "seconds_max": max(samples),
        "per_row_us": med / rows * 1e6, "per_row_us_min": min(samples) / rows * 1e6,
        "per_row_us_max": max(samples) / rows * 1e6,
        "rows_per_second": rows / med if med > 0 else None,
        "ratios": {}, "ratio_to_plaintext": None, "ratio_to_floor": None, "note": note,
    }
    rec.update(extra)
    return rec


def metric(scenario: str, case: str, system: str, *, value: float, unit: str,
           rows: int | None = None, db: str | None = None, note: str | None = None,
           **extra: Any) -> dict:
    """A counted or measured quantity (KMS calls, bytes, ...), not a time."""
    rec = {"scenario": scenario, "case": case, "system": system, "db": db, "kind": "metric",
           "rows": rows, "value": value, "unit": unit, "ratios": {},
           "ratio_to_plaintext": None, "ratio_to_floor": None, "note": note}
    rec.update(extra)
    return rec


def target(scenario: str, name: str, *, expected: str, measured: float | None, unit: str,
           met: bool | None, detail: str = "") -> dict:
    """An acceptance check: ``met`` is None when it could not be measured."""
    return {"scenario": scenario, "name": name, "expected": expected, "measured": measured,
            "unit": unit, "met": met, "detail": detail}


def find(records: list[dict], **match: Any) -> dict | None:
    for rec in records:
        if all(rec.get(k) == v for k, v in match.items()):
            return rec
    return None


def primary_value(rec: dict) -> float:
    return rec["per_row_us"] if rec["kind"] == "time" else rec["value"]


def compute_ratios(records: list[dict], baselines: tuple[str, ...],
                   floor: str | None = None) -> None:
    """Fill ``ratios`` of every record from the medians of the baselines in its group
    (same scenario, case and db; and same size, ``scale``, in the scaling run)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        key = (rec["scenario"], rec["case"], rec["db"], rec.get("scale"))
        groups.setdefault(key, []).append(rec)
    for recs in groups.values():
        for base in baselines:
            b = next((r for r in recs if r["system"] == base), None)
            if b is None or not primary_value(b):
                continue
            for rec in recs:
                rec["ratios"][base] = primary_value(rec) / primary_value(b)
        for rec in recs:
            rec["ratio_to_plaintext"] = rec["ratios"].get("plaintext")
            if floor is not None:
                rec["ratio_to_floor"] = rec["ratios"].get(floor)


# -- run context -----------------------------------------------------------------------------
class Context:
    """What a scenario gets: the configuration, a scratch directory, fresh databases and
    the interleaved timing loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="piiguard-bench-"))
        self._cleanup: list[Callable[[], None]] = []
        self.server_versions: dict[str, str] = {}

    @property
    def rows(self) -> int:
        return self.config.rows

    @property
    def repeat(self) -> int:
        return self.config.repeat

    @property
    def quick(self) -> bool:
        return self.config.quick

    @property
    def db(self) -> str:
        return self.config.db

    def log(self, msg: str) -> None:
        if self.config.verbose:
            print(f"  {msg}", file=sys.stderr, flush=True)

    # databases ----------------------------------------------------------------------------
    def engine(self, label: str, db: str | None = None):
        """A fresh, empty database of kind ``db`` (default ``--db``): a SQLite file, a
        PostgreSQL schema or a MariaDB database, removed at the end of the run."""
        from sqlalchemy import create_engine, text

        db = db or self.config.db
        name = f"pgb_{label}_{uuid.uuid4().hex[:8]}"
        if db == "sqlite":
            eng = create_engine(f"sqlite:///{self.workdir / (name + '.db')}")
        elif db == "postgresql":
            admin = create_engine(PG_URL)
            with admin.begin() as conn:
                self.server_versions.setdefault(
                    "postgresql", conn.execute(text("SHOW server_version")).scalar())
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
            eng = create_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})

            def drop(admin=admin, name=name):
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                admin.dispose()
            self._cleanup.append(drop)
        elif db == "mariadb":
            admin = create_engine(MARIADB_URL)
            with admin.begin() as conn:
                self.server_versions.setdefault(
                    "mariadb", conn.execute(text("SELECT VERSION()")).scalar())
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            eng = create_engine(MARIADB_URL.replace("/test?", f"/{name}?"))

            def drop(admin=admin, name=name):
                with admin.begin() as conn:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                admin.dispose()
            self._cleanup.append(drop)
        else:
            raise ValueError(f"unknown database {db!r} (choose from {DATABASES})")
        self._cleanup.append(eng.dispose)
        return eng

    def defer(self, fn: Callable[[], None]) -> None:
        self._cleanup.append(fn)

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide results
                print(f"  cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        self._cleanup.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # timing ---------------------------------------------------------------------------------
    def interleave(self, cases: dict[str, Callable[[], float]],
                   repeat: int | None = None) -> dict[str, list[float]]:
        """Run every case once per repeat, round-robin, the starting case rotating each
        round, so a noisy neighbour hits all systems alike. A case returns the seconds
        of its timed part (set-up and tear-down stay outside the clock)."""
        repeat = repeat or self.config.repeat
        names = list(cases)
        samples: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeat):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if not self.config.quick:
                    gc.collect()  # costs ~0.2 s with a big heap: skipped in smoke runs
                samples[name].append(cases[name]())
        return samples


def clock(fn: Callable[[], Any]) -> float:
    """Seconds taken by ``fn()``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- environment -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(), "libraries": library_versions(),
    }


# -- running ---------------------------------------------------------------------------------
def load_scenario(name: str):
    return importlib.import_module(f"benchmarks.scenarios.{name}")


def resolve_only(only: Iterable[str]) -> tuple[str, ...]:
    out = []
    for item in only:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and 1 <= int(part) <= len(SCENARIOS):
                part = SCENARIOS[int(part) - 1]
            if part not in SCENARIOS:
                raise SystemExit(f"unknown scenario {part!r}; choose from "
                                 f"{', '.join(SCENARIOS)} (or 1-{len(SCENARIOS)})")
            out.append(part)
    return tuple(dict.fromkeys(out))


def run_scenario(name: str, ctx: Context) -> tuple[dict, list[dict], list[dict]]:
    """Run one scenario; never raises (a crash is recorded as status ``error``)."""
    t0 = time.perf_counter()
    status: dict[str, Any] = {"name": name, "title": name, "status": "ok", "reason": None}
    records: list[dict] = []
    targets: list[dict] = []
    try:
        mod = load_scenario(name)
        status["title"] = mod.TITLE
        reason = mod.available()
        if reason:
            status.update(status="skipped", reason=reason)
            ctx.log(f"{name}: skipped: {reason}")
        else:
            ctx.log(f"{name}: running ({mod.TITLE})")
            records = mod.run(ctx)
            compute_ratios(records, tuple(getattr(mod, "BASELINES", ())),
                           getattr(mod, "FLOOR", None))
            targets = mod.targets(records, ctx)
    except Exception as exc:  # noqa: BLE001 - report, keep going, exit non-zero at the end
        status.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
        ctx.log(f"{name}: ERROR {type(exc).__name__}: {exc}")
        if ctx.config.verbose:
            traceback.print_exc()
    status["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return status, records, targets


def run(config: Config) -> dict:
    """Run the configured scenarios and return the report (also written to disk)."""
    names = list(config.only or SCENARIOS)
    if config.scaling:
        names = ["scaling"]
    report: dict[str, Any] = {
        "meta": {**environment(), "config": {
            "rows": config.rows, "db": config.db, "repeat": config.repeat, "ops": config.ops,
            "quick": config.quick, "only": list(config.only), "scaling": config.scaling,
            "scaling_rows": list(config.scaling_rows) if config.scaling else None}},
        "scenarios": [], "results": [], "targets": [],
    }
    ctx = Context(config)
    t0 = time.perf_counter()
    try:
        for name in names:
            if name == "scaling":
                status, records, targets = run_scaling(ctx)
            else:
                status, records, targets = run_scenario(name, ctx)
            report["scenarios"].append(status)
            report["results"].extend(records)
            report["targets"].extend(targets)
    finally:
        ctx.close()
    report["meta"]["servers"] = ctx.server_versions
    report["meta"]["wall_seconds"] = round(time.perf_counter() - t0, 3)
    write_reports(report, config)
    return report


def run_scaling(ctx: Context) -> tuple[dict, list[dict], list[dict]]:
    """Scenario 2 on SQLite at each size of ``scaling_rows``; µs/row should stay flat."""
    t0 = time.perf_counter()
    status: dict[str, Any] = {"name": "scaling", "title": "Scaling of scenario 2 on SQLite",
                              "status": "ok", "reason": None}
    records: list[dict] = []
    targets: list[dict] = []
    base = ctx.config
    try:
        mod = load_scenario("sql_ops")
        reason = mod.available()
        if reason:
            status.update(status="skipped", reason=reason)
        else:
            for n in base.scaling_rows:
                ctx.config = replace(base, rows=n, db="sqlite")
                ctx.log(f"scaling: {n} rows")
                recs = mod.run(ctx)
                for r in recs:
                    r["scale"] = n
                compute_ratios(recs, tuple(mod.BASELINES), getattr(mod, "FLOOR", None))
                for r in recs:
                    r["scenario"] = "scaling"
                records.extend(recs)
            ctx.config = base
            targets = scaling_targets(records, base.scaling_rows)
    except Exception as exc:  # noqa: BLE001
        status.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
        traceback.print_exc()
    finally:
        ctx.config = base
    status["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return status, records, targets


def scaling_targets(records: list[dict], sizes: tuple[int, ...]) -> list[dict]:
    """piiguard's µs/row at every size within 20% (max/min <= 1.2); the detail gives the
    plaintext spread too, since SQLite's own cost may grow with the table."""
    out = []
    for case in dict.fromkeys(r["case"] for r in records):
        per = [find(records, case=case, system="piiguard", rows=n) for n in sizes]
        per = [p for p in per if p is not None]
        if len(per) < 2:
            continue
        values = [p["per_row_us"] for p in per]
        spread = max(values) / min(values)
        figures = ", ".join(f"{p['rows']:,}: {p['per_row_us']:.2f}" for p in per)
        plain = [find(records, case=case, system="plaintext", rows=n) for n in sizes]
        plain = [p["per_row_us"] for p in plain if p is not None]
        pspread = f"; plaintext max/min {max(plain) / min(plain):.2f}×" if plain else ""
        out.append(target("scaling", f"{case}: piiguard µs/row flat from "
                          f"{sizes[0]:,} to {sizes[-1]:,} rows",
                          expected="max/min <= 1.20", measured=spread, unit="x",
                          met=spread <= 1.20, detail=f"µs/row {figures}{pspread}"))
    return out


def write_reports(report: dict, config: Config) -> dict[str, Path]:
    from benchmarks.report import render_markdown, render_chart, update_readme

    config.results_dir.mkdir(parents=True, exist_ok=True)
    base = config.results_dir / config.output_name()
    paths = {"json": base.with_suffix(".json"), "md": base.with_suffix(".md")}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str)
                             + "\n", encoding="utf-8")
    md = render_markdown(report)
    paths["md"].write_text(md, encoding="utf-8")
    if config.chart and not config.quick:
        png = base.with_suffix(".png")
        if render_chart(report, png):
            paths["png"] = png
    if config.update_readme and not config.quick and README.exists():
        update_readme(README, config.output_name(), md, paths.get("png"))
    report["meta"]["outputs"] = {k: str(v) for k, v in paths.items()}
    return paths


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="piiguard benchmarks: overhead against plaintext "
                                            "and peers (see benchmarks/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny sizes, 1 repeat, writes results/quick.json")
    p.add_argument("--rows", type=int, help=f"rows per table (default {DEFAULT_ROWS:,})")
    p.add_argument("--db", choices=DATABASES, default="sqlite",
                   help="database for the SQL scenarios (default sqlite)")
    p.add_argument("--only", action="append", default=[],
                   help="scenario name or number (repeatable or comma-separated): "
                        + ", ".join(f"{i + 1}={n}" for i, n in enumerate(SCENARIOS)))
    p.add_argument("--repeat", type=int, help=f"repeats per case (default {DEFAULT_REPEAT})")
    p.add_argument("--ops", type=int, help="operations per sample in the per-value "
                                           f"micro-benchmarks (default {DEFAULT_OPS:,})")
    p.add_argument("--scaling", action="store_true",
                   help="scenario 2 on SQLite at 10k, 100k and 1M rows")
    p.add_argument("--scaling-rows", help="comma-separated sizes for --scaling")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", help="output file name (default: latest[-db][-only][-rows])")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    cfg = Config(db=a.db, quick=a.quick, only=resolve_only(a.only), scaling=a.scaling,
                 results_dir=a.results_dir, name=a.name, chart=not a.no_chart,
                 verbose=not a.quiet)
    if a.quick:
        cfg.rows, cfg.repeat, cfg.ops = QUICK_ROWS, 1, QUICK_OPS
        cfg.scaling_rows = QUICK_SCALING_ROWS
    if a.rows is not None:
        if a.rows < 10:
            p.error("--rows must be at least 10")
        cfg.rows = a.rows
    if a.scaling and not a.quick:
        cfg.repeat = 3  # 1M rows per size: three repeats unless --repeat says otherwise
    if a.repeat is not None:
        if a.repeat < 1:
            p.error("--repeat must be at least 1")
        cfg.repeat = a.repeat
    if a.ops is not None:
        cfg.ops = max(10, a.ops)
    if a.scaling_rows:
        cfg.scaling_rows = tuple(int(x) for x in a.scaling_rows.split(","))
    return cfg


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    report = run(config)
    from benchmarks.report import summary_text

    print(summary_text(report))
    failed = [s for s in report["scenarios"] if s["status"] == "error"]
    return 1 if failed else 0
