#!/usr/bin/env bash
# bench/hot-code.sh — the functions a running daemon executes, written as the link order of
# cos-mesh-daemon (src/bin/cos-mesh-daemon.order, which build.rs hands to the linker).
#
# Why: the kernel maps a binary's code in 64 KB windows around each page a process touches, so a
# daemon whose loop calls a few hundred small functions spread over 7 MB of code keeps megabytes
# of it resident. Linked first and side by side, the code the loop runs fits in a few windows.
#
# Run as root from a clone after `cargo build --release`, then build again (the file is an input of
# the daemon's link), whenever the daemon's code changed much: names the file holds that no longer
# exist are skipped, so a stale order costs resident memory, never correctness.
#   sudo bench/hot-code.sh && cargo build --release
#
# How: the lab of bench/overlay.sh. Daemon A runs under callgrind with its instrumentation switched
# on once A is up, then B starts and A goes through what a node does all day: a handshake, pings,
# bulk TCP both ways, `cos-mesh status`, a metrics scrape, 10 s of timers. Every function of the
# binary that holds an executed instruction is written out, in the order it first ran. Valgrind's
# CPU has neither AVX-512 nor SHA-NI, so A then runs once more natively under `perf record` through
# the same steps, and the functions the samples land in that the trace missed are added. The
# release of the start-up code (io::memory) runs before the trace starts and right after the pages
# are gone, so it is put first.
#
# Settings: COS_MESH=target/release/cos-mesh ORDER=src/bin/cos-mesh-daemon.order DURATION=3
#   KEEP=<dir> (keep the callgrind and perf output there)
# Safety: as bench/overlay.sh (everything in namespaces this script creates, all removed on exit);
# needs valgrind (callgrind) and perf.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MTU=${MTU:-1420}
DURATION=${DURATION:-3}
COS_MESH=${COS_MESH:-$REPO/target/release/cos-mesh}
COS_MESH_OFFLOADS=true
ORDER=${ORDER:-$REPO/src/bin/cos-mesh-daemon.order}
DAEMON=$(dirname "$COS_MESH")/cos-mesh-daemon

. "$REPO/bench/lab.sh"
OUT=${KEEP:-$WORK/out}   # lab_up makes it; nothing is written there unless KEEP is set
for t in valgrind callgrind_control perf; do command -v "$t" >/dev/null || die "$t is not installed"; done
[ -x "$DAEMON" ] || die "$DAEMON is missing: cargo build --release"
lab_up
pki

config() { # side peer_overlay peer_underlay
    mesh_config "$1" "$2" "$3" 4242 "${ID}m$1" "control:
  socket: $WORK/cm-$1.sock
stats:
  type: prometheus
  listen: 127.0.0.1:8080
  path: /metrics
logging:
  level: info"
}
# What a node does all day, from A: pings, bulk TCP both ways, status and metrics, timers.
workload() { # what
    say "$1: pings, TCP both ways, status, metrics, timers"
    ina ping -q -c 20 -i 0.05 "$OB" >/dev/null
    iperf 1 >/dev/null
    iperf 4 >/dev/null
    ina timeout $((DURATION + 30)) iperf3 -c "$OB" -t "$DURATION" -R >/dev/null 2>&1 || true
    "$COS_MESH" status -c "$WORK/cm-a.yml" >/dev/null 2>&1 || true
    ina python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8080/metrics").read()' || true
    sleep 10
}

reach() { # within 60 s (A may run under valgrind)
    wait_path 60 || die "no path from A to B"
}

config a "$OB" "$UB" >"$WORK/cm-a.yml"
config b "$OA" "$UA" >"$WORK/cm-b.yml"

# A under callgrind, its instrumentation off until A has started: only what runs after start counts.
ip netns exec "$NA" valgrind --tool=callgrind --instr-atstart=no --dump-instr=yes --compress-pos=no --compress-strings=no \
    --callgrind-out-file="$WORK/callgrind.out" --log-file="$WORK/valgrind.log" \
    "$DAEMON" -c "$WORK/cm-a.yml" >"$WORK/cm-a.log" 2>&1 &
A=$!
DAEMONS+=($A)
PIDS+=($A)
for _ in $(seq 3000); do grep -q "cos-mesh up" "$WORK/cm-a.log" && break; sleep 0.01; done
grep -q "cos-mesh up" "$WORK/cm-a.log" || die "daemon A did not start: $(cat "$WORK/cm-a.log" "$WORK/valgrind.log")"
callgrind_control -i on "$A" >/dev/null

ip netns exec "$NB" "$DAEMON" -c "$WORK/cm-b.yml" >"$WORK/cm-b.log" 2>&1 &
DAEMONS+=($!)
PIDS+=($!)
reach
workload "tracing A under callgrind (pid $A)"

# A stops (and callgrind writes what ran): every function holding an executed instruction, in
# first-executed order.
kill "$A"
[ -z "${KEEP:-}" ] || trap 'cp "$WORK"/callgrind.out "$WORK"/valgrind.log "$WORK"/cm-a.log "$WORK"/perf.* "$KEEP"/ 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do running "$A" || break; sleep 0.2; done

# Valgrind's CPU lacks AVX-512 and SHA-NI, so the SIMD code a native run picks never ran above: A
# again, natively, sampled by perf through the same workload; what it adds goes after the rest.
ip netns exec "$NA" "$DAEMON" -c "$WORK/cm-a.yml" >"$WORK/cm-a2.log" 2>&1 &
A=$!
DAEMONS+=($A)
PIDS+=($A)
reach
perf record -q -e cpu-clock -F 20000 -p "$A" -o "$WORK/perf.data" >/dev/null 2>&1 &
PERF=$!
sleep 1
workload "sampling A natively (pid $A)"
kill -INT "$PERF"
wait "$PERF" || true
perf script -i "$WORK/perf.data" -F ip,sym,dso --no-demangle 2>/dev/null |
    awk -v f="$DAEMON" 'index($0, "(" f ")") {print $2}' >"$WORK/perf.syms"
python3 - "$WORK/callgrind.out" "$DAEMON" "$ORDER" "$WORK/perf.syms" <<'EOF'
import bisect, re, subprocess, sys
src, exe, out, sampled = sys.argv[1:5]
syms = []
for line in subprocess.run(["nm", "-S", "--defined-only", exe], capture_output=True, text=True, check=True).stdout.splitlines():
    m = re.match(r"([0-9a-f]+) ([0-9a-f]+) [tTwW] (\S+)$", line)
    if m:
        syms.append((int(m[1], 16), int(m[2], 16), m[3]))
syms.sort()
starts = [s[0] for s in syms]
def name_at(addr):
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and syms[i][0] <= addr < syms[i][0] + syms[i][1]:
        return syms[i][2]
# Cost lines ("0xADDR line cost", addresses as in the binary) belong to the object of the function block they are in (ob=). By
# instruction rather than by function: this valgrind names few of the binary's functions and
# counts a tail call into another function as the caller's.
names, seen, ob = [], set(), ""
for line in open(src, errors="replace"):
    if line.startswith("ob="):
        ob = line[3:].rstrip("\n")
    elif line.startswith("0x") and ob == exe:
        name = name_at(int(line.split()[0], 16))
        if name and name not in seen:
            seen.add(name)
            names.append(name)
# The release of the start-up code (io::memory) runs in the loop's first round, before the trace
# starts, and right after the pages are gone: it goes first.
names = [s[2] for s in syms if "2io6memory" in s[2] and s[2] not in seen] + names
seen.update(names)
traced = len(names)
for line in open(sampled):
    name = line.strip()
    if name and name not in seen and name != "[unknown]":
        seen.add(name)
        names.append(name)
size = {s[2]: s[1] for s in syms}
total = sum(size.get(n, 0) for n in names)
with open(out, "w") as f:
    f.write("# Link order of cos-mesh-daemon's hot code: every function a running daemon executed after start\n")
    f.write("# (handshakes, pings, bulk TCP both ways, status, metrics, timers), by bench/hot-code.sh.\n")
    f.write(f"# {len(names)} functions, {total // 1024} kB. Names that no longer exist are skipped by the linker.\n")
    for n in names:
        f.write(n + "\n")
print(f"{len(names)} functions ({total // 1024} kB) of the binary ran after start "
      f"({traced} traced, {len(names) - traced} more sampled natively) -> {out}")
EOF
