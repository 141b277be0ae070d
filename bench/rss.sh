#!/usr/bin/env bash
# bench/rss.sh — where a daemon's resident memory goes: code pages vs anonymous memory, idle and after load.
#
# Run as root from a clone, after `cargo build --release`:
#   sudo bench/rss.sh                       # cos-mesh
#   SYSTEM=boringtun sudo bench/rss.sh      # any system bench/lab.sh starts
#
# The lab of bench/overlay.sh (two namespaces, one veth pair, the same daemon configs). For both daemons it
# prints /proc/PID/smaps_rollup's Rss, Anonymous, Pss_File and Pss_Anon idle after start, then the largest
# mappings of daemon A, then (cos-mesh, when gdb is installed and WORKING_SET=1, the default) it drops each
# daemon's mapping of its own code with madvise(MADV_DONTNEED) — the pages stay in the page cache; only the
# mapping goes — and prints the figures again idle and after one iperf3 stream of DURATION seconds: what
# the code refaults is the code the daemon really runs. Without WORKING_SET the load runs on the daemons as
# started. Settings: SYSTEM=cos-mesh DURATION=5 MTU=1420 WORKING_SET=1 COS_MESH=target/release/cos-mesh
#
# Safety: as bench/overlay.sh (everything in namespaces this script creates, all removed on exit).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SYSTEM=${SYSTEM:-cos-mesh}
DURATION=${DURATION:-5}
MTU=${MTU:-1420}
WORKING_SET=${WORKING_SET:-1}
COS_MESH=${COS_MESH:-$REPO/target/release/cos-mesh}
COS_MESH_OFFLOADS=${COS_MESH_OFFLOADS:-true}
OUT=${OUT:-$(mktemp -d /tmp/cos-mesh-rss.XXXXXX)}

. "$REPO/bench/lab.sh"
lab_up

figures() { # label
    for p in "${DAEMONS[@]}"; do
        printf '%-22s pid %-7s %s\n' "$1" "$p" \
            "$(awk '/^(Rss|Anonymous|Pss_File|Pss_Anon):/ {printf "%s %s kB  ", $1, $2}' "/proc/$p/smaps_rollup")"
    done
}

largest_mappings() { # pid
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6); perms = $2}
         /^Rss:/ {if ($2 >= 128) printf "  %6d kB %s %s\n", $2, perms, name}' "/proc/$1/smaps" | sort -rn | head -8
}

drop_code() { # pid: unmap the pages of the executable's code mapping (they stay in the page cache)
    local range; range=$(awk '$2 ~ /x/ && $6 ~ /cos-mesh$/ {print $1; exit}' "/proc/$1/maps")
    [ -n "$range" ] || return 0
    local start=$((0x${range%-*})) end=$((0x${range#*-}))
    gdb -p "$1" -batch -ex "call (int)madvise((void*)$start, $((end - start)), 4)" >/dev/null 2>&1
}

"start_$SYSTEM" || die "$SYSTEM is not installed or failed to start"
t=0
until ina ping -c 1 -W 1 "$TARGET" >/dev/null 2>&1; do
    t=$((t + 1))
    [ $t -ge 20 ] && die "$SYSTEM: no path to $TARGET after 20 s"
done
sleep 1
figures idle
echo "largest mappings of daemon A (kB resident, permissions, file):"
largest_mappings "${DAEMONS[0]}"
if [ "$WORKING_SET" = 1 ] && [ "$SYSTEM" = cos-mesh ] && command -v gdb >/dev/null; then
    for p in "${DAEMONS[@]}"; do drop_code "$p"; done
    sleep 2
    figures "idle, code dropped"
fi
read -r tcp1 retr1 < <(iperf 1)
echo "iperf3 1 stream: $tcp1 Mbit/s, $retr1 retransmits"
figures "after load"
stop_daemons
