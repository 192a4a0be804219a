"""SVG charts of a results file, hand-written (standard library only, no plotting package).

    python benches/charts.py benches/results/<timestamp>.jsonl [out_dir]   # default docs/bench

Writes throughput-<backend>.svg (S1–S3 per system, log scale, bars at the median with the
min–max range), latency-s4.svg, workflow-step.svg, workflow-runs.svg and memory.svg (RSS of
the draining worker against the number of jobs drained).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

import report

COLORS = {
    "pgqrs": "#2563eb",
    "pgqrs-rust": "#93c5fd",
    "ceiling": "#9ca3af",
    "pgqrs-0.15.3": "#f59e0b",
    "pgqueuer": "#10b981",
    "p50": "#93c5fd",
    "p95": "#3b82f6",
    "p99": "#1e3a8a",
}
PALETTE = ["#ef4444", "#8b5cf6", "#14b8a6", "#f97316", "#64748b"]
FONT = "font-family='system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'"


class Bar(NamedTuple):
    series: str  # legend key (colour)
    label: str  # legend text
    median: float | None
    lo: float | None
    hi: float | None
    missing: str = ""  # shown instead of a bar (e.g. "n/a")


def color(key: str, order: list[str]) -> str:
    if key in COLORS:
        return COLORS[key]
    if key not in order:
        order.append(key)
    return PALETTE[order.index(key) % len(PALETTE)]


def fmt(v: float) -> str:
    return report.fmt(v)


def hbar(
    title: str, subtitle: str, groups: Sequence[tuple[str, Sequence[Bar]]], unit: str, log: bool
) -> str:
    """Horizontal grouped bars; one group per row label, one bar per series."""
    extra: list[str] = []
    legend = {b.series: b.label for _, bars in groups for b in bars}
    longest = max((len(name) for name, _ in groups), default=10)
    left = max(150, 8 * longest + 24)
    width, right, top = 650 + left, 120, 78
    bar_h, bar_gap, group_gap = 15, 3, 16
    plot_w = width - left - right
    values = [v for _, bars in groups for b in bars for v in (b.lo, b.median, b.hi) if v]
    if not values:
        return ""
    if log:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        if hi / lo < 100:
            lo = hi / 100

        def x(v: float) -> float:
            return left + (math.log10(max(v, lo)) - math.log10(lo)) / math.log10(hi / lo) * plot_w

        ticks = [lo * 10**i for i in range(round(math.log10(hi / lo)) + 1)]
    else:
        lo, hi = 0.0, nice_ceiling(max(values))

        def x(v: float) -> float:
            return left + v / hi * plot_w

        ticks = [hi * i / 5 for i in range(6)]
    height = top + sum(len(b) * (bar_h + bar_gap) + group_gap for _, b in groups) + 36
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='16' y='24' font-size='16' font-weight='600'>{escape(title)}</text>",
        f"<text x='16' y='42' fill='#555'>{escape(subtitle)}</text>",
    ]
    lx = left
    for key, label in legend.items():
        out.append(
            f"<rect x='{lx}' y='52' width='12' height='12' fill='{color(key, extra)}'/>"
            f"<text x='{lx + 16}' y='62'>{escape(label)}</text>"
        )
        lx += 28 + 7 * len(label)
    bottom = height - 30
    for t in ticks:
        tx = x(t)
        out.append(
            f"<line x1='{tx:.1f}' y1='{top - 6}' x2='{tx:.1f}' y2='{bottom}' stroke='#e5e7eb'/>"
            f"<text x='{tx:.1f}' y='{bottom + 14}' text-anchor='middle' fill='#555'>"
            f"{escape(tick(t))}</text>"
        )
    out.append(
        f"<text x='{left + plot_w / 2:.0f}' y='{bottom + 28}' text-anchor='middle' "
        f"fill='#555'>{escape(unit)}{' (log scale)' if log else ''}</text>"
    )
    y = top
    for name, bars in groups:
        gh = len(bars) * (bar_h + bar_gap)
        out.append(
            f"<text x='{left - 8}' y='{y + gh / 2 + 4:.1f}' text-anchor='end' "
            f"font-weight='600'>{escape(name)}</text>"
        )
        for b in bars:
            if b.median is None:
                out.append(
                    f"<text x='{left + 4}' y='{y + bar_h - 3}' fill='#777'>"
                    f"{escape(b.label)}: {escape(b.missing or 'n/a')}</text>"
                )
            else:
                bx = x(b.median)
                out.append(
                    f"<rect x='{left}' y='{y}' width='{max(bx - left, 1):.1f}' height='{bar_h}' "
                    f"fill='{color(b.series, extra)}'><title>{escape(b.label)}: "
                    f"{escape(fmt(b.median))} {escape(unit)}</title></rect>"
                )
                end = bx
                if b.lo is not None and b.hi is not None and b.hi > b.lo:
                    x0, x1, cy = x(b.lo), x(b.hi), y + bar_h / 2
                    end = max(end, x1)
                    out.append(
                        f"<path d='M{x0:.1f},{cy:.1f}H{x1:.1f}M{x0:.1f},{cy - 4:.1f}v8"
                        f"M{x1:.1f},{cy - 4:.1f}v8' stroke='#111' stroke-width='1'/>"
                    )
                out.append(
                    f"<text x='{end + 5:.1f}' y='{y + bar_h - 3}'>{escape(fmt(b.median))}</text>"
                )
            y += bar_h + bar_gap
        y += group_gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def tick(v: float) -> str:
    if v >= 1 and float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:g}"


def nice_ceiling(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def lines_chart(
    title: str, subtitle: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]]
) -> str:
    """RSS (MiB) against jobs drained, one line per series; y starts at 0."""
    extra: list[str] = []
    width, height, left, right, top, bottom = 820, 360, 70, 30, 70, 300
    xs = [p[0] for _, pts in series for p in pts]
    ys = [p[1] for _, pts in series for p in pts]
    if not xs:
        return ""
    xmax, ymax = nice_ceiling(max(xs)), nice_ceiling(max(ys) * 1.15)

    def px(v: float) -> float:
        return left + v / xmax * (width - left - right)

    def py(v: float) -> float:
        return bottom - v / ymax * (bottom - top)

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='16' y='24' font-size='16' font-weight='600'>{escape(title)}</text>",
        f"<text x='16' y='42' fill='#555'>{escape(subtitle)}</text>",
    ]
    for i in range(6):
        yv, xv = ymax * i / 5, xmax * i / 5
        out.append(
            f"<line x1='{left}' y1='{py(yv):.1f}' x2='{width - right}' y2='{py(yv):.1f}' "
            f"stroke='#e5e7eb'/><text x='{left - 6}' y='{py(yv) + 4:.1f}' text-anchor='end' "
            f"fill='#555'>{escape(tick(yv))}</text>"
            f"<text x='{px(xv):.1f}' y='{bottom + 16}' text-anchor='middle' fill='#555'>"
            f"{escape(tick(xv))}</text>"
        )
    out.append(
        f"<text x='{(left + width - right) / 2:.0f}' y='{bottom + 34}' text-anchor='middle' "
        f"fill='#555'>jobs drained</text><text x='16' y='{(top + bottom) / 2:.0f}' "
        f"fill='#555' transform='rotate(-90 16 {(top + bottom) / 2:.0f})' "
        f"text-anchor='middle'>RSS (MiB)</text>"
    )
    lx = left
    for i, (name, pts) in enumerate(series):
        c = PALETTE[i % len(PALETTE)] if i else COLORS["pgqrs"]
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{px(a):.1f},{py(b):.1f}" for j, (a, b) in enumerate(pts)
        )
        out.append(f"<path d='{path}' fill='none' stroke='{c}' stroke-width='2'/>")
        out.append(
            f"<rect x='{lx}' y='52' width='12' height='12' fill='{c}'/>"
            f"<text x='{lx + 16}' y='62'>{escape(name)}</text>"
        )
        lx += 40 + 7 * len(name)
    del extra
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bars_for(
    recs: list[dict[str, Any]], case: str, metric: str, backend: str, systems: list[str]
) -> list[Bar]:
    idx = report.index(recs)
    bars = []
    for s in systems:
        r = idx.get((case, metric, s, backend))
        if r is None:
            continue
        missing = "n/a" if r.get("unsupported") else ("error" if r["median"] is None else "")
        bars.append(Bar(s, r["system_title"], r["median"], r["min"], r["max"], missing))
    return bars


def write(results: Path, out_dir: Path) -> list[Path]:
    env, recs, _ = report.load(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = env.get("runs", "?")
    sub = (
        f"median of {runs} run(s), range min–max; "
        f"{env.get('cpus', '?')} CPUs, database on the same host"
    )
    written: list[Path] = []

    def save(name: str, svg: str) -> None:
        if svg:
            path = out_dir / name
            path.write_text(svg)
            written.append(path)

    backends = report.ordered(r["backend"] for r in recs)
    titles = {r["backend"]: r["backend_title"] for r in recs}
    systems = report.ordered([report.OURS] + [r["system"] for r in recs])
    for b in backends:
        cases = report.ordered(
            r["case"] for r in recs if r["backend"] == b and r["metric"] == "throughput"
        )
        groups = [(c, bars_for(recs, c, "throughput", b, systems)) for c in cases]
        groups = [(c, g) for c, g in groups if g]
        save(
            f"throughput-{b}.svg",
            hbar(f"Throughput on {titles[b]} (higher is better)", sub, groups, "jobs/s", True),
        )
    groups = []
    for b in backends:
        for s in systems:
            bars = []
            for m in ("p50", "p95", "p99"):
                r = report.index(recs).get(("S4", m, s, b))
                if r is not None and r["median"] is not None:
                    bars.append(Bar(m, m, r["median"], r["min"], r["max"]))
            if bars:
                title = next(r["system_title"] for r in recs if r["system"] == s)
                groups.append((f"{title} · {titles[b]}", bars))
    save(
        "latency-s4.svg",
        hbar(
            "S4: enqueue → handler start at 200 jobs/s (lower is better)", sub, groups, "ms", True
        ),
    )
    for metric, name, unit, title in (
        ("step_ms", "workflow-step.svg", "ms", "S5: overhead of one no-op step (lower is better)"),
        (
            "runs_per_s",
            "workflow-runs.svg",
            "runs/s",
            "S5: 3-step runs per second (higher is better)",
        ),
    ):
        groups = []
        for b in backends:
            for case, label in (("S5 seq", "one at a time"), ("S5 c16", "16 at a time")):
                bars = bars_for(recs, case, metric, b, systems)
                if bars:
                    groups.append((f"{titles[b]}, {label}", bars))
        save(name, hbar(title, sub, groups, unit, True))
    series = []
    for b in backends:
        r = report.index(recs).get(("Memory", "peak_rss", report.OURS, b))
        if not r or not r.get("extra"):
            continue
        runs_extra = sorted(r["extra"], key=lambda e: e.get("rss_at_100pct", 0))
        median_run = runs_extra[len(runs_extra) // 2]
        pts = [(float(d), float(m)) for _, d, m in median_run.get("samples", [])]
        if pts:
            series.append((f"pgqrs · {titles[b]}", pts))
    count = next((r["params"].get("count") for r in recs if r["case"] == "Memory"), "?")
    save(
        "memory.svg",
        lines_chart(
            f"RSS of a worker draining {fmt(float(count)) if count != '?' else '?'} jobs",
            "sampled every 0.1 s in the worker's process (median run); flat = no growth",
            series,
        ),
    )
    return written


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = (
        Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent.parent / "docs" / "bench"
    )
    for p in write(Path(sys.argv[1]), out):
        print(p)


if __name__ == "__main__":
    main()
