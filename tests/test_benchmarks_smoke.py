"""Smoke test of the benchmark harness: a quick run in-process, and the report's shape.

Timings are never asserted against targets here (performance targets live in the
benchmarks); this checks that every scenario runs or says why it is skipped, that the
figures are positive and consistent, and that ratios are computed from the measured
numbers.
"""

from __future__ import annotations

import doctest
import json
import math

import pytest

from benchmarks import data, harness
from benchmarks.harness import Config, compute_ratios, timing

pytestmark = pytest.mark.slow

TIME_KEYS = {"scenario", "case", "system", "db", "kind", "rows", "repeats", "samples",
             "seconds", "seconds_min", "seconds_max", "per_row_us", "per_row_us_min",
             "per_row_us_max", "rows_per_second", "ratios", "ratio_to_plaintext",
             "ratio_to_floor"}
METRIC_KEYS = {"scenario", "case", "system", "kind", "value", "unit", "ratios"}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = harness.parse_args(["--quick", "--results-dir", str(out), "--quiet"])
    report = harness.run(cfg)
    return report, out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_quick_run_writes_json_and_markdown_not_latest(quick_report):
    report, out = quick_report
    assert (out / "quick.json").exists() and (out / "quick.md").exists()
    assert not (out / "latest.json").exists()
    assert not (out / "quick.png").exists()  # no chart in a smoke run
    on_disk = json.loads((out / "quick.json").read_text(encoding="utf-8"))
    assert set(on_disk) == {"meta", "scenarios", "results", "targets"}
    assert on_disk["meta"]["config"]["quick"] is True
    assert on_disk["meta"]["config"]["repeat"] == 1
    assert len(on_disk["results"]) == len(report["results"])


def test_every_scenario_ran_or_says_why_not(quick_report):
    report, out = quick_report
    names = [s["name"] for s in report["scenarios"]]
    assert names == list(harness.SCENARIOS)
    md = (out / "quick.md").read_text(encoding="utf-8")
    for s in report["scenarios"]:
        assert s["status"] in ("ok", "skipped"), (s["name"], s.get("reason"),
                                                  s.get("traceback"))
        if s["status"] == "skipped":
            assert s["reason"] and f"skipped: {s['reason']}" in md
        else:
            assert any(r["scenario"] == s["name"] for r in report["results"]), s["name"]
        assert s["name"] in md


def test_meta_names_machine_and_libraries(quick_report):
    meta = quick_report[0]["meta"]
    for key in ("date", "cpu", "cpu_count", "python", "sqlite", "libraries"):
        assert meta[key], key
    assert meta["libraries"]["cryptography"] and meta["libraries"]["SQLAlchemy"]


def test_timed_records_are_positive_and_consistent(quick_report):
    report, _ = quick_report
    times = [r for r in report["results"] if r["kind"] == "time"]
    assert times, "no timed records at all"
    for r in times:
        assert TIME_KEYS <= set(r), set(TIME_KEYS) - set(r)
        assert r["rows"] > 0 and r["repeats"] == len(r["samples"]) >= 1
        assert all(s > 0 for s in r["samples"])
        assert r["seconds_min"] <= r["seconds"] <= r["seconds_max"]
        assert _close(r["per_row_us"], r["seconds"] / r["rows"] * 1e6)
        assert _close(r["rows_per_second"], r["rows"] / r["seconds"])
    for r in report["results"]:
        if r["kind"] == "metric":
            assert METRIC_KEYS <= set(r)
            assert isinstance(r["value"], (int, float)) and r["value"] >= 0


def test_ratios_are_computed_from_the_measured_medians(quick_report):
    report, _ = quick_report
    checked = 0
    for r in report["results"]:
        for base, ratio in r["ratios"].items():
            b = next(x for x in report["results"]
                     if (x["scenario"], x["case"], x["db"], x.get("scale"), x["system"])
                     == (r["scenario"], r["case"], r["db"], r.get("scale"), base))
            mine = r["per_row_us"] if r["kind"] == "time" else r["value"]
            theirs = b["per_row_us"] if b["kind"] == "time" else b["value"]
            assert ratio >= 0
            assert _close(ratio, mine / theirs)
            checked += 1
        if r["ratio_to_plaintext"] is not None:
            assert r["ratio_to_plaintext"] == r["ratios"]["plaintext"]
    assert checked > 0
    floor = [r for r in report["results"] if r["scenario"] == "field_crypto"
             and r["system"] == "aesgcm"]
    assert floor and all(r["ratio_to_floor"] == 1.0 for r in floor)


def test_targets_come_from_the_records(quick_report):
    report, _ = quick_report
    assert report["targets"], "no acceptance checks computed"
    for t in report["targets"]:
        assert set(t) >= {"scenario", "name", "expected", "measured", "unit", "met"}
        assert t["met"] in (True, False, None)
        assert isinstance(t["measured"], (int, float)) and t["measured"] >= 0
    fc = [t for t in report["targets"] if t["scenario"] == "field_crypto"
          and "AESGCM" in t["name"]]
    assert len(fc) == 1
    pg = next(r for r in report["results"] if r["scenario"] == "field_crypto"
              and r["case"] == "encrypt+decrypt" and r["system"] == "piiguard")
    assert _close(fc[0]["measured"], pg["ratio_to_floor"])
    assert fc[0]["met"] == (pg["ratio_to_floor"] <= 1.5)


def test_a_crashing_scenario_makes_the_run_fail(tmp_path, monkeypatch):
    from benchmarks.scenarios import storage

    def boom(ctx):
        raise RuntimeError("scenario exploded")

    monkeypatch.setattr(storage, "run", boom)
    code = harness.main(["--quick", "--only", "storage", "--results-dir", str(tmp_path),
                         "--quiet"])
    assert code == 1
    report = json.loads((tmp_path / "quick.json").read_text(encoding="utf-8"))
    assert report["scenarios"][0]["status"] == "error"
    assert "scenario exploded" in report["scenarios"][0]["reason"]


def test_a_missing_dependency_is_reported_as_skipped(tmp_path, monkeypatch):
    from benchmarks.scenarios import storage

    monkeypatch.setattr(storage, "available", lambda: "dependency not here yet")
    code = harness.main(["--quick", "--only", "5", "--results-dir", str(tmp_path),
                         "--quiet"])
    assert code == 0
    md = (tmp_path / "quick.md").read_text(encoding="utf-8")
    assert "skipped: dependency not here yet" in md


def test_output_names_never_overwrite_latest():
    assert Config().output_name() == "latest"
    assert Config(quick=True).output_name() == "quick"
    assert Config(db="postgresql").output_name() == "latest-postgresql"
    assert Config(only=("sql_ops",), rows=1000).output_name() == "latest-sql_ops-1000rows"
    assert Config(scaling=True).output_name() == "scaling"


def test_compute_ratios_groups_by_case_db_and_scale():
    recs = [timing("s", "op", "plaintext", rows=10, samples=[1.0, 3.0, 2.0], db="sqlite"),
            timing("s", "op", "piiguard", rows=10, samples=[3.0], db="sqlite"),
            timing("s", "op", "piiguard", rows=10, samples=[8.0], db="postgresql")]
    compute_ratios(recs, ("plaintext",))
    assert recs[0]["seconds"] == 2.0 and recs[0]["ratio_to_plaintext"] == 1.0
    assert recs[1]["ratio_to_plaintext"] == 1.5
    assert recs[2]["ratio_to_plaintext"] is None  # no plaintext on that database


def test_synthetic_data_doctests_and_validity():
    assert doctest.testmod(data).failed == 0
    from piiguard.validators import address, phone, tckn

    typed_rows = data.make_rows(300, seed=2)                 # the default input set
    for row, typed in zip(data.make_rows(300, seed=2, input="canonical"), typed_rows,
                          strict=True):
        assert tckn.validate(row["national_id"]) == row["national_id"]
        assert phone.validate(row["phone"]) == row["phone"]
        assert address.validate(row["address"]) == row["address"]
        # the typed set: the same people as people type them
        assert typed["national_id"] != row["national_id"]
        assert tckn.validate(typed["national_id"]) == row["national_id"]
        assert phone.validate(typed["phone"]) == row["phone"]
        assert address.validate(typed["address"]) == row["address"]
        assert address.as_written(typed["address"]) == typed["address"] != row["address"]
    assert len({r["phone"][:4] for r in typed_rows}) > 1             # several spellings
