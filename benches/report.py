"""Turn a results file (JSON lines from run.py) into the markdown table.

    python benches/report.py benches/results/<timestamp>.jsonl [out.md]

Standard library only. Ratios are always "pgqrs's advantage": pgqrs ÷ other for throughput,
other ÷ pgqrs for latencies, times and memory, so > 1× means pgqrs is better.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

OURS = "pgqrs"
# Heading of the ratio column next to a system (default: "pgqrs vs <its title>").
RATIO_TITLES = {"pgqrs-rust": "Python vs Rust API", "ceiling": "pgqrs vs ceiling"}

# (case, backend ("*": every backend), metric, other system or None, target, description).
# With another system the target is a ratio (pgqrs's advantage ≥ target); without, an upper
# bound on pgqrs's own median.
TARGETS: list[tuple[str, str, str, str | None, float, str]] = [
    ("S3 c4 b1", "postgres", "throughput", "pgqrs-0.15.3", 10.0, "S3 (4, 1) ≥ 10× pgqrs 0.15.3"),
    ("S3 c4 b1", "postgres", "throughput", "pgqueuer", 3.0, "S3 (4, 1) ≥ 3× PgQueuer"),
    ("S3 c4 b50", "postgres", "throughput", "pgqueuer", 1.5, "S3 (4, 50) ≥ 1.5× PgQueuer"),
    ("S3 c4 b50", "postgres", "throughput", "ceiling", 0.5, "S3 (4, 50) ≥ 0.5× the ceiling"),
    ("S1", "*", "throughput", "ceiling", 0.7, "S1 ≥ 0.7× the ceiling"),
    ("S2", "*", "throughput", "ceiling", 0.7, "S2 ≥ 0.7× the ceiling"),
    ("S3 c1 b1", "sqlite", "throughput", "ceiling", 0.3, "S3 (1, 1) ≥ 0.3× the ceiling"),
    ("S4", "postgres", "p99", None, 5.0, "S4 p99 ≤ 5 ms"),
    ("S4", "sqlite", "p99", None, 50.0, "S4 p99 ≤ 50 ms"),
    ("S5 seq", "postgres", "step_ms", None, 1.0, "S5 step overhead ≤ 1 ms"),
    ("S5 seq", "sqlite", "step_ms", None, 0.5, "S5 step overhead ≤ 0.5 ms"),
    ("Memory", "*", "rss_growth", None, 10.0, "RSS does not grow while draining (≤ 10 MiB)"),
]


def load(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    env: dict[str, Any] = {}
    end: dict[str, Any] = {}
    recs = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("kind") == "environment":
            env = r
        elif r.get("kind") == "end":
            end = r
        else:
            recs.append(r)
    return env, recs, end


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(r: dict[str, Any] | None, notes: list[str]) -> str:
    if r is None:
        return "—"
    if r.get("unsupported"):
        return f"n/a {note(notes, r['system_title'] + ': ' + r['unsupported'])}"
    if r["median"] is None:
        return f"error {note(notes, r['system_title'] + ': ' + '; '.join(r.get('errors', [])))}"
    s = fmt(r["median"])
    if len(r["runs"]) > 1:
        s += f" ({fmt(r['min'])}–{fmt(r['max'])})"
    if r.get("errors"):
        s += f" {note(notes, r['system_title'] + ' (some runs failed): ' + '; '.join(r['errors']))}"
    return s


def note(notes: list[str], text: str) -> str:
    if text not in notes:
        notes.append(text)
    return f"[{notes.index(text) + 1}]"


def advantage(ours: dict[str, Any] | None, other: dict[str, Any] | None) -> float | None:
    if not ours or not other or not ours.get("median") or not other.get("median"):
        return None
    if ours.get("higher_is_better", True):
        return float(ours["median"]) / float(other["median"])
    return float(other["median"]) / float(ours["median"])


def ratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def ordered(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for i in items:
        if i not in seen:
            seen.append(i)
    return seen


def index(recs: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {(r["case"], r["metric"], r["system"], r["backend"]): r for r in recs}


def tables(recs: list[dict[str, Any]], notes: list[str]) -> list[str]:
    idx = index(recs)
    out: list[str] = []
    for backend in ordered(r["backend"] for r in recs):
        brecs = [r for r in recs if r["backend"] == backend]
        title = brecs[0]["backend_title"]
        systems = ordered([OURS] + [r["system"] for r in brecs])
        titles = {r["system"]: r["system_title"] for r in brecs}
        systems = [s for s in systems if s in titles]
        others = [s for s in systems if s != OURS]
        head = ["case", "metric", titles.get(OURS, OURS)]
        for s in others:
            head += [titles[s], RATIO_TITLES.get(s, f"pgqrs vs {titles[s]}")]
        out += [f"### {title}", "", "| " + " | ".join(head) + " |"]
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
        rows = ordered((r["case"], r["metric"]) for r in brecs)
        for case, metric in rows:
            any_r = next(r for r in brecs if r["case"] == case and r["metric"] == metric)
            ours = idx.get((case, metric, OURS, backend))
            row = [case, f"{any_r['metric_title']} ({any_r['unit']})", cell(ours, notes)]
            for s in others:
                other = idx.get((case, metric, s, backend))
                row += [cell(other, notes), ratio(advantage(ours, other))]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


# Drains on an analyzed table, each with the fresh-table case it repeats (issue 10).
ANALYZED = [
    ("S3 c4 b1 analyzed", "S3 c4 b1"),
    ("S3 c4 b50 analyzed", "S3 c4 b50"),
    ("S3 c4 b50 analyzed-leased", "S3 c4 b50"),
]


def analyzed_rows(recs: list[dict[str, Any]]) -> list[str]:
    """Each analyzed drain against the same drain on a fresh table, same system, same run."""
    idx = index(recs)
    out = [
        "| drain | backend | system | fresh (jobs/s) | analyzed (jobs/s) | analyzed ÷ fresh |",
        "|---|---|---|---:|---:|---:|",
    ]
    for analyzed, fresh in ANALYZED:
        for r in recs:
            if r["case"] != analyzed or r["metric"] != "throughput":
                continue
            base = idx.get((fresh, "throughput", r["system"], r["backend"]))
            share = advantage(r, base)
            out.append(
                f"| {analyzed} | {r['backend_title']} | {r['system_title']} | "
                f"{fmt(base.get('median') if base else None)} | {fmt(r.get('median'))} | "
                f"{ratio(share)} |"
            )
    return out if len(out) > 2 else []


def target_rows(recs: list[dict[str, Any]]) -> list[str]:
    idx = index(recs)
    backends = {r["backend"]: r["backend_title"] for r in recs}
    out = ["| target | backend | measured | met |", "|---|---|---:|:---:|"]
    for case, backend, metric, other, goal, text in TARGETS:
        for b in backends if backend == "*" else [backend]:
            ours = idx.get((case, metric, OURS, b))
            if ours is None or b not in backends:
                continue
            if other is None:
                value = ours.get("median")
                shown = f"{fmt(value)} {ours['unit']}" if value is not None else "—"
                met = value is not None and value <= goal
            else:
                theirs = idx.get((case, metric, other, b))
                if theirs is None and backend == "*":
                    continue  # nothing to compare with on this backend (no ceiling for Turso)
                value = advantage(ours, theirs)
                shown = ratio(value)
                met = value is not None and value >= goal
            mark = "✅" if met else ("❌" if value is not None else "—")
            out.append(f"| {text} | {backends[b]} | {shown} | {mark} |")
    return out


def render(path: Path) -> str:
    env, recs, end = load(path)
    notes: list[str] = []
    runs = env.get("runs", "?")
    lines = [
        "# pgqrs benchmark results",
        "",
        f"Generated by `benches/run.py` ({'quick run' if env.get('quick') else 'full run'}) "
        f"on {env.get('date', '?')}, commit {env.get('commit', '?')}: "
        f"{env.get('cpus', '?')} CPUs ({env.get('machine', '?')}, Linux {env.get('kernel', '?')}), "
        f"{env.get('postgres', '?')} on the same host, {env.get('sqlite', '?')} (sqlx's bundled "
        f"build), Python {env.get('python', '?')}; peers: {env.get('peers', '?')}. "
        f"Load average at start {fmt_load(env.get('load_at_start'))}, "
        f"at end {fmt_load(end.get('load_at_end'))}.",
        "",
    ]
    if env.get("stale_builds"):
        lines += [
            "**Warning:** built before their sources last changed (rerun with `make bench`): "
            + ", ".join(env["stale_builds"])
            + ".",
            "",
        ]
    lines += [
        f"Each cell is the median of {runs} run(s) on a fresh database, with the range "
        "(min–max) when there are several. *pgqrs vs X* is pgqrs's advantage: pgqrs ÷ X for "
        "throughput, X ÷ pgqrs for latency, time and memory — above 1× pgqrs is better. "
        "*pgqrs (Python)* is what users run; *pgqrs (Rust API)* is the same core without "
        "Python (`benches/rust`, so *Python vs Rust API* is what the Python layer keeps). The "
        "ceiling is hand-written SQL for the same operations through the same driver "
        "(`benches/rust`, `pgqrs-ceiling`): *pgqrs vs ceiling* is the share of what the "
        "database allows that pgqrs delivers. Above 1× against the ceiling means pgqrs "
        "does fewer round trips than one statement per job (claim-ahead, batched "
        "completions).",
        "",
    ]
    lines += tables(recs, notes)
    lines += ["### Targets (issue 6)", "", *target_rows(recs), ""]
    analyzed = analyzed_rows(recs)
    if analyzed:
        lines += [
            "### Analyzed tables (issue 10)",
            "",
            "The drains again after `ANALYZE` (the planner statistics autovacuum keeps on a "
            "live queue), against the same drain on a fresh table in the same run: within "
            "noise of 1× when no plan depends on those statistics.",
            "",
            *analyzed,
            "",
        ]
    if notes:
        lines += ["Notes:", "", *(f"{i + 1}. {n}" for i, n in enumerate(notes)), ""]
    return "\n".join(lines)


def fmt_load(load: Any) -> str:
    if not load:
        return "?"
    return " / ".join(f"{x:.2f}" for x in load)


def write(results: Path, out: Path) -> None:
    out.write_text(render(results))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = Path(sys.argv[1])
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    text = render(src)
    if dst:
        dst.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
