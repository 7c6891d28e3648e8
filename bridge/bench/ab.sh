#!/usr/bin/env bash
# Before/after comparison of two qrng-bridge binaries on the same ring, alternating, same run:
#
#   cp target/release/qrng-bridge /tmp/before; <change, cargo build --release>; \
#   bridge/bench/ab.sh /tmp/before target/release/qrng-bridge [ROUNDS] [SECONDS]
#
# Per binary and round: 32-byte hex and 64 KiB binary req/s, p99, CPU microseconds per request of
# the bridge process (steadier than req/s on a shared machine), the benchmark feeder's CPU share
# (see http.sh) and the 1-minute load average. The ring is 16 MiB, filled by the feeder in --replay
# mode, as in http.sh. Needs wrk; build the feeder first
# (cargo build --release -p qrng-bridge --example bench_feeder).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${3:-2}
D=${4:-5}
PORT=${BRIDGE_PORT:-18091}
W=$(mktemp -d /dev/shm/qrng-ab.XXXXXX)
"$TARGET/release/examples/bench_feeder" --ring "$W/qrng0.ring" --capacity $((16 << 20)) --seed 1 --replay >/dev/null 2>&1 &
FP=$!
trap 'kill $FP 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do [ -e "$W/qrng0.ring" ] && break; sleep 0.05; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
one() { # pid url
    local t0 t1 f0 f1 o n
    t0=$(ticks "$1"); f0=$(ticks "$FP")
    o=$(wrk -t2 -c100 -d"${D}s" --latency "$2")
    t1=$(ticks "$1"); f1=$(ticks "$FP")
    n=$(echo "$o" | awk '/requests in/ {print $1}')
    printf "%8.0f req/s p99 %8s %5.1f us CPU/req feeder %4.1f%%" "$(echo "$o" | awk '/^Requests/ {print $2}')" \
        "$(echo "$o" | awk '$1 == "99%" {print $2}')" \
        "$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) * 1e6 / hz / n}')" \
        "$(awk -v a="$f0" -v b="$f1" -v d="$D" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) * 100 / hz / d}')"
}
run() { # binary
    # wrk's 100 connections all come from 127.0.0.1: lift the per-client cap (an environment
    # variable, which a binary without that setting ignores).
    QRNG_HTTP_MAX_CONNECTIONS_PER_CLIENT=2000 \
    "$1" --ring "$W/qrng0.ring" --listen "127.0.0.1:$PORT" --no-fuse --log-format json 2>"$W/bridge.log" &
    local bp=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.05; done
    printf "%-24s hex " "$1"; one "$bp" "http://127.0.0.1:$PORT/api/v1/random/bytes?length=32"
    printf " | 64k "; one "$bp" "http://127.0.0.1:$PORT/api/v1/random/bytes?length=65536&format=binary"
    printf " | load %s\n" "$(cut -d' ' -f1 /proc/loadavg)"
    kill "$bp"; wait "$bp" 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do run "$1"; run "$2"; done
