#!/bin/bash
# feeder/bench/cpu.sh SOURCE INTERVAL SECONDS: the CPU time qrng-feeder uses over a run, from
# /proc/<pid>/schedstat (ns). Mixes into the running kernel's pool without crediting
# (--bits-per-byte 0); needs root (RNDADDENTROPY). docs/benchmarks.md.
set -euo pipefail
src=$1 interval=$2 secs=$3
bin=$(cd "$(dirname "$0")/../.." && pwd)/target/release/qrng-feeder
log=$(mktemp)
"$bin" --source "$src" --bits-per-byte 0 --interval-secs "$interval" 2>"$log" &
p=$!
sleep 0.5
s0=$(cut -d' ' -f1 "/proc/$p/schedstat")
sleep "$secs"
s1=$(cut -d' ' -f1 "/proc/$p/schedstat")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
kill "$p"
echo "interval=${interval}s run=${secs}s cpu_ns_after_start=$((s1 - s0)) cpu_ns_total=$s1 rss_kb=$rss additions=$(grep -c bytes_read "$log")"
rm -f "$log"
