#!/usr/bin/env python3
"""Summarize bench/overlay.sh results: medians per system, and cos-mesh's ratios to every other
system paired round by round (the ratio of each round, then the median of those ratios), as a
Markdown table on stdout and an SVG bar chart of the ratios.

Usage: summarize.py results.txt [ratios.svg]
"""

import statistics
import sys

METRICS = [
    # key, heading, better when higher?
    ("tcp1_mbps", "TCP 1 stream (Mbit/s)", True),
    ("tcp4_mbps", "TCP 4 streams (Mbit/s)", True),
    ("mbit_per_cpu_s", "Mbit per daemon CPU-s", True),
    ("rtt_ms", "RTT (ms)", False),
    ("retr", "TCP retransmits per test", False),
    ("rss_mb", "RSS of both daemons (MB)", False),
    ("idle_rss_mb", "idle RSS (MB)", False),
]
CHART = ["tcp1_mbps", "tcp4_mbps", "mbit_per_cpu_s"]


def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load(path):
    """(round, system) -> metrics, and the comment lines."""
    rows, notes = {}, []
    for line in open(path):
        line = line.strip()
        if line.startswith("#"):
            notes.append(line[1:].strip())
            continue
        if not line:
            continue
        kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if kv.get("status") != "ok":
            continue
        m = {k: number(kv.get(k)) for k in ("tcp1_mbps", "tcp4_mbps", "rtt_ms", "cpu_s", "duration")}
        r1, r4 = number(kv.get("tcp1_retr")), number(kv.get("tcp4_retr"))
        m["retr"] = None if r1 is None or r4 is None else (r1 + r4) / 2
        rss, idle = number(kv.get("rss_kb")), number(kv.get("idle_rss_kb"))
        m["rss_mb"] = rss / 1024 if rss else None
        m["idle_rss_mb"] = idle / 1024 if idle else None
        moved = None
        if m["tcp1_mbps"] is not None and m["tcp4_mbps"] is not None and m["duration"]:
            moved = (m["tcp1_mbps"] + m["tcp4_mbps"]) * m["duration"]
        m["mbit_per_cpu_s"] = moved / m["cpu_s"] if moved and m["cpu_s"] else None
        rows[(kv["run"], kv["system"])] = m
    return rows, notes


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0 and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{max(digits, 2) if abs(v) < 10 else 1}f}"


def main():
    rows, notes = load(sys.argv[1])
    svg = sys.argv[2] if len(sys.argv) > 2 else None
    systems = []
    for (_, s) in rows:
        if s not in systems:
            systems.append(s)
    runs = sorted({r for (r, _) in rows}, key=int)
    for n in notes:
        print(f"<!-- {n} -->")
    head = "| system | " + " | ".join(h for _, h, _ in METRICS) + " |"
    print(head)
    print("|" + "---|" * (len(METRICS) + 1))
    ratios = {}
    for s in systems:
        cells = []
        for key, _, higher in METRICS:
            med = median(rows.get((r, s), {}).get(key) for r in runs)
            cell = fmt(med)
            if s not in ("cos-mesh", "raw") and ("cos-mesh" in systems):
                # cos-mesh / other, paired by round; for lower-is-better metrics other / cos-mesh,
                # so above 1 always means cos-mesh is better.
                per_round = []
                for r in runs:
                    a, b = rows.get((r, "cos-mesh"), {}).get(key), rows.get((r, s), {}).get(key)
                    if a is None or b is None:
                        continue
                    if higher and b > 0:
                        per_round.append(a / b)
                    elif not higher and a > 0:
                        per_round.append(b / a)
                    elif not higher and b > 0:
                        per_round.append(float("inf"))  # cos-mesh had none, the other some
                ratio = median(per_round)
                ratios[(s, key)] = ratio
                if ratio is not None:
                    shown = "∞" if ratio == float("inf") else f"{ratio:.2f}" if ratio < 100 else ">100"
                    cell += f" (cos-mesh {shown}×)"
            cells.append(cell)
        print(f"| {s} | " + " | ".join(cells) + " |")
    print()
    print(f"Medians of {len(runs)} rounds; (cos-mesh N×) is the median of per-round ratios, above 1 = cos-mesh better.")
    if svg:
        write_svg(svg, systems, ratios)


def write_svg(path, systems, ratios):
    others = [s for s in systems if s not in ("cos-mesh", "raw")]
    labels = {"tcp1_mbps": "TCP 1 stream", "tcp4_mbps": "TCP 4 streams", "mbit_per_cpu_s": "Mbit per CPU-s"}
    colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"]
    values = [v for v in (ratios.get((s, k)) for s in others for k in CHART) if v and v != float("inf")]
    top = max(values + [1.0]) * 1.15
    width, height, left, bottom, top_pad = 760, 380, 60, 60, 40
    plot_h = height - bottom - top_pad
    group_w = (width - left - 20) / max(len(others), 1)
    bar_w = group_w / (len(CHART) + 1)
    y = lambda v: top_pad + plot_h * (1 - v / top)  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">cos-mesh relative to each system (median of paired rounds; 1× = equal)</text>',
        f'<line x1="{left}" y1="{y(0)}" x2="{width - 10}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{left}" y1="{y(1)}" x2="{width - 10}" y2="{y(1)}" stroke="#999" stroke-dasharray="4 3"/>',
        f'<text x="{left - 5}" y="{y(1) + 4}" text-anchor="end">1×</text>',
    ]
    for gi, s in enumerate(others):
        x0 = left + gi * group_w + bar_w / 2
        for ki, k in enumerate(CHART):
            v = ratios.get((s, k))
            if v is None:
                continue
            x = x0 + ki * bar_w
            out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar_w * 0.9:.1f}" height="{y(0) - y(v):.1f}" fill="{colours[ki]}"/>')
            out.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{y(v) - 4:.1f}" text-anchor="middle">{v:.1f}×</text>')
        out.append(f'<text x="{x0 + len(CHART) * bar_w / 2:.1f}" y="{height - bottom + 20}" text-anchor="middle">vs {s}</text>')
    for ki, k in enumerate(CHART):
        lx = left + ki * 170
        out.append(f'<rect x="{lx}" y="{height - 22}" width="12" height="12" fill="{colours[ki]}"/>')
        out.append(f'<text x="{lx + 16}" y="{height - 12}">{labels[k]}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
