#!/usr/bin/env python3
"""The Markdown tables of a bench/attack.sh results file: `attack_table.py results.txt`."""
import sys


def rows(path):
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        yield dict(kv.split("=", 1) for kv in line.split())


def main(path):
    runs = list(rows(path))
    systems = list(dict.fromkeys(r["system"] for r in runs))
    floods = list(dict.fromkeys(r["flood"] for r in runs if "flood" in r and not r["flood"].startswith("none")))
    by = {(r["system"], r.get("flood")): r for r in runs}

    print("Throughput kept under each flood (iperf3, 1 TCP stream, A -> B; % of the no-flood figure):\n")
    print("| flood | " + " | ".join(systems) + " |")
    print("|---|" + "---|" * len(systems))
    cells = [by.get((s, "none"), {}).get("mbps", by.get((s, None), {}).get("status", "–")) for s in systems]
    print("| none (Mbit/s) | " + " | ".join(cells) + " |")
    for f in floods:
        out = []
        for s in systems:
            r = by.get((s, f))
            if not r or "kept_pct" not in r:
                out.append("–")
            else:
                rate = int(r.get("flood_rate") or 0)
                out.append(f"{r['kept_pct']}% ({r['mbps']} Mbit/s, flood {rate / 1000:.0f}k/s)")
        print(f"| {f} | " + " | ".join(out) + " |")
    cells = [by.get((s, "none-after"), {}).get("mbps", "–") for s in systems]
    print("| none, after the floods (Mbit/s) | " + " | ".join(cells) + " |")

    print("\nB's daemon and kernel during each flood (CPU in % of one core; UDP counters of B's namespace):\n")
    print("| system | flood | CPU | RSS before → after (KiB) | UDP in | rcvbuf drops | UDP out | tunnel up | cos-mesh counters that moved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in systems:
        for f in floods:
            r = by.get((s, f))
            if not r or "kept_pct" not in r:
                continue
            counters = r.get("counters", "-").replace(",", ", ")
            print(
                f"| {s} | {f} | {r['cpu_b_pct']}% | {r['rss_before_kb']} → {r['rss_after_kb']} | {r['udp_in']} "
                f"| {r['rcvbuf_errors']} | {r['udp_out']} | {r['alive']} | {counters} |"
            )
    print("\nRSS of B's daemon at the start and after all floods (KiB):\n")
    print("| system | start | after | change |")
    print("|---|---|---|---|")
    for s in systems:
        r = by.get((s, "none-after"))
        if r and int(r.get("rss_start_kb") or 0) > 0:
            a, b = int(r["rss_start_kb"]), int(r["rss_kb"])
            print(f"| {s} | {a} | {b} | {100 * (b - a) / a:+.1f}% |")

    restarts = [r for r in runs if "restart_flood" in r]
    if restarts:
        kinds = list(dict.fromkeys(r["restart_flood"] for r in restarts))
        # Every sample of a (system, flood) pair, in the order they ran (RESTART_FLOODS may repeat).
        at = {}
        for r in restarts:
            at.setdefault((r["system"], r["restart_flood"]), []).append(r)
        print("\nA's daemon restarted: seconds from its start to the first ping through the overlay to B")
        print("(one ping every 50 ms), with B unflooded and under a flood:\n")
        print("| B | " + " | ".join(systems) + " |")
        print("|---|" + "---|" * len(systems))
        for k in kinds:
            cells = []
            for s in systems:
                samples = [r["restart_s"] for r in at.get((s, k), []) if "restart_s" in r]
                cells.append(" / ".join(f"{v} s" if v[:1].isdigit() else v for v in samples) or "–")
            print(f"| {'no flood' if k == 'none' else k + ' flood'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
