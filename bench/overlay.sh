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
#   cos-mesh-plain is cos-mesh with tun.use_offloads and listen.udp_offloads off)
#   COS_MESH=target/release/cos-mesh  OUT=bench/results/<UTC time>
#   COS_MESH_OFFLOADS=false (cos-mesh with tun.use_offloads and listen.udp_offloads off)
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

ID=cb$$
NA=${ID}a
NB=${ID}b
UA=198.18.0.1
UB=198.18.0.2
OA=100.64.0.1
OB=100.64.0.2
WORK=$(mktemp -d /tmp/cos-mesh-bench.XXXXXX)
PIDS=()

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    ip netns del "$NA" 2>/dev/null
    ip netns del "$NB" 2>/dev/null
    rm -f /var/run/wireguard/${ID}*.sock
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || die "run as root (namespaces, TUN devices)"
for t in ip iperf3 ping python3; do command -v "$t" >/dev/null || die "$t is not installed"; done
mkdir -p "$OUT"

inb() { ip netns exec "$NB" "$@"; }
ina() { ip netns exec "$NA" "$@"; }

# --- the underlay: two namespaces and one veth pair
ip netns add "$NA"
ip netns add "$NB"
ip link add "${ID}va" netns "$NA" type veth peer name "${ID}vb" netns "$NB"
ina ip addr add "$UA/24" dev "${ID}va"
inb ip addr add "$UB/24" dev "${ID}vb"
for ns in "$NA" "$NB"; do
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip link set "${ID}v${ns: -1}" up
done
inb iperf3 -s >/dev/null 2>&1 &
PIDS+=($!)

# --- per-system start functions: each starts its daemons (pids in DAEMONS) and sets TARGET
DAEMONS=()
TARGET=$OB

pki() {
    [ -f "$WORK/ca.crt" ] && return
    "$COS_MESH" ca --name bench --ips 100.64.0.0/10 --out-crt "$WORK/ca.crt" --out-key "$WORK/ca.key" >/dev/null
    for side in a b; do
        local ip=$OA; [ $side = b ] && ip=$OB
        "$COS_MESH" sign --ca-crt "$WORK/ca.crt" --ca-key "$WORK/ca.key" --name "$side" --ip "$ip/24" \
            --out-crt "$WORK/$side.crt" --out-key "$WORK/$side.key" >/dev/null
    done
}

mesh_config() { # side peer_overlay peer_underlay port dev extra
    cat <<EOF
pki:
  ca: $WORK/ca.crt
  cert: $WORK/$1.crt
  key: $WORK/$1.key
static_host_map:
  "$2": ["$3:$4"]
listen:
  host: 0.0.0.0
  port: $4
tun:
  dev: $5
  mtu: $MTU
firewall:
  outbound:
    - {port: any, proto: any, host: any}
  inbound:
    - {port: any, proto: any, host: any}
$6
EOF
}

start_cos-mesh() {
    [ -x "$COS_MESH" ] || return 1
    pki
    for side in a b; do
        local peer=$OB under=$UB; [ $side = b ] && peer=$OA under=$UA
        local extra="control:
  socket: $WORK/cm-$side.sock
logging:
  level: info"
        if [ "$COS_MESH_OFFLOADS" = false ]; then
            mesh_config $side $peer $under 4242 "${ID}m$side" "$extra" |
                sed -e 's/^listen:$/listen:\n  udp_offloads: false/' -e 's/^tun:$/tun:\n  use_offloads: false/' >"$WORK/cm-$side.yml"
        else
            mesh_config $side $peer $under 4242 "${ID}m$side" "$extra" >"$WORK/cm-$side.yml"
        fi
        ip netns exec "$ID$side" "$COS_MESH" run -c "$WORK/cm-$side.yml" >"$WORK/cm-$side.log" 2>&1 &
        DAEMONS+=($!)
    done
}

start_cos-mesh-plain() {
    local COS_MESH_OFFLOADS=false
    start_cos-mesh
}

start_nebula() {
    command -v nebula >/dev/null || return 1
    pki
    for side in a b; do
        local peer=$OB under=$UB; [ $side = b ] && peer=$OA under=$UA
        mesh_config $side $peer $under 4243 "${ID}n$side" "lighthouse:
  am_lighthouse: false
logging:
  level: warning" >"$WORK/nb-$side.yml"
        ip netns exec "$ID$side" nebula -config "$WORK/nb-$side.yml" >"$WORK/nb-$side.log" 2>&1 &
        DAEMONS+=($!)
    done
}

# WireGuard implementations: $1 = command line (the interface name is appended).
start_wg() {
    command -v wg >/dev/null || return 1
    local keys=() pubs=()
    for side in a b; do
        local k; k=$(wg genkey); keys+=("$k"); pubs+=("$(echo "$k" | wg pubkey)")
    done
    local i=0
    for side in a b; do
        local dev="${ID}w$side"
        ip netns exec "$ID$side" env WG_SUDO=1 WG_PROCESS_FOREGROUND=1 $1 "$dev" >"$WORK/wg-$side.log" 2>&1 &
        DAEMONS+=($!)
        local t=0
        until ip netns exec "$ID$side" wg show "$dev" >/dev/null 2>&1; do
            sleep 0.1; t=$((t + 1)); [ $t -lt 100 ] || return 1
        done
        local me=$OA peer=$OB under=$UB other=1
        [ $side = b ] && me=$OB peer=$OA under=$UA other=0
        echo "${keys[$i]}" >"$WORK/wg-$side.key"
        ip netns exec "$ID$side" wg set "$dev" private-key "$WORK/wg-$side.key" listen-port 51820 \
            peer "${pubs[$other]}" allowed-ips "$peer/32" endpoint "$under:51820"
        ip netns exec "$ID$side" ip addr add "$me/24" dev "$dev"
        ip netns exec "$ID$side" ip link set "$dev" mtu "$MTU" up
        i=$((i + 1))
    done
}

start_boringtun() {
    command -v boringtun-cli >/dev/null || return 1
    start_wg "boringtun-cli --foreground --disable-drop-privileges --log $WORK/boringtun.log"
}

start_wireguard-go() {
    command -v wireguard-go >/dev/null || return 1
    start_wg "wireguard-go -f"
}

start_raw() {
    TARGET=$UB
}

stop_daemons() {
    for p in "${DAEMONS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${DAEMONS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    DAEMONS=()
    TARGET=$OB
}

# CPU seconds (user + system, all threads) of the running daemons.
cpu_ticks() {
    local sum=0
    for p in "${DAEMONS[@]}"; do
        # Fields 14 and 15 of /proc/PID/stat, counted after the command name in parentheses.
        local s; s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $s
        sum=$((sum + ${12} + ${13}))
    done
    echo $sum
}

rss_kb() {
    local sum=0
    for p in "${DAEMONS[@]}"; do
        local r; r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
        sum=$((sum + ${r:-0}))
    done
    echo $sum
}

iperf() { # streams -> "mbps retransmits"
    ina timeout $((DURATION + 30)) iperf3 -c "$TARGET" -t "$DURATION" -O 1 -P "$1" -J >"$WORK/iperf.json" 2>/dev/null || true
    python3 - "$WORK/iperf.json" <<'EOF'
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    print(f'{end["sum_received"]["bits_per_second"] / 1e6:.0f} {end["sum_sent"].get("retransmits", 0)}')
except Exception:
    print("FAIL FAIL")
EOF
}

measure() { # system run
    local sys=$1 run=$2
    if ! "start_$sys"; then
        say "$sys: not installed or failed to start, skipped"
        stop_daemons
        return
    fi
    local t=0
    until ina ping -c 1 -W 1 "$TARGET" >/dev/null 2>&1; do
        t=$((t + 1))
        if [ $t -ge 20 ]; then
            say "$sys: no path to $TARGET after 20 s, skipped"
            echo "run=$run system=$sys status=fail" >>"$OUT/results.txt"
            stop_daemons
            return
        fi
    done
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
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# cos-mesh $("$COS_MESH" --version 2>/dev/null | head -1) offloads=$COS_MESH_OFFLOADS"
    command -v nebula >/dev/null && echo "# nebula $(nebula -version 2>&1 | head -1)"
    command -v boringtun-cli >/dev/null && echo "# $(boringtun-cli --version 2>&1 | head -1)"
    command -v wireguard-go >/dev/null && echo "# wireguard-go $(wireguard-go --version 2>&1 | head -1)"
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
