#!/usr/bin/env bash
# bench/attack.sh — an established tunnel under a UDP flood, cos-mesh beside Nebula and boringtun.
#
# Run as root from a clone, after `cargo build --release --bin cos-mesh --example flood`:
#   sudo bench/attack.sh
#   DURATION=8 SYSTEMS="cos-mesh" FLOODS="garbage wg-init" sudo bench/attack.sh
#
# The lab of bench/overlay.sh (bench/lab.sh: namespaces A and B, underlay 198.18.0.1 <-> .2,
# overlay 100.64.0.1 <-> .2) plus a third namespace C, the attacker, joined to B by a second veth
# pair (198.18.1.1 in C, 198.18.1.2 in B): the flood reaches the same UDP socket of B's daemon as
# the tunnel's own datagrams. For each system: iperf3 A -> B (one TCP stream) without a flood,
# then under each flood in turn, then once more without one. Floods (examples/flood.rs, one
# sender thread, as fast as it can, bounded by FLOOD_COUNT datagrams and DURATION + 2 seconds):
#   garbage  random bytes, random length
#   wg-init  WireGuard initiation shape (type 1, 148 bytes), random content
#   wg-mac1  the same with a valid mac1 for B's static public key (from B's certificate for
#            cos-mesh, its `wg pubkey` for boringtun; none for Nebula, skipped): passes the check
#            anyone who knows the public key passes, so B counts it against its handshake budget
#            and, over it, answers with cookies
#   hello    cos-mesh Hello with valid framing and padding around a junk certificate
#   replay   one genuine handshake initiation from A, captured with tcpdump on B's veth while
#            the tunnel came up, replayed unchanged (cos-mesh: A's Hello with its real
#            certificate and the WireGuard initiation after the padding; Nebula: its first
#            handshake packet; boringtun: the 148-byte initiation)
# Then (RESTART_FLOODS, default "none wg-mac1"): A's daemon is killed and started again, with B
# unflooded and then under each of these floods (started 1 s before the restart), and the time
# from the new daemon's start to the first ping through the overlay from A to B is measured
# (one ping every 50 ms, up to RESTART_LIMIT=30 seconds).
# Measured per flood: throughput and the share of the no-flood figure kept, the flood's send
# rate, B's daemon CPU (% of one core over the flood), B's RSS before and after, B's kernel UDP
# counters (/proc/net/snmp in B: datagrams received, receive-buffer drops, datagrams sent, i.e.
# answers to the flood) and, for cos-mesh, the counters of `cos-mesh status --json` that moved.
#
# Settings (environment): DURATION=8 (iperf3 seconds per flood) FLOOD_COUNT=5000000 MTU=1420
#   FLOOD_RATE=0 (datagrams/s; 0 = as fast as one thread can. On a small machine the flooder shares
#   the cores with the daemons, so an unpaced flood reaches a different rate against each system;
#   a fixed rate every system's run reaches makes the comparison fair)
#   SYSTEMS="cos-mesh nebula boringtun" FLOODS="garbage wg-init wg-mac1 hello replay"
#   RESTART_FLOODS="none wg-mac1" (empty: no restarts; a flood may repeat) RESTART_LIMIT=30 (whole s)
#   COS_MESH=target/release/cos-mesh FLOOD=target/release/examples/flood
#   OUT=bench/results/<UTC time>-attack
#
# Safety: traffic stays between the three namespaces this script creates; the flood generator
# refuses targets outside 198.18.0.0/15 and 100.64.0.0/10 and stops by itself; every process is
# killed and every namespace deleted on exit, also on failure or Ctrl-C.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-8}
FLOOD_COUNT=${FLOOD_COUNT:-5000000}
FLOOD_RATE=${FLOOD_RATE:-0}
MTU=${MTU:-1420}
SYSTEMS=${SYSTEMS:-"cos-mesh nebula boringtun"}
FLOODS=${FLOODS:-"garbage wg-init wg-mac1 hello replay"}
RESTART_FLOODS=${RESTART_FLOODS-"none wg-mac1"}
RESTART_LIMIT=${RESTART_LIMIT:-30}
COS_MESH=${COS_MESH:-$REPO/target/release/cos-mesh}
COS_MESH_OFFLOADS=true
FLOOD=${FLOOD:-$REPO/target/release/examples/flood}
OUT=${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-attack}

. "$REPO/bench/lab.sh"
lab_up
[ -x "$FLOOD" ] || die "$FLOOD is missing: cargo build --release --example flood"
command -v tcpdump >/dev/null || say "tcpdump is not installed: the replay flood is skipped"

# --- the attacker: namespace C, joined to B by its own veth pair
UC=198.18.1.1
UD=198.18.1.2
ip netns add "$NC"
ip link add "${ID}vc" netns "$NC" type veth peer name "${ID}vd" netns "$NB"
ip netns exec "$NC" ip addr add "$UC/24" dev "${ID}vc"
inb ip addr add "$UD/24" dev "${ID}vd"
ip netns exec "$NC" ip link set lo up
ip netns exec "$NC" ip link set "${ID}vc" up
inb ip link set "${ID}vd" up

port_of() { case $1 in cos-mesh) echo 4242 ;; nebula) echo 4243 ;; *) echo 51820 ;; esac; }

# B's kernel UDP counters: "InDatagrams RcvbufErrors OutDatagrams".
udp_counters() {
    inb awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1 } else print $c["InDatagrams"], $c["RcvbufErrors"], $c["OutDatagrams"] }' /proc/net/snmp
}

# cos-mesh's own counters on B as "name value" lines (nothing for other systems).
mesh_counters() {
    [ "$1" = cos-mesh ] || return 0
    "$COS_MESH" status --socket "$WORK/cm-b.sock" --json 2>/dev/null |
        python3 -c 'import json,sys; [print(k, v) for k, v in json.load(sys.stdin).get("counters", {}).items() if isinstance(v, int)]' || true
}

# "name:delta,..." for the counters that moved between two mesh_counters snapshots.
counter_deltas() {
    python3 - "$1" "$2" <<'EOF'
import sys
def load(p):
    return {k: int(v) for k, v in (l.split() for l in open(p) if l.strip())}
a, b = load(sys.argv[1]), load(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b if b[k] != a.get(k, 0)}
print(",".join(f"{k}:{v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-")
EOF
}

# B's static public key, for the wg-mac1 flood: hex from B's certificate (cos-mesh), base64 from
# `wg pubkey` (boringtun); nothing for Nebula.
pubkey_b() { # system
    case $1 in
        cos-mesh) "$COS_MESH" print --json "$WORK/b.crt" |
            python3 -c 'import json,sys; j=json.load(sys.stdin); print(j.get("publicKey") or j["details"]["publicKey"])' ;;
        boringtun) cat "$WORK/wg-b.pub" ;;
    esac
}

# Extra flood arguments for `flood`; fails when the flood does not apply to the system.
flood_args() { # system flood
    case $2 in
        replay) [ -s "$WORK/$1.init" ] && echo "--payload $WORK/$1.init" ;;
        wg-mac1) local k; k=$(pubkey_b "$1") && [ -n "$k" ] && echo "--pubkey $k" ;;
        *) echo ;;
    esac
}

# Starts A's daemon again (after restart_a killed it); its pid becomes DAEMONS[0].
start_a_cos-mesh() {
    ip netns exec "$NA" "$COS_MESH" run -c "$WORK/cm-a.yml" >>"$WORK/cm-a.log" 2>&1 &
    DAEMONS[0]=$!
}
start_a_nebula() {
    ip netns exec "$NA" nebula -config "$WORK/nb-a.yml" >>"$WORK/nb-a.log" 2>&1 &
    DAEMONS[0]=$!
}
start_a_boringtun() { wg_side a; }

# Kills A's daemon, starts it again and sets RESTART_S to the seconds from the start to the first
# ping through the overlay from A to B (one every 50 ms), or FAIL after RESTART_LIMIT seconds.
# Not run in a subshell: the new daemon's pid must reach DAEMONS and PIDS.
restart_a() { # system
    local old=${DAEMONS[0]}
    kill "$old" 2>/dev/null || true
    for _ in $(seq 50); do running "$old" || break; sleep 0.1; done
    kill -9 "$old" 2>/dev/null || true
    wait "$old" 2>/dev/null || true
    # Microseconds from bash itself: a python3 start per failed ping (30 ms on a quiet machine,
    # far more on a loaded one) was counted against systems whose TUN appears after their start
    # returns (cos-mesh makes its own; the boringtun start function configures it first).
    # Digits only: the separator follows the locale (a comma under some LC_NUMERIC).
    usec() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((10#$t)); }
    local t0; t0=$(usec)
    RESTART_S=FAIL
    "start_a_$1" || return 0
    PIDS+=("${DAEMONS[0]}")
    # ping -w 1 -c 1: pings every 50 ms until the first reply or 1 s; exits at once while the
    # TUN device or route does not exist yet.
    until ina ping -c 1 -i 0.05 -w 1 -q "$TARGET" >/dev/null 2>&1; do
        (( $(usec) - t0 < RESTART_LIMIT * 1000000 )) || return 0
        sleep 0.02
    done
    local took=$(( $(usec) - t0 ))
    RESTART_S=$(printf '%d.%03d' $((took / 1000000)) $((took % 1000000 / 1000)))
}

# The restart phase: A restarted with B unflooded and under each of RESTART_FLOODS.
restarts() { # system
    local sys=$1 port; port=$(port_of "$1")
    for flood in $RESTART_FLOODS; do
        local fp="" extra
        if [ "$flood" != none ]; then
            extra=$(flood_args "$sys" "$flood") || { echo "system=$sys restart_flood=$flood status=not-applicable" >>"$OUT/results.txt"; continue; }
            # shellcheck disable=SC2086 # extra is a list of words
            ip netns exec "$NC" "$FLOOD" --target "$UD:$port" --kind "$flood" --count "$FLOOD_COUNT" \
                --rate "$FLOOD_RATE" --seconds $((RESTART_LIMIT + 5)) $extra >"$WORK/flood.out" 2>&1 &
            fp=$!
            PIDS+=($fp)
            sleep 1
        fi
        restart_a "$sys"
        if [ -n "$fp" ]; then
            kill "$fp" 2>/dev/null || true
            wait "$fp" 2>/dev/null || true
        fi
        echo "system=$sys restart_flood=$flood restart_s=$RESTART_S" | tee -a "$OUT/results.txt" >&2
        sleep 2
    done
}

rss_b() { awk '/^VmRSS:/ {print $2}' "/proc/${DAEMONS[1]}/status" 2>/dev/null || echo 0; }
cpu_b() { local s; s=$(sed 's/.*) //' "/proc/${DAEMONS[1]}/stat" 2>/dev/null) || { echo 0; return; }; set -- $s; echo $((${12} + ${13})); }

# The first genuine handshake initiation from A in a pcap of B's veth, written to $2.
extract_initiation() { # pcap out system
    python3 - "$1" "$2" "$3" <<'EOF'
import struct, sys
data, out, system = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3]
endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
pos = 24
while pos + 16 <= len(data):
    incl = struct.unpack(endian + "I", data[pos + 8:pos + 12])[0]
    frame = data[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
        continue
    udp = 14 + (frame[14] & 0x0F) * 4
    payload = frame[udp + 8:]
    if system == "nebula":
        ok = len(payload) > 16 and payload[0] == 0x10 and payload[1] == 0x00  # v1 handshake, ix_psk0
    elif system == "cos-mesh":
        # A Hello (padded to 1200 bytes) with the 148-byte WireGuard initiation after it.
        ok = len(payload) > 1200 and payload[0] == 0x80
    else:
        ok = len(payload) == 148 and payload[:4] == b"\x01\x00\x00\x00"  # WireGuard initiation
    if ok:
        open(out, "wb").write(payload)
        sys.exit(0)
sys.exit(1)
EOF
}

attack() { # system
    local sys=$1 port; port=$(port_of "$1")
    local cap=""
    if command -v tcpdump >/dev/null; then
        ip netns exec "$NB" tcpdump -Z root --immediate-mode -i "${ID}vb" -U -s 2048 -w "$WORK/$sys.pcap" "udp and src host $UA and dst port $port" 2>"$WORK/tcpdump.log" &
        cap=$!
        PIDS+=($cap)
        local w=0
        until grep -q listening "$WORK/tcpdump.log" 2>/dev/null || [ $w -ge 50 ]; do sleep 0.1; w=$((w + 1)); done
    fi
    start_and_reach "$sys" || return 0
    if [ -n "$cap" ]; then
        sleep 0.5
        kill "$cap" 2>/dev/null || true
        wait "$cap" 2>/dev/null || true
        extract_initiation "$WORK/$sys.pcap" "$WORK/$sys.init" "$sys" || say "$sys: no initiation from A captured"
    fi
    sleep 1
    local hz; hz=$(getconf CLK_TCK)
    local base; read -r base _ < <(iperf 1)
    local rss0; rss0=$(rss_b)
    echo "system=$sys flood=none mbps=$base rss_kb=$rss0" | tee -a "$OUT/results.txt" >&2
    for flood in $FLOODS; do
        local extra
        extra=$(flood_args "$sys" "$flood") || { echo "system=$sys flood=$flood status=not-applicable" >>"$OUT/results.txt"; continue; }
        local r0 c0 u0 m0=$WORK/m0 m1=$WORK/m1
        r0=$(rss_b); u0=$(udp_counters); mesh_counters "$sys" >"$m0"
        ip netns exec "$NC" "$FLOOD" --target "$UD:$port" --kind "$flood" --count "$FLOOD_COUNT" \
            --rate "$FLOOD_RATE" --seconds $((DURATION + 2)) $extra >"$WORK/flood.out" 2>&1 &
        local fp=$!
        PIDS+=($fp)
        c0=$(cpu_b); local s0; s0=$(date +%s.%N)
        sleep 0.5
        local mbps; read -r mbps _ < <(iperf 1)
        wait "$fp" || true
        local c1 s1 u1 r1; c1=$(cpu_b); s1=$(date +%s.%N); u1=$(udp_counters); mesh_counters "$sys" >"$m1"
        local alive=yes
        ina ping -c 1 -W 2 "$TARGET" >/dev/null 2>&1 || alive=no
        r1=$(rss_b)
        read -r i0 e0 o0 <<<"$u0"
        read -r i1 e1 o1 <<<"$u1"
        local fl; fl=$(tail -1 "$WORK/flood.out")
        local line
        line="system=$sys flood=$flood mbps=$mbps base_mbps=$base"
        line+=" kept_pct=$(python3 -c "print(f'{100 * $mbps / $base:.1f}' if '$mbps'.isdigit() and $base > 0 else 'FAIL')" 2>/dev/null || echo FAIL)"
        line+=" flood_sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$fl") flood_rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$fl")"
        line+=" cpu_b_pct=$(python3 -c "print(f'{100 * ($c1 - $c0) / $hz / ($s1 - $s0):.0f}')")"
        line+=" rss_before_kb=$r0 rss_after_kb=$r1 udp_in=$((i1 - i0)) rcvbuf_errors=$((e1 - e0)) udp_out=$((o1 - o0))"
        line+=" alive=$alive counters=$(counter_deltas "$m0" "$m1")"
        echo "$line" | tee -a "$OUT/results.txt" >&2
    done
    sleep 3
    local after; read -r after _ < <(iperf 1)
    echo "system=$sys flood=none-after mbps=$after rss_kb=$(rss_b) rss_start_kb=$rss0" | tee -a "$OUT/results.txt" >&2
    restarts "$sys"
    stop_daemons
}

{
    results_header
    echo "# duration=${DURATION}s flood_count=$FLOOD_COUNT flood_rate=$FLOOD_RATE mtu=$MTU systems=$SYSTEMS floods=$FLOODS restart_floods=$RESTART_FLOODS"
} >"$OUT/results.txt"

for sys in $SYSTEMS; do
    say "$sys"
    attack "$sys"
done
echo "# finished $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/results.txt"

python3 "$REPO/bench/attack_table.py" "$OUT/results.txt" | tee "$OUT/summary.md"
say "results in $OUT"
