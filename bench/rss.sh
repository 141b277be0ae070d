#!/usr/bin/env bash
# bench/rss.sh — daemons' resident memory, side by side: code pages vs anonymous memory, idle and
# after load, several rounds in one invocation.
#
# Run as root from a clone, after `cargo build --release`:
#   sudo bench/rss.sh                                   # 5 rounds of cos-mesh, nebula, boringtun
#   RUNS=1 SYSTEMS=cos-mesh sudo bench/rss.sh           # a quick look
#
# The lab of bench/overlay.sh (two namespaces, one veth pair, the same daemon configs). Every
# system runs once per round. For both daemons it reads /proc/PID/smaps_rollup idle (2 s after
# the path works) and again after one iperf3 stream of DURATION seconds, and writes one key=value
# line per (round, system) to $OUT/results.txt: the sums over both daemons of Rss, Anonymous
# (heap, stacks, relocated data), file-backed Rss (Rss - Anonymous: code and read-only data,
# clean page cache the two daemons share) and Pss (shared pages split between their users). The
# first round also writes each system's largest mappings to $OUT/mappings.txt. Then the table of
# medians, with cos-mesh's ratio of both daemons' RSS to each system paired round by round,
# goes to stdout and $OUT/summary.md.
#
# WORKING_SET=1 (cos-mesh, needs gdb): after the idle figures, drop each daemon's mapping of its
# own code once more with madvise(MADV_DONTNEED) (the daemon does so itself once after start; the
# pages stay in the page cache) and measure again idle and after load: what the code refaults is
# the code the daemon really runs. Those rounds'
# after-load figures are then not comparable with the other systems'.
#
# SETTLE seconds after the load, both daemons are measured once more (`settled_`, "idle again"):
# cos-mesh gives its data-path buffers back 5–10 s after bulk traffic stops.
#
# Settings: SYSTEMS="cos-mesh nebula boringtun" RUNS=5 DURATION=5 SETTLE=12 MTU=1420 WORKING_SET=0
#   COS_MESH=target/release/cos-mesh OUT=bench/results/<UTC time>-rss
# Safety: as bench/overlay.sh (everything in namespaces this script creates, all removed on exit).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SYSTEMS=${SYSTEMS:-"cos-mesh nebula boringtun"}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
SETTLE=${SETTLE:-12}
MTU=${MTU:-1420}
WORKING_SET=${WORKING_SET:-0}
COS_MESH=${COS_MESH:-$REPO/target/release/cos-mesh}
COS_MESH_OFFLOADS=${COS_MESH_OFFLOADS:-true}
OUT=${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-rss}

. "$REPO/bench/lab.sh"
lab_up

# Sums over both daemons: "rss_kb=.. anon_kb=.. file_kb=.. pss_kb=.." with a prefix.
figures() { # prefix
    local rss=0 anon=0 pss=0
    for p in "${DAEMONS[@]}"; do
        read -r r a s < <(awk '/^Rss:/ {r = $2} /^Anonymous:/ {a = $2} /^Pss:/ {s = $2}
                               END {print r + 0, a + 0, s + 0}' "/proc/$p/smaps_rollup")
        rss=$((rss + r)) anon=$((anon + a)) pss=$((pss + s))
    done
    echo "${1}rss_kb=$rss ${1}anon_kb=$anon ${1}file_kb=$((rss - anon)) ${1}pss_kb=$pss"
}

largest_mappings() { # pid
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6); perms = $2}
         /^Rss:/ {if ($2 >= 128) printf "  %6d kB %s %s\n", $2, perms, name}' "/proc/$1/smaps" | sort -rn | head -10
}

drop_code() { # pid: unmap the pages of the executable's code mapping (they stay in the page cache)
    local range; range=$(awk '$2 ~ /x/ && $6 ~ /cos-mesh(-daemon)?$/ {print $1; exit}' "/proc/$1/maps")
    [ -n "$range" ] || return 0
    local start=$((0x${range%-*})) end=$((0x${range#*-}))
    gdb -p "$1" -batch -ex "set language c" -ex "call (long)syscall(28L, (long)$start, (long)$((end - start)), (long)4)" >/dev/null 2>&1
}

measure() { # system run
    local sys=$1 run=$2
    start_and_reach "$sys" "run=$run " || return 0
    sleep 2
    local idle; idle=$(figures idle_)
    if [ "$run" = 1 ]; then
        {
            echo "== $sys, daemon A (pid ${DAEMONS[0]}), idle: $(grep -E '^(Rss|Anonymous|Pss):' "/proc/${DAEMONS[0]}/smaps_rollup" | tr -s ' \n' ' ')"
            largest_mappings "${DAEMONS[0]}"
        } >>"$OUT/mappings.txt"
    fi
    local dropped=""
    if [ "$WORKING_SET" = 1 ] && [[ $sys == cos-mesh* ]] && command -v gdb >/dev/null; then
        for p in "${DAEMONS[@]}"; do drop_code "$p"; done
        sleep 2
        dropped="code_dropped=1 $(figures dropped_)"
    fi
    read -r tcp1 retr1 < <(iperf 1)
    local load; load=$(figures load_)
    sleep "$SETTLE"
    local line="run=$run system=$sys status=ok $idle $load $(figures settled_) tcp1_mbps=$tcp1 $dropped"
    echo "$line" >>"$OUT/results.txt"
    say "$line"
    stop_daemons
}

mkdir -p "$OUT"
{
    results_header
    echo "# runs=$RUNS duration=${DURATION}s mtu=$MTU systems=$SYSTEMS working_set=$WORKING_SET"
} >"$OUT/results.txt"
: >"$OUT/mappings.txt"

for run in $(seq "$RUNS"); do
    for sys in $SYSTEMS; do
        say "round $run/$RUNS: $sys"
        measure "$sys" "$run"
    done
done
echo "# finished $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/results.txt"

python3 - "$OUT/results.txt" <<'EOF' | tee "$OUT/summary.md"
import statistics, sys
rows, notes = [], []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("#"):
        notes.append(line)
    elif line:
        rows.append(dict(kv.split("=", 1) for kv in line.split()))
ok = [r for r in rows if r.get("status") == "ok"]
systems = list(dict.fromkeys(r["system"] for r in ok))
cols = [("idle_rss_kb", "RSS idle"), ("idle_anon_kb", "anonymous idle"), ("idle_file_kb", "file-backed idle"),
        ("idle_pss_kb", "PSS idle"), ("load_rss_kb", "RSS after load"), ("load_anon_kb", "anonymous after load"),
        ("settled_rss_kb", "RSS idle again")]
cols = [(k, h) for k, h in cols if all(k in r for r in ok)]
mb = lambda kb: f"{kb / 1024:.1f}"
print("\n".join(notes))
print()
print("Both daemons of each system, MB (medians of the rounds):")
print()
print("| system | " + " | ".join(h for _, h in cols) + " | cos-mesh's RSS idle / after load / idle again, paired | iperf3 1 stream (Mbit/s) |")
print("|---" * (len(cols) + 3) + "|")
for s in systems:
    mine = [r for r in ok if r["system"] == s]
    med = {k: statistics.median(float(r[k]) for r in mine) for k, _ in cols}
    ratio = "–"
    if s != "cos-mesh":
        pairs = [(c, r) for r in mine for c in ok if c["system"] == "cos-mesh" and c["run"] == r["run"]]
        if pairs:
            ratio = " / ".join(
                f'{statistics.median(float(c[k]) / float(r[k]) for c, r in pairs):.2f}×'
                for k in ("idle_rss_kb", "load_rss_kb", "settled_rss_kb") if all(k in x for p in pairs for x in p))
    tcp = [float(r["tcp1_mbps"]) for r in mine if r.get("tcp1_mbps", "FAIL") != "FAIL"]
    tcp = f"{statistics.median(tcp):,.0f}" if tcp else "FAIL"
    print(f"| {s} | " + " | ".join(mb(med[k]) for k, _ in cols) + f" | {ratio} | {tcp} |")
print()
print(f"{len({r['run'] for r in ok})} rounds. File-backed = Rss - Anonymous (code and read-only data, "
      "page cache shared by both daemons: counted twice in RSS, split in PSS). Ratio below 1× = cos-mesh smaller.")
EOF
say "results in $OUT"
