"""Turns a benchmark report (the dict written to ``results/*.json``) into Markdown, a
bar chart of the ratios, and the results section of ``benchmarks/README.md``."""

from __future__ import annotations

import re
from pathlib import Path

FIGURE_FORMAT = "{:.3g}"


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}{unit}"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    if abs(x) >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def target_status(t: dict) -> str:
    if t["met"] is None:
        return "not measured"
    measured = _fmt(t["measured"], t["unit"] if t["unit"] != "x" else "×")
    return f"met ({measured})" if t["met"] else f"**missed** (measured {measured})"


def header_lines(report: dict) -> list[str]:
    m = report["meta"]
    c = m["config"]
    libs = m.get("libraries", {})
    servers = m.get("servers") or {}
    srv = "".join(f", {k} {v}" for k, v in servers.items())
    lines = [
        f"Run {m['date']} on {m['cpu']} ({m['cpu_count']} cores), Python {m['python']}, "
        f"SQLite {m['sqlite']}{srv}; git {m.get('git_commit') or '?'}.",
        f"Database `{c['db']}`, {c['rows']:,} rows, {c['repeat']} repeats per case "
        f"(median, min–max), {c['ops']:,} operations per per-value sample"
        + (" — **quick smoke run, figures are not meaningful**" if c["quick"] else "") + ".",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v) + ".",
    ]
    return lines


def render_markdown(report: dict, *, level: int = 2) -> str:
    h = "#" * level
    out = header_lines(report)
    out.append("")
    if report["targets"]:
        out += [f"{h} Targets", "", "| Scenario | Target | Expected | Status | Detail |",
                "|---|---|---|---|---|"]
        for t in report["targets"]:
            out.append(f"| {t['scenario']} | {t['name']} | {t['expected']} | "
                       f"{target_status(t)} | {t.get('detail') or ''} |")
        out.append("")
    out += [f"{h} Scenarios", "", "| Scenario | Status | Wall time |", "|---|---|---|"]
    for s in report["scenarios"]:
        status = s["status"] if s["status"] == "ok" else f"{s['status']}: {s['reason']}"
        out.append(f"| {s['name']} — {s['title']} | {status} | {s.get('wall_seconds', 0):.1f} s |")
    out.append("")
    for s in report["scenarios"]:
        recs = [r for r in report["results"] if r["scenario"] == s["name"]]
        if not recs:
            continue
        out += [f"{h}# {s['name']} — {s['title']}", ""]
        times = [r for r in recs if r["kind"] == "time"]
        metrics = [r for r in recs if r["kind"] == "metric"]
        if times:
            bases = list(dict.fromkeys(b for r in times for b in r["ratios"]))
            cols = ["Case", "System"] + (["DB"] if any(r["db"] for r in times) else []) + [
                "Ops", "Median µs/op", "Min–max µs/op", "Ops/s"] + [f"× {b}" for b in bases]
            out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in times:
                row = [r["case"], r["system"]] + ([r["db"] or ""] if "DB" in cols else []) + [
                    f"{r['rows']:,}", _fmt(r["per_row_us"]),
                    f"{_fmt(r['per_row_us_min'])}–{_fmt(r['per_row_us_max'])}",
                    _fmt(r["rows_per_second"])] + [_ratio(r["ratios"].get(b)) for b in bases]
                out.append("| " + " | ".join(row) + " |")
            out.append("")
        if metrics:
            bases = list(dict.fromkeys(b for r in metrics for b in r["ratios"]))
            cols = ["Case", "System", "Value", "Unit"] + [f"× {b}" for b in bases] + ["Note"]
            out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in metrics:
                row = [r["case"], r["system"], _fmt(r["value"]), r["unit"]] + [
                    _ratio(r["ratios"].get(b)) for b in bases] + [r.get("note") or ""]
                out.append("| " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def summary_text(report: dict) -> str:
    lines = []
    for s in report["scenarios"]:
        extra = "" if s["status"] == "ok" else f": {s['reason']}"
        lines.append(f"{s['name']:<14} {s['status']}{extra} ({s.get('wall_seconds', 0):.1f} s)")
    for t in report["targets"]:
        lines.append(f"  [{'met' if t['met'] else 'MISSED' if t['met'] is False else '?'}] "
                     f"{t['scenario']}: {t['name']} — expected {t['expected']}, "
                     f"measured {_fmt(t['measured'])}{t['unit'] if t['unit'] != 'x' else '×'}")
    outs = report["meta"].get("outputs", {})
    if outs:
        lines.append("written: " + ", ".join(outs.values()))
    return "\n".join(lines)


#: Systems drawn in grey (everything else is a piiguard variant, drawn in blue).
_PEERS = ("plaintext", "aesgcm", "fernet", "sqlalchemy-utils", "aws-encryption-sdk",
          "stdnum", "phonenumbers")


def _charted(r: dict) -> bool:
    """Keep the chart readable: the headline case of scenarios with many."""
    if r["scenario"] == "field_crypto":
        return r["case"] == "encrypt+decrypt"
    if r["scenario"] == "storage":
        return r["case"].endswith("stored bytes")
    return True


def render_chart(report: dict, path: Path) -> bool:
    """Horizontal bars of the ratios to a baseline, one panel per scenario (log scale).
    Returns False when there is nothing to draw or matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    for s in report["scenarios"]:
        bars = []
        for r in report["results"]:
            if r["scenario"] != s["name"] or not r["ratios"]:
                continue
            if not _charted(r):
                continue
            base = next(iter(r["ratios"]))
            if r["system"] == base or not r["ratios"][base] > 0:
                continue
            label = f"{r['case']} · {r['system']}" + (f" · {r['db']}" if r["db"] and
                                                       r["db"] != "sqlite" else "")
            if s["name"] == "scaling":
                label += f" · {r['rows']:,}"
            bars.append((label, r["ratios"][base], base))
        if bars:
            panels.append((s, bars))
    if not panels:
        return False
    heights = [max(1.2, 0.28 * len(b) + 0.8) for _, b in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (s, bars) in zip(axes[:, 0], panels, strict=True):
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colors = ["#999999" if any(p in lbl for p in _PEERS) else "#2b7bba"
                  for lbl in labels]
        ax.barh(range(len(bars)), values, color=colors)
        ax.set_yticks(range(len(bars)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.2f}×", va="center", fontsize=7)
        bases = sorted({b[2] for b in bars})
        ax.set_title(f"{s['name']}: ratio to {', '.join(bases)} (lower is better)",
                     fontsize=9, loc="left")
    m = report["meta"]
    fig.suptitle(f"piiguard benchmarks — {m['date'][:10]}, {m['cpu']}, "
                 f"{m['config']['rows']:,} rows, db {m['config']['db']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / sum(heights)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_readme(readme: Path, name: str, markdown: str, png: Path | None) -> bool:
    """Replace the block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``
    in the README with the new table (and chart); no markers, no change."""
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    if start not in text or end not in text:
        return False
    body = markdown.replace("\n## ", "\n#### ").replace("\n### ", "\n##### ")
    if png is not None:
        body = f"![ratios]({png.relative_to(readme.parent).as_posix()})\n\n" + body
    new = re.sub(re.escape(start) + r".*?" + re.escape(end),
                 lambda _m: f"{start}\n{body}\n{end}", text, flags=re.S)
    readme.write_text(new, encoding="utf-8")
    return True
