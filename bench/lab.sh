# bench/lab.sh — the lab shared by bench/overlay.sh and bench/attack.sh (sourced, not run).
#
# Expects from the caller: REPO MTU COS_MESH COS_MESH_OFFLOADS OUT, and `set -euo pipefail`.
# Gives: lab_up, the namespaces NA and NB (underlay UA <-> UB, overlay OA <-> OB), NC reserved for a
# third one, WORK (a temporary directory), PIDS (killed on exit), DAEMONS (the running
# system's daemons, A first), start_<system> for every system, stop_daemons, cpu_ticks, rss_kb,
# iperf.
# Everything started is killed and every namespace deleted on exit, also on failure or Ctrl-C.

ID=cb$$
NA=${ID}a
NB=${ID}b
NC=${ID}c   # a third namespace, created only by scripts that need one (attack.sh)
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
    ip netns del "$NC" 2>/dev/null
    rm -f /var/run/wireguard/${ID}*.sock
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

inb() { ip netns exec "$NB" "$@"; }
ina() { ip netns exec "$NA" "$@"; }

# Checks the tools, makes $OUT, builds the underlay (two namespaces, one veth pair) and starts
# the iperf3 server in B.
lab_up() {
    [ "$(id -u)" = 0 ] || die "run as root (namespaces, TUN devices)"
    for t in ip iperf3 ping python3; do command -v "$t" >/dev/null || die "$t is not installed"; done
    mkdir -p "$OUT"

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
    # Not through inb: $! must be iperf3 itself, or the kill on exit misses it.
    ip netns exec "$NB" iperf3 -s >/dev/null 2>&1 &
    PIDS+=($!)
}

# Starts a system's daemons and waits up to 20 s for a ping through the overlay. If the system is
# not installed or gets no path, says so, appends "<prefix>system=<sys> status=skipped|fail" to
# $OUT/results.txt, stops what it started and returns 1.
start_and_reach() { # system [result prefix, e.g. "run=3 "]
    local sys=$1 prefix=${2:-}
    if ! "start_$sys"; then
        say "$sys: not installed or failed to start, skipped"
        echo "${prefix}system=$sys status=skipped" >>"$OUT/results.txt"
        stop_daemons
        return 1
    fi
    if ! wait_path 20; then
        say "$sys: no path to $TARGET after 20 s, skipped"
        echo "${prefix}system=$sys status=fail" >>"$OUT/results.txt"
        stop_daemons
        return 1
    fi
}

# Waits up to $1 seconds for a ping from A to $TARGET through the overlay. A ping fails at once
# while the TUN or its route is not there yet: this counts time, not pings.
wait_path() { # seconds
    local t0=$SECONDS
    until ina ping -c 1 -W 1 "$TARGET" >/dev/null 2>&1; do
        sleep 0.2
        [ $((SECONDS - t0)) -lt "$1" ] || return 1
    done
}

# The first lines of a results file: when, where, and the version of every system installed.
results_header() {
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# cos-mesh $("$COS_MESH" --version 2>/dev/null | head -1) offloads=$COS_MESH_OFFLOADS"
    if command -v nebula >/dev/null; then echo "# nebula $(nebula -version 2>&1 | head -1)"; fi
    if command -v boringtun-cli >/dev/null; then echo "# $(boringtun-cli --version 2>&1 | head -1)"; fi
    if command -v wireguard-go >/dev/null; then echo "# wireguard-go $(wireguard-go --version 2>&1 | head -1)"; fi
}

# --- per-system start functions: each starts its daemons (pids in DAEMONS) and sets TARGET
DAEMONS=()
TARGET=$OB

# Version 1 certificates: Nebula 1.6.1 reads no others (cos-mesh makes v2 unless told).
pki() {
    [ -f "$WORK/ca.crt" ] && return
    "$COS_MESH" ca --version 1 --name bench --ips 100.64.0.0/10 --out-crt "$WORK/ca.crt" --out-key "$WORK/ca.key" >/dev/null
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
  level: info
routines: ${COS_MESH_ROUTINES:-1}"
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

# Two data-path workers (routines: 2) on each side.
start_cos-mesh-2w() {
    local COS_MESH_ROUTINES=2
    start_cos-mesh
}

# Another build of cos-mesh ($COS_MESH_REF, e.g. main's) with the same configs: paired against
# this one round by round when a change must not cost throughput.
start_cos-mesh-ref() {
    [ -n "${COS_MESH_REF:-}" ] || return 1
    local COS_MESH=$COS_MESH_REF
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
  level: warning
routines: ${NEBULA_ROUTINES:-1}" >"$WORK/nb-$side.yml"
        ip netns exec "$ID$side" nebula -config "$WORK/nb-$side.yml" >"$WORK/nb-$side.log" 2>&1 &
        DAEMONS+=($!)
    done
}

# Nebula with two routines on each side.
start_nebula-2w() {
    local NEBULA_ROUTINES=2
    start_nebula
}

# WireGuard implementations: $1 = command line (the interface name is appended). Keys in
# $WORK/wg-<side>.key (0600) and .pub.
start_wg() {
    command -v wg >/dev/null || return 1
    WG_CMD=$1
    for side in a b; do
        (umask 077 && wg genkey >"$WORK/wg-$side.key")
        wg pubkey <"$WORK/wg-$side.key" >"$WORK/wg-$side.pub"
    done
    wg_side a && wg_side b
}

# Starts one side's WireGuard daemon ($WG_CMD; its pid is DAEMONS[0] for a, [1] for b) and
# configures its interface. Also how bench/attack.sh restarts A.
wg_side() { # side
    local side=$1 dev="${ID}w$1" me=$OA peer=$OB under=$UB other=b
    [ "$side" = b ] && me=$OB peer=$OA under=$UA other=a
    ip netns exec "$ID$side" env WG_SUDO=1 WG_PROCESS_FOREGROUND=1 $WG_CMD "$dev" >>"$WORK/wg-$side.log" 2>&1 &
    if [ "$side" = a ]; then DAEMONS[0]=$!; else DAEMONS[1]=$!; fi
    local t=0
    until ip netns exec "$ID$side" wg show "$dev" >/dev/null 2>&1; do
        sleep 0.05; t=$((t + 1)); [ $t -lt 200 ] || return 1
    done
    ip netns exec "$ID$side" wg set "$dev" private-key "$WORK/wg-$side.key" listen-port 51820 \
        peer "$(cat "$WORK/wg-$other.pub")" allowed-ips "$peer/32" endpoint "$under:51820"
    ip netns exec "$ID$side" ip addr add "$me/24" dev "$dev"
    ip netns exec "$ID$side" ip link set "$dev" mtu "$MTU" up
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

# Whether process $1 still runs. Not `kill -0`: an exited child of this shell stays a zombie
# until reaped, and a zombie answers it.
running() { # pid
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# Stops the daemons (TERM, then KILL after 5 s) and reaps them.
stop_daemons() {
    for p in "${DAEMONS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${DAEMONS[@]}"; do
        for _ in $(seq 50); do running "$p" || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
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

# iperf3 from A to $TARGET for $DURATION seconds (the first not counted).
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
