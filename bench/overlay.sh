#!/usr/bin/env bash
# bench/overlay.sh — cos-mesh beside other overlays, between two network namespaces.
#
# Run as root from a clone, after `cargo build --release`:
#   sudo bench/overlay.sh                 # 5 runs of every system that is installed
#   RUNS=1 SYSTEMS="raw cos-mesh" sudo bench/overlay.sh
#
# Two namespaces joined by a veth pair (underlay 198.18.0.1 <-> 198.18.0.2); each system builds
# its overlay between them (100.64.0.1 <-> 100.64.0.2, MTU 1420 for every tunnel), then iperf3
# (1 and 4 TCP streams), ping, and the daemons' CPU time and resident memory are measured.
# Every system runs once per round, RUNS rounds in one invocation, so the ratios can be paired
# round by round. Results: one key=value line per (round, system) in $OUT/results.txt, then
# bench/summarize.py prints the table (medians, paired ratios) and writes $OUT/ratios.svg.
#
# Settings (environment): RUNS=5 DURATION=10 (iperf3 seconds) PINGS=50 MTU=1420
#   SYSTEMS="raw cos-mesh cos-mesh-plain nebula boringtun wireguard-go" (missing ones skipped;
#   cos-mesh-plain is cos-mesh with tun.use_offloads and listen.udp_offloads off; cos-mesh-2w and
#   nebula-2w run two data-path workers, routines: 2, on each side)
#   COS_MESH=target/release/cos-mesh  OUT=bench/results/<UTC time>
#   COS_MESH_OFFLOADS=false (cos-mesh with tun.use_offloads and listen.udp_offloads off)
#   COS_MESH_REF=path/to/another/cos-mesh with SYSTEMS="cos-mesh cos-mesh-ref": two builds paired
#
# Safety: nothing is configured outside the two namespaces this script creates; every process
# it starts is killed and both namespaces are deleted on exit, also on failure or Ctrl-C.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
PINGS=${PINGS:-50}
MTU=${MTU:-1420}
SYSTEMS=${SYSTEMS:-"raw cos-mesh cos-mesh-plain nebula boringtun wireguard-go"}
COS_MESH=${COS_MESH:-$REPO/target/release/cos-mesh}
COS_MESH_OFFLOADS=${COS_MESH_OFFLOADS:-true}
OUT=${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

. "$REPO/bench/lab.sh"
lab_up

measure() { # system run
    local sys=$1 run=$2
    start_and_reach "$sys" "run=$run " || return 0
    sleep 1
    local idle_rss; idle_rss=$(rss_kb)
    local hz; hz=$(getconf CLK_TCK)
    local c0; c0=$(cpu_ticks)
    read -r tcp1 retr1 < <(iperf 1)
    read -r tcp4 retr4 < <(iperf 4)
    local c1; c1=$(cpu_ticks)
    local rss; rss=$(rss_kb)
    local rtt
    rtt=$(ina ping -q -c "$PINGS" -i 0.05 -W 2 "$TARGET" 2>/dev/null | awk -F'/' '/^rtt/ {print $5}')
    local cpu; cpu=$(python3 -c "print(f'{($c1 - $c0) / $hz:.2f}')")
    local line="run=$run system=$sys status=ok duration=$DURATION tcp1_mbps=$tcp1 tcp1_retr=$retr1 tcp4_mbps=$tcp4 tcp4_retr=$retr4 rtt_ms=${rtt:-FAIL} cpu_s=$cpu rss_kb=$rss idle_rss_kb=$idle_rss"
    echo "$line" >>"$OUT/results.txt"
    say "$line"
    stop_daemons
}

{
    results_header
    echo "# runs=$RUNS duration=${DURATION}s mtu=$MTU systems=$SYSTEMS"
} >"$OUT/results.txt"

for run in $(seq "$RUNS"); do
    for sys in $SYSTEMS; do
        say "round $run/$RUNS: $sys"
        measure "$sys" "$run"
    done
done
echo "# finished $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/results.txt"

python3 "$REPO/bench/summarize.py" "$OUT/results.txt" "$OUT/ratios.svg" | tee "$OUT/summary.md"
say "results in $OUT"
