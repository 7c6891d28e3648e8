#!/usr/bin/env bash
# HTTP benchmark of qrng-bridge against nginx serving a static file of the same size, same run.
#
#   bridge/bench/http.sh            # from the workspace root; needs wrk and nginx (Debian: wrk nginx-light)
#   DURATION=8 ROUNDS=3 CONNS=100 bridge/bench/http.sh
#   CASES="bin" bridge/bench/http.sh   # a subset of: hex bin rss edge tls tlsnew h2 tlsrss
#                                        # (default: hex bin rss edge)
#
# Measures (each bridge figure next to its nginx baseline from the same run):
#   1. 32-byte hex JSON over $CONNS connections: req/s ratio bridge/nginx (target >= 1.3), p99;
#   2. 64 KiB binary over $CONNS connections: ratio (target >= 1.0), p99;
#   3. RssAnon of the bridge idle (target <= 6 MB) and under 1000 connections (target <= 25 MB);
#   4. integers with min=i64::MIN max=i64::MAX under load: no error, server alive, values valid.
# TLS cases (the bridge's --listen https:// and nginx's `listen ssl http2`, the same ECDSA P-256
# certificate, TLS 1.3; each client offers its default suites and both servers follow the client's
# order, so both negotiate the same suite, printed before the runs):
#   tls:    32-byte hex over HTTPS keep-alive, $CONNS connections (target >= 1.3);
#   tlsnew: the same with a new connection (handshake) per request, wrk -H "Connection: close"
#           (target >= 1.0);
#   h2:     32-byte hex over HTTP/2 over TLS, 10 connections x 10 streams, h2load (target >= 1.0);
#   tlsrss: RssAnon of the bridge with 1000 TLS connections open and idle after one request each
#           (target <= 40 MB).
#
# The ring is filled by bridge/examples/bench_feeder.rs, a BENCHMARK FEEDER labelled "simulated"
# (never a source of the product). It runs with --replay: it fills the ring (16 MiB, the driver's
# default size) once with a seeded pseudo-random stream, then keeps re-publishing the bytes already
# in the ring by moving the tail index, so it costs no CPU and the bridge is measured alone, as
# nginx is, serving one static file over and over. Every byte still goes through the ring protocol
# and the dispenser exactly as in production; only its content repeats every 16 MiB. (The feeder
# without --replay copies a fresh block into the ring; at the 2-3 GB/s a 64 KiB round drains, that
# copy took about 20 % of the two CPUs, a cost no card's driver would ever have: a Quantis card
# delivers at most 30 MB/s.)
# Every round also prints CPU microseconds per request (bridge process; nginx master + workers):
# on a shared machine that is steadier than req/s, which swings with other jobs' load.
set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CASES=" ${CASES:-hex bin rss edge} "
want() { [[ $CASES == *" $1 "* ]]; }
CONNS=${CONNS:-100}
THREADS=${THREADS:-2}
BRIDGE_PORT=${BRIDGE_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
BRIDGE_TLS_PORT=${BRIDGE_TLS_PORT:-18443}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-18444}
tls_wanted() { want tls || want tlsnew || want h2 || want tlsrss; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /dev/shm/qrng-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as www-data
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk missing (apt-get install wrk)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx missing (apt-get install nginx-light)" >&2; exit 2; }

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "# building (release)" >&2
(cd "$ROOT" && cargo build --release -q -p qrng-bridge --bin qrng-bridge --example bench_feeder)

"$TARGET/release/examples/bench_feeder" --ring "$WORK/qrng0.ring" --capacity $((16 << 20)) --seed 1 --replay &
FEEDER_PID=$!
pids+=($FEEDER_PID)
for _ in $(seq 100); do [ -e "$WORK/qrng0.ring" ] && break; sleep 0.05; done

# One certificate for both servers' TLS cases.
TLS_ARGS=()
if tls_wanted; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    chmod 644 "$WORK/key.pem"   # nginx workers read it as www-data (a throwaway benchmark key)
    TLS_ARGS=(--listen "https://127.0.0.1:$BRIDGE_TLS_PORT" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
fi

# Every wrk connection comes from 127.0.0.1: the per-client connection cap (64 by default) is
# lifted above the 1000 connections of the RssAnon case; every other limit stays at its default.
QRNG_HTTP_MAX_CONNECTIONS_PER_CLIENT=2000 \
"$TARGET/release/qrng-bridge" --ring "$WORK/qrng0.ring" --listen "http://127.0.0.1:$BRIDGE_PORT" --no-fuse \
    "${TLS_ARGS[@]}" --log-format json 2>"$WORK/bridge.log" &
BRIDGE_PID=$!
pids+=($BRIDGE_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BRIDGE_PORT/health" >/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$BRIDGE_PORT/health" >/dev/null || { echo "bridge not healthy" >&2; cat "$WORK/bridge.log" >&2; exit 1; }

rss_anon() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }   # kB
IDLE_RSS=$(rss_anon "$BRIDGE_PID")

# Static files of exactly the bridge's response sizes.
mkdir -p "$WORK/www"
curl -sf "http://127.0.0.1:$BRIDGE_PORT/api/v1/random/bytes?length=32" >"$WORK/www/hex32.json"
head -c 65536 /dev/urandom >"$WORK/www/bin64k"
HEX_SIZE=$(stat -c %s "$WORK/www/hex32.json")
TLS_SERVER=""
if tls_wanted; then
    TLS_SERVER="server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        http2_max_concurrent_streams 1000;
        root $WORK/www;
        location / { add_header Cache-Control no-store; }
    }"
fi
cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    types { application/json json; application/octet-stream bin; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        location / { add_header Cache-Control no-store; }
    }
$TLS_SERVER
}
NGINX
"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" &
NGINX_PID=$!
pids+=($NGINX_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/hex32.json" >/dev/null && break; sleep 0.05; done

# wrk: prints "Requests/sec: N" and with --latency " 99%  X"; normalise X to ms.
run_wrk() { wrk -t"$THREADS" -c"$2" -d"${DURATION}s" --latency "${WRK_ARGS[@]}" "$1" 2>&1; }
WRK_ARGS=()
rps() { awk '/^Requests\/sec:/ {print $2}'; }
p99() {
    awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v = v / 1000; else if (u == "s") v = v * 1000; printf "%.2f\n", v }'
}
non2xx() { awk '/Non-2xx or 3xx responses:/ {print $5}' | grep . || echo 0; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, clock ticks
# nginx: master plus workers (its worker processes are the master's children).
nginx_ticks() { for p in $NGINX_PID $(pgrep -P "$NGINX_PID"); do cpu_ticks "$p"; done | awk '{s += $1} END {print s}'; }
# CPU microseconds per request: (ticks1 - ticks0) / requests. Less load-sensitive than req/s on a
# shared machine (it does not count time the server spent waiting for a CPU).
us_per_req() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b - a) * 1e6 / hz / n}'; }
nreq() { awk '/requests in/ {print $1}'; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# Alternates bridge and nginx $ROUNDS times (the machine is shared: alternation spreads the noise
# over both), prints every round and the medians.
bench_pair() { # name bridge_url nginx_url conns
    local r b n brps nrps ratios="" f0 f1
    f0=$(cpu_ticks "$FEEDER_PID")
    for r in $(seq "$ROUNDS"); do
        local bt0 bt1 nt0 nt1 bcpu ncpu
        bt0=$(cpu_ticks "$BRIDGE_PID"); b=$(run_wrk "$2" "$4"); bt1=$(cpu_ticks "$BRIDGE_PID")
        nt0=$(nginx_ticks); n=$(run_wrk "$3" "$4"); nt1=$(nginx_ticks)
        brps=$(echo "$b" | rps); nrps=$(echo "$n" | rps)
        bcpu=$(us_per_req "$bt0" "$bt1" "$(echo "$b" | nreq)"); ncpu=$(us_per_req "$nt0" "$nt1" "$(echo "$n" | nreq)")
        printf '  %-26s round %d: bridge %8.0f req/s p99 %7s ms %5s us CPU/req non-2xx %s | nginx %8.0f req/s p99 %7s ms %5s us CPU/req | ratio %.2f | load %s\n' \
            "$1" "$r" "$brps" "$(echo "$b" | p99)" "$bcpu" "$(echo "$b" | non2xx)" "$nrps" "$(echo "$n" | p99)" "$ncpu" \
            "$(awk -v a="$brps" -v b="$nrps" 'BEGIN {print a / b}')" "$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "$bcpu" >>"$WORK/$5.bcpu"; echo "$ncpu" >>"$WORK/$5.ncpu"
        echo "$brps $nrps" >>"$WORK/$5.rounds"
        echo "$b" | p99 >>"$WORK/$5.bp99"; echo "$n" | p99 >>"$WORK/$5.np99"
    done
    f1=$(cpu_ticks "$FEEDER_PID")
    printf '%-28s median bridge %8.0f req/s (p99 %s ms, %s us CPU/req) | nginx %8.0f req/s (p99 %s ms, %s us CPU/req) | median ratio %.2f | feeder CPU %.1f s\n' \
        "$1" "$(cut -d' ' -f1 "$WORK/$5.rounds" | median)" "$(median <"$WORK/$5.bp99")" "$(median <"$WORK/$5.bcpu")" \
        "$(cut -d' ' -f2 "$WORK/$5.rounds" | median)" "$(median <"$WORK/$5.np99")" "$(median <"$WORK/$5.ncpu")" \
        "$(awk '{print $1 / $2}' "$WORK/$5.rounds" | median)" \
        "$(awk -v a="$f0" -v b="$f1" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz}')"
}

echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), ${DURATION}s per run, wrk -t$THREADS"
echo "# hex JSON response $HEX_SIZE bytes; nginx serves a file of the same size"
want hex && bench_pair "32 B hex, $CONNS conns" "http://127.0.0.1:$BRIDGE_PORT/api/v1/random/bytes?length=32" \
    "http://127.0.0.1:$NGINX_PORT/hex32.json" "$CONNS" hex
want bin && bench_pair "64 KiB binary, $CONNS conns" \
    "http://127.0.0.1:$BRIDGE_PORT/api/v1/random/bytes?length=65536&format=binary" \
    "http://127.0.0.1:$NGINX_PORT/bin64k" "$CONNS" bin

if tls_wanted; then
    for port in "$BRIDGE_TLS_PORT" "$NGINX_TLS_PORT"; do
        printf '# TLS on port %s: %s\n' "$port" "$(openssl s_client -connect "127.0.0.1:$port" -servername localhost \
            </dev/null 2>/dev/null | grep -E '^(New|    Cipher)' | head -1)"
    done
fi
B_TLS="https://127.0.0.1:$BRIDGE_TLS_PORT/api/v1/random/bytes?length=32"
N_TLS="https://127.0.0.1:$NGINX_TLS_PORT/hex32.json"
want tls && bench_pair "HTTPS 32 B hex, $CONNS conns" "$B_TLS" "$N_TLS" "$CONNS" tls
if want tlsnew; then
    WRK_ARGS=(-H "Connection: close")
    bench_pair "HTTPS new conn/req, $CONNS conns" "$B_TLS" "$N_TLS" "$CONNS" tlsnew
    WRK_ARGS=()
fi
# h2load: "finished in Xs, N req/s, ..."; alternated like bench_pair.
if want h2; then
    for r in $(seq "$ROUNDS"); do
        b=$(h2load -c10 -m10 -t"$THREADS" -D"$DURATION" "$B_TLS" 2>&1)
        n=$(h2load -c10 -m10 -t"$THREADS" -D"$DURATION" "$N_TLS" 2>&1)
        brps=$(echo "$b" | awk '/^finished in/ {print $4}'); nrps=$(echo "$n" | awk '/^finished in/ {print $4}')
        printf '  %-26s round %d: bridge %8.0f req/s (%s) | nginx %8.0f req/s (%s) | ratio %.2f | load %s\n' \
            "h2 TLS 10x10 streams" "$r" "$brps" "$(echo "$b" | awk '/^status codes/ {print $3, $4}')" \
            "$nrps" "$(echo "$n" | awk '/^status codes/ {print $3, $4}')" \
            "$(awk -v a="$brps" -v b="$nrps" 'BEGIN {print a / b}')" "$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "$brps $nrps" >>"$WORK/h2.rounds"
    done
    printf '%-28s median bridge %8.0f req/s | nginx %8.0f req/s | median ratio %.2f\n' "h2 TLS 10x10 streams" \
        "$(cut -d' ' -f1 "$WORK/h2.rounds" | median)" "$(cut -d' ' -f2 "$WORK/h2.rounds" | median)" \
        "$(awk '{print $1 / $2}' "$WORK/h2.rounds" | median)"
fi
# RssAnon with 1000 idle TLS connections: each made, one request answered on it, then held.
if want tlsrss; then
    before=$(rss_anon "$BRIDGE_PID")
    python3 - "$BRIDGE_TLS_PORT" "$BRIDGE_PID" >"$WORK/tlsrss.txt" <<'PY'
import socket, ssl, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
held = []
for _ in range(1000):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(b"GET /api/v1/random/bytes?length=32 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"}" not in got:
        got += s.recv(4096)
    held.append(s)
time.sleep(1)
rss = int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("RssAnon:")][0])
print(len(held), rss)
PY
    read -r n peak <"$WORK/tlsrss.txt"
    printf 'RssAnon with %s idle TLS connections %.1f MB (target <= 40; %.1f MB before)\n' "$n" \
        "$(awk -v k="$peak" 'BEGIN {print k / 1024}')" "$(awk -v k="$before" 'BEGIN {print k / 1024}')"
fi

# RssAnon under 1000 connections: sample every 0.2 s while wrk holds them open.
if want rss; then
    wrk -t"$THREADS" -c1000 -d"${DURATION}s" "http://127.0.0.1:$BRIDGE_PORT/api/v1/random/bytes?length=32" \
        >"$WORK/wrk1000.txt" 2>&1 &
    WRK=$!
    MAX_RSS=0
    while kill -0 "$WRK" 2>/dev/null; do
        r=$(rss_anon "$BRIDGE_PID"); [ "$r" -gt "$MAX_RSS" ] && MAX_RSS=$r; sleep 0.2
    done
    sleep 2
    AFTER_RSS=$(rss_anon "$BRIDGE_PID")
    printf 'RssAnon idle %.1f MB (target <= 6), peak under 1000 conns %.1f MB (target <= 25), idle again %.1f MB; 1000-conn run %s req/s\n' \
        "$(awk -v k="$IDLE_RSS" 'BEGIN {print k / 1024}')" "$(awk -v k="$MAX_RSS" 'BEGIN {print k / 1024}')" \
        "$(awk -v k="$AFTER_RSS" 'BEGIN {print k / 1024}')" "$(rps <"$WORK/wrk1000.txt")"
fi

# Edge values under load.
if want edge; then
    EDGE="http://127.0.0.1:$BRIDGE_PORT/api/v1/random/integers?min=-9223372036854775808&max=9223372036854775807&count=100"
    out=$(run_wrk "$EDGE" "$CONNS")
    check=$(curl -s -o "$WORK/edge.json" -w '%{http_code}' "$EDGE")
    # 100 JSON integers of at most 19 digits (|x| < 10^19; the server's range checks are unit-tested).
    valid=$(sed -e 's/.*"data":\[//' -e 's/\].*//' "$WORK/edge.json" | tr ',' '\n' |
        awk '/^-?[0-9]+$/ && length($0) <= 20 {n++} END {print (n == 100 && NR == 100) ? "yes" : "no"}')
    printf 'integers i64::MIN..i64::MAX x100 under load: %s req/s, non-2xx %s, afterwards HTTP %s valid=%s, bridge alive=%s\n' \
        "$(echo "$out" | rps)" "$(echo "$out" | non2xx)" "$check" "$valid" "$(kill -0 "$BRIDGE_PID" && echo yes || echo no)"
fi
